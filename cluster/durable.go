package cluster

import "time"

// Defaults of the store's background sync (Config.StoreSyncInterval and
// Config.StoreSyncBytes).
const (
	DefaultStoreSyncInterval = time.Second
	DefaultStoreSyncBytes    = 256 << 20
)

// syncLoop makes the store durable in the background: every
// StoreSyncInterval, and when StoreSyncBytes of tile values were applied
// since the last sync. A write is acknowledged once a majority's Raft logs
// hold it; the store only bounds how much of the log a restart replays.
// A failed sync is logged once and the store's durable index stops (the
// store keeps the failure), so a restart replays from the last good one.
func (n *Node) syncLoop() {
	defer n.wg.Done()
	var tick <-chan time.Time
	if n.cfg.StoreSyncInterval > 0 {
		t := time.NewTicker(n.cfg.StoreSyncInterval)
		defer t.Stop()
		tick = t.C
	}
	failed := false
	for {
		select {
		case <-n.shutdown:
			return
		case <-tick:
		case <-n.fsm.syncNow:
		}
		if err := n.fsm.syncStore(); err != nil && !failed {
			failed = true
			n.log.Error("cannot make the store durable; a restart replays the Raft log from the last durable index", "error", err)
		}
	}
}

// finalSync makes the store durable before it closes, so a clean restart
// replays nothing. Raft has stopped: nothing is applied concurrently.
func (n *Node) finalSync() {
	if err := n.fsm.syncStore(); err != nil {
		n.log.Warn("cannot make the store durable at close; the next start replays the Raft log", "error", err)
	}
}
