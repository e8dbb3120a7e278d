package cluster

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// TestNode_ReadIndex checks linearizable reads on the leader by read-index:
// a read sees every acknowledged write, only the first read of a term adds
// a log entry (its barrier), a follower's read ends without further writes
// (the barrier and the term's no-op are entries its FSM never sees), and
// reads keep working under the next leader.
func TestNode_ReadIndex(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	c.add("n1")
	c.leader(10 * time.Second)
	c.add("n2")
	c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	l := c.leader(10 * time.Second)
	if err := l.node.ReadBarrier(ctx); err != nil {
		t.Fatalf("first read of the term: %v", err)
	}
	last := l.node.Raft().LastIndex()
	for range 20 {
		if err := l.node.ReadBarrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.node.Raft().LastIndex(); got != last {
		t.Fatalf("20 read-index reads moved the log from %d to %d", last, got)
	}
	for _, n := range c.running() {
		if n != l {
			if err := n.node.ReadBarrier(ctx); err != nil {
				t.Fatalf("%s: follower read with no write since the term barrier: %v", n.id, err)
			}
		}
	}

	mustCreate(t, l.node, "v")
	check := func(leader *testNode, i int) {
		t.Helper()
		v := tileValue(t, "tile-", i)
		off := mustAppend(t, leader.node, "v", storage.Tile{Value: v})
		for _, n := range c.running() {
			if err := n.node.ReadBarrier(ctx); err != nil {
				t.Fatalf("%s: ReadBarrier after write %d: %v", n.id, i, err)
			}
			if got, err := n.node.Read("v", off); err != nil || !bytes.Equal(got.Value, v) {
				t.Fatalf("%s: read of acknowledged write %d at %d: %q, %v", n.id, i, off, got.Value, err)
			}
		}
	}
	for i := range 5 {
		check(l, i)
	}

	// A new leader (a new term) commits its own barrier and reads on.
	if _, err := l.node.TransferLeader(ctx, ""); err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	var next *testNode
	testutil.WaitFor(t, 15*time.Second, "a new leader", func() bool {
		next = c.leader(10 * time.Second)
		return next != l
	})
	for i := 5; i < 10; i++ {
		check(next, i)
	}
}
