package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// TestNode_ThreeNodesReplicate_codec creates a zstd volume through a
// follower and checks that every node holds its codec; a create command from before codecs decodes as raw.
func TestNode_ThreeNodesReplicate_codec(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	n2 := c.add("n2")
	n3 := c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	follower := n2
	if n2.node.IsLeader() {
		follower = n3
	}
	// A zstd volume is created only once every node announces zstd in
	// gossip (the codec gate): wait until each node's gossip shows all three.
	for _, n := range []*testNode{n1, n2, n3} {
		for _, id := range []string{"n1", "n2", "n3"} {
			testutil.WaitFor(t, 15*time.Second, n.id+"'s gossip to show "+id+" announcing zstd", func() bool {
				return gossipSupports(n.node, id, storage.CodecZstd)
			})
		}
	}
	want := storage.Codec{Kind: storage.CodecZstd, Level: 12}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		_, err := follower.node.CreateVolume(ctx, storage.VolumeMeta{Name: "z", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint16, Codec: want})
		if err == nil || (attempt > 0 && errors.Is(err, storage.ErrExists)) {
			break
		}
		if !errors.Is(err, storage.ErrNotLeader) || attempt == 10 {
			t.Fatalf("create volume z: %v", err)
		}
	}
	mustCreate(t, n1.node, "r")
	c.converge(20 * time.Second)
	check := func(n *testNode) {
		t.Helper()
		if v, err := n.node.Volume("z"); err != nil || v.Codec != want {
			t.Fatalf("%s: volume z codec %+v, %v; want %+v", n.id, v.Codec, err, want)
		}
		if v, err := n.node.Volume("r"); err != nil || v.Codec != (storage.Codec{}) {
			t.Fatalf("%s: volume r codec %+v, %v; want raw", n.id, v.Codec, err)
		}
	}
	for _, n := range []*testNode{n1, n2, n3} {
		check(n)
	}

	// A create command written before codecs existed has no Codec field.
	old := append([]byte{byte(cmdCreateVolume)}, `{"Name":"old","Shape":{"X":8,"Y":8,"Z":8},"DataType":2}`...)
	cmd, err := decodeCommand(old)
	if err != nil || cmd.meta.Codec != (storage.Codec{}) {
		t.Fatalf("old create command: codec %+v, %v; want raw", cmd.meta.Codec, err)
	}
}
