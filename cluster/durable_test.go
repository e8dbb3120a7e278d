package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// TestNode_SnapshotSyncsStore: the store is not synced in the commit path
// (nor here in the background), so before Raft may drop the log behind a
// snapshot, the snapshot makes the store durable through the entries it
// covers; afterwards the log starts past entries the store had not synced
// before, and the store's durable index covers them.
func TestNode_SnapshotSyncsStore(t *testing.T) {
	c := newTestCluster(t)
	c.tune = func(cfg *Config) {
		cfg.StoreSyncInterval = -1
		cfg.StoreSyncBytes = -1
		cfg.TrailingLogs = 1
		cfg.SnapshotThreshold = 1 << 40
		cfg.SnapshotInterval = time.Hour
	}
	n := c.add("n1")
	c.leader(10 * time.Second)
	mustCreate(t, n.node, "snap")
	for i := range 20 {
		mustAppend(t, n.node, "snap", storage.Tile{Value: tileValue(t, "snap", i)})
	}
	applied, _ := n.node.fsm.appliedIndex()
	if d := n.store.DurableIndex(); d >= applied {
		t.Fatalf("durable index %d before the snapshot, want below the applied %d (no background sync)", d, applied)
	}
	if err := n.node.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	first, err := n.node.wal.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	if d := n.store.DurableIndex(); d < applied || first > d+1 {
		t.Fatalf("after the snapshot: durable index %d, applied %d, the log starts at %d", d, applied, first)
	}

	// A restart replays from the durable index and the log is whole.
	c.stop(n)
	c.restart(n)
	c.leader(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.node.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "20 tiles after the restart", func() bool {
		info, err := n.node.Volume("snap")
		return err == nil && info.NextOffset == 20
	})
}
