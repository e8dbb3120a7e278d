package cluster

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

func TestNode_ThreeNodesReplicate(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	n2 := c.add("n2")
	n3 := c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")

	// A write on any node (followers forward) reads back everywhere with
	// the same offset and bytes.
	mustCreate(t, n2.node, "vol")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := map[uint64][]byte{}
	for i, n := range []*testNode{n1, n2, n3, n3, n2, n1} {
		v := tileValue(t, "tile-", i, "-via-", n.id)
		off := mustAppend(t, n.node, "vol", storage.Tile{Value: v, HasKey: true, Key: storage.BrickKey{X: uint32(i)}})
		if _, dup := want[off]; dup {
			t.Fatalf("offset %d assigned twice", off)
		}
		want[off] = v
	}
	// A batch keeps its tiles contiguous, also when forwarded.
	var batch []storage.Tile
	for i := range 3 {
		batch = append(batch, storage.Tile{Value: tileValue(t, "batch-", i)})
	}
	follower := n2
	if n2.node.IsLeader() {
		follower = n3
	}
	first := mustAppend(t, follower.node, "vol", batch...)
	for i, tile := range batch {
		want[first+uint64(i)] = tile.Value
	}

	c.converge(20 * time.Second)
	for _, n := range []*testNode{n1, n2, n3} {
		info, err := n.node.Volume("vol")
		if err != nil {
			t.Fatalf("%s: volume: %v", n.id, err)
		}
		if info.NextOffset != uint64(len(want)) {
			t.Fatalf("%s: next offset %d, want %d", n.id, info.NextOffset, len(want))
		}
		for off, v := range want {
			got, err := n.node.Read("vol", off)
			if err != nil {
				t.Fatalf("%s: read %d: %v", n.id, off, err)
			}
			if !bytes.Equal(got.Value, v) {
				t.Fatalf("%s: offset %d holds %q, want %q", n.id, off, got.Value, v)
			}
		}
	}

	// Errors keep their sentinel across forwarding.
	if _, err := follower.node.Append(ctx, "missing", storage.Tile{Value: []byte("x")}); !errorsIs(err, storage.ErrNotFound) {
		t.Fatalf("append to a missing volume via follower: %v, want ErrNotFound", err)
	}
	if _, err := follower.node.CreateVolume(ctx, storage.VolumeMeta{Name: "vol", Shape: storage.Shape{X: 1, Y: 1, Z: 1}, DataType: storage.Uint8}); !errorsIs(err, storage.ErrExists) {
		t.Fatalf("create an existing volume via follower: %v, want ErrExists", err)
	}
	if err := follower.node.DeleteVolume(ctx, "vol"); err != nil {
		t.Fatalf("delete via follower: %v", err)
	}
	c.converge(20 * time.Second)
	for _, n := range []*testNode{n1, n2, n3} {
		if _, err := n.node.Volume("vol"); !errorsIs(err, storage.ErrNotFound) {
			t.Fatalf("%s: volume after delete: %v", n.id, err)
		}
	}

	// GetServers data: three voters, one leader.
	servers, err := n3.node.Servers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, s := range servers {
		if s.IsLeader {
			leaders++
		}
		if !s.Voter || s.RpcAddr == "" || s.Status != "alive" {
			t.Errorf("server %v", s)
		}
	}
	if len(servers) != 3 || leaders != 1 {
		t.Fatalf("servers %v", servers)
	}
}

// TestNode_CloseEndsPendingWrites closes a leader while many writers
// without deadlines wait in Append: every call returns, none hangs on a
// Raft future that Raft abandoned at shutdown.
func TestNode_CloseEndsPendingWrites(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	mustCreate(t, n1.node, "vol")
	node := n1.node
	const writers = 128
	var wg sync.WaitGroup
	var acked atomic.Int64
	for w := range writers {
		wg.Go(func() {
			for i := 0; ; i++ {
				if _, err := node.Append(context.Background(), "vol", storage.Tile{Value: tileValue(t, w, "-", i)}); err != nil {
					return
				}
				acked.Add(1)
			}
		})
	}
	testutil.WaitFor(t, 20*time.Second, "some acknowledged writes", func() bool { return acked.Load() >= writers })
	c.stop(n1)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Append calls still blocked 20s after Close")
	}
}
