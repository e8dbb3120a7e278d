package cluster

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// gossipSupports reports whether n's gossip shows node id announcing
// codec k.
func gossipSupports(n *Node, id string, k storage.CodecKind) bool {
	for _, m := range nodeMembers(n.serf.Members()) {
		if memberNodeID(m) == id {
			return memberSupports(m, k)
		}
	}
	return false
}

// TestNode_CreateVolume_zstd_needs_every_node: in a rolling upgrade, a
// zstd volume cannot be created while a node does not announce the zstd
// codec (n3 here, configured as a version from before codecs); raw
// volumes can. Once n3 restarts announcing it, the zstd volume is created
// and every node holds its codec.
func TestNode_CreateVolume_zstd_needs_every_node(t *testing.T) {
	c := newTestCluster(t)
	var n3Old atomic.Bool
	n3Old.Store(true)
	c.tune = func(cfg *Config) {
		if cfg.NodeID == "n3" && n3Old.Load() {
			cfg.advertiseCodecs = []storage.CodecKind{storage.CodecRaw}
		}
	}
	n1, n2, n3 := startThree(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	zstd := storage.VolumeMeta{Name: "z", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint16,
		Codec: storage.Codec{Kind: storage.CodecZstd, Level: 1}}

	for _, n := range []*testNode{n1, n2} {
		testutil.WaitFor(t, 10*time.Second, n.id+"'s gossip to show n3 announcing raw only", func() bool {
			return gossipSupports(n.node, "n3", storage.CodecRaw) && !gossipSupports(n.node, "n3", storage.CodecZstd)
		})
		_, err := n.node.CreateVolume(ctx, zstd)
		var ce *CodecUnsupportedError
		if !errors.As(err, &ce) {
			t.Fatalf("create a zstd volume through %s with n3 not announcing zstd: %v; want a CodecUnsupportedError", n.id, err)
		}
		if len(ce.Nodes) != 1 || ce.Nodes[0] != "n3" || ce.Codec != storage.CodecZstd {
			t.Fatalf("through %s: %+v; want n3 named", n.id, ce)
		}
		for _, want := range []string{"n3", "upgrade every node", "zstd"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("through %s: %q does not say %q", n.id, err, want)
			}
		}
		if _, err := n.node.Volume("z"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s: volume z after the refused create: %v", n.id, err)
		}
	}
	mustCreate(t, n1.node, "r") // raw volumes need nothing of anyone
	// A taken name is AlreadyExists whatever codec the create asks for (how
	// a resumed import finds its volume), not refused by the codec gate.
	taken := zstd
	taken.Name = "r"
	for _, n := range []*testNode{n1, n2} {
		testutil.WaitFor(t, 10*time.Second, n.id+" to apply volume r", func() bool {
			_, err := n.node.Volume("r")
			return err == nil
		})
		if _, err := n.node.CreateVolume(ctx, taken); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("create the existing volume r as zstd through %s: %v; want ErrExists", n.id, err)
		}
	}

	// n3 is upgraded: it restarts announcing zstd.
	c.stop(n3)
	n3Old.Store(false)
	c.restart(n3)
	for _, n := range []*testNode{n1, n2} {
		testutil.WaitFor(t, 20*time.Second, n.id+"'s gossip to show n3 announcing zstd", func() bool {
			return gossipSupports(n.node, "n3", storage.CodecZstd)
		})
	}
	c.leader(15 * time.Second)
	follower := n2
	if n2.node.IsLeader() {
		follower = n1
	}
	for attempt := 0; ; attempt++ {
		_, err := follower.node.CreateVolume(ctx, zstd)
		if err == nil || (attempt > 0 && errors.Is(err, storage.ErrExists)) {
			break
		}
		if !errors.Is(err, storage.ErrNotLeader) || attempt == 10 {
			t.Fatalf("create the zstd volume through %s after n3's upgrade: %v", follower.id, err)
		}
	}
	c.converge(20 * time.Second)
	for _, n := range []*testNode{n1, n2, n3} {
		if v, err := n.node.Volume("z"); err != nil || v.Codec != zstd.Codec {
			t.Fatalf("%s: volume z codec %+v, %v; want %+v", n.id, v.Codec, err, zstd.Codec)
		}
	}
}

// TestNode_CreateVolume_zstd_needs_gossip: a server of the Raft
// configuration that gossip does not know counts as not announcing zstd; a
// single node needs no one.
func TestNode_CreateVolume_zstd_needs_gossip(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zstd := storage.VolumeMeta{Name: "z", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8,
		Codec: storage.Codec{Kind: storage.CodecZstd}}
	if _, err := n1.node.CreateVolume(ctx, zstd); err != nil {
		t.Fatalf("create a zstd volume on a one-node cluster: %v", err)
	}
	// A server added through Raft only (a non-voter, so that the one voter
	// keeps its quorum), at an address where nothing runs.
	if err := n1.node.Raft().AddNonvoter("ghost", "127.0.0.1:1", 0, 10*time.Second).Error(); err != nil {
		t.Fatalf("add non-voter: %v", err)
	}
	zstd.Name = "z2"
	_, err := n1.node.CreateVolume(ctx, zstd)
	var ce *CodecUnsupportedError
	if !errors.As(err, &ce) || len(ce.Nodes) != 1 || !strings.HasPrefix(ce.Nodes[0], "ghost") || !strings.Contains(err.Error(), "not known to gossip") {
		t.Fatalf("create with a server gossip does not know: %v; want a CodecUnsupportedError naming ghost", err)
	}
}
