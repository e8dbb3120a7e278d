package cluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
)

func appendIDs(t *testing.T, n *Node, volume string, tiles []storage.Tile, ids ...string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	offs, err := n.AppendIdempotent(ctx, volume, tiles, ids)
	if err != nil {
		t.Fatalf("AppendIdempotent on %s: %v", n.ID(), err)
	}
	return offs
}

func tiles(values ...string) []storage.Tile {
	out := make([]storage.Tile, len(values))
	for i, v := range values {
		out[i] = storage.Tile{Value: []byte(v)}
	}
	return out
}

func nextOffset(t *testing.T, n *Node, volume string) uint64 {
	t.Helper()
	info, err := n.Volume(volume)
	if err != nil {
		t.Fatal(err)
	}
	return info.NextOffset
}

// TestNode_AppendIdempotent: a tile whose request id was applied is not
// stored again and answers its original offset, also within one command,
// in a batch with new tiles, and after a restart (from the log and from a
// snapshot); deleting the volume forgets its ids.
func TestNode_AppendIdempotent(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	mustCreate(t, n1.node, "vol")

	t.Run("same_id_twice", func(t *testing.T) {
		a := appendIDs(t, n1.node, "vol", tiles("a"), "id-a")
		b := appendIDs(t, n1.node, "vol", tiles("a"), "id-a")
		if !slices.Equal(a, b) || a[0] != 0 {
			t.Fatalf("offsets %v then %v, want [0] twice", a, b)
		}
		if got := nextOffset(t, n1.node, "vol"); got != 1 {
			t.Fatalf("%d tiles stored, want 1", got)
		}
	})
	t.Run("mixed_batch", func(t *testing.T) {
		// new, known, new without id, repeat of the first within the batch
		offs := appendIDs(t, n1.node, "vol", tiles("b", "a", "plain", "b"), "id-b", "id-a", "", "id-b")
		if want := []uint64{1, 0, 2, 1}; !slices.Equal(offs, want) {
			t.Fatalf("offsets %v, want %v", offs, want)
		}
		if got := nextOffset(t, n1.node, "vol"); got != 3 {
			t.Fatalf("%d tiles stored, want 3", got)
		}
		// Plain appends are unchanged.
		if off := mustAppend(t, n1.node, "vol", storage.Tile{Value: []byte("plain 2")}); off != 3 {
			t.Fatalf("plain append at %d, want 3", off)
		}
	})
	t.Run("after_restart", func(t *testing.T) {
		// id-c is applied after a snapshot: the restart replays it; id-a
		// and id-b are in the snapshot.
		if err := n1.node.Raft().Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		c1 := appendIDs(t, n1.node, "vol", tiles("c"), "id-c")
		c.stop(n1)
		c.restart(n1)
		c.leader(10 * time.Second)
		c.converge(10 * time.Second)
		offs := appendIDs(t, n1.node, "vol", tiles("a", "b", "c"), "id-a", "id-b", "id-c")
		if want := []uint64{0, 1, c1[0]}; !slices.Equal(offs, want) {
			t.Fatalf("offsets after restart %v, want %v", offs, want)
		}
		if got := nextOffset(t, n1.node, "vol"); got != c1[0]+1 {
			t.Fatalf("%d tiles stored, want %d", got, c1[0]+1)
		}
	})
	t.Run("delete_forgets", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n1.node.DeleteVolume(ctx, "vol"); err != nil {
			t.Fatal(err)
		}
		mustCreate(t, n1.node, "vol")
		offs := appendIDs(t, n1.node, "vol", tiles("new b", "new a"), "id-b", "id-a")
		if want := []uint64{0, 1}; !slices.Equal(offs, want) {
			t.Fatalf("offsets in the re-created volume %v, want %v", offs, want)
		}
	})
}

// TestNode_AppendIdempotent_leader_change: a write applied through one
// leader and retried with the same request id through a follower after the
// leader died is answered with the original offset and stored once on
// every node, the old leader included once it is back.
func TestNode_AppendIdempotent_leader_change(t *testing.T) {
	c := newTestCluster(t)
	startThree(t, c)
	l := c.leader(10 * time.Second)
	mustCreate(t, l.node, "vol")
	var follower *testNode
	for _, n := range c.running() {
		if n != l {
			follower = n
		}
	}
	first := appendIDs(t, follower.node, "vol", tiles("once", "twice?"), "r1", "r2")
	c.converge(10 * time.Second)
	c.stop(l)
	l2 := c.leader(15 * time.Second)
	var other *testNode
	for _, n := range c.running() {
		if n != l2 {
			other = n
		}
	}
	for _, n := range []*testNode{l2, other} {
		again := appendIDs(t, n.node, "vol", tiles("once", "twice?"), "r1", "r2")
		if !slices.Equal(first, again) {
			t.Fatalf("retry through %s: offsets %v, want %v", n.id, again, first)
		}
	}
	c.restart(l)
	c.converge(15 * time.Second)
	for _, n := range c.running() {
		if got := nextOffset(t, n.node, "vol"); got != 2 {
			t.Fatalf("%s holds %d tiles, want 2", n.id, got)
		}
	}
	sameLogs(t, c, "vol")
}

// TestDedupTable_bounds: the table keeps the most recent ids in insertion
// order, drops a volume's ids, and survives encoding.
func TestDedupTable_bounds(t *testing.T) {
	tb := newDedupTable(3)
	for i := range 5 {
		tb.put("v", fmt.Sprint("id", i), uint64(i))
	}
	for i := range 5 {
		_, ok := tb.get("v", fmt.Sprint("id", i))
		if ok != (i >= 2) {
			t.Fatalf("id%d present: %v", i, ok)
		}
	}
	tb.put("w", "id0", 7)
	tb.dropVolume("v")
	if tb.len() != 1 {
		t.Fatalf("%d ids after dropping v, want 1", tb.len())
	}
	tb.put("v", "x", 1)
	tb.put("v", "y", 2)
	got, err := decodeDedup(tb.encode(), 3)
	if err != nil {
		t.Fatal(err)
	}
	got.put("v", "z", 3) // evicts the oldest: w/id0
	if _, ok := got.get("w", "id0"); ok {
		t.Fatal("decoded table lost the insertion order")
	}
	if off, ok := got.get("v", "y"); !ok || off != 2 {
		t.Fatalf("v/y = %d %v after decoding", off, ok)
	}
	if _, err := decodeDedup(tb.encode()[:5], 3); err == nil {
		t.Fatal("a truncated table decoded")
	}
}
