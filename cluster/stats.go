package cluster

import (
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// Snapshot phases reported to Config.ObserveSnapshot.
const (
	// SnapshotCapture is FSM.Snapshot: capturing the store's state
	// (Raft's FSM goroutine waits for it).
	SnapshotCapture = "capture"
	// SnapshotPersist is FSMSnapshot.Persist: writing the snapshot out.
	SnapshotPersist = "persist"
	// SnapshotRestore is FSM.Restore: replacing the store with a snapshot.
	SnapshotRestore = "restore"
)

// raftFSM returns the FSM Raft runs: the node's, timed for
// Config.ObserveSnapshot when it is set.
func (n *Node) raftFSM() raft.FSM {
	if n.cfg.ObserveSnapshot == nil {
		return n.fsm
	}
	return timedFSM{fsm: n.fsm, observe: n.cfg.ObserveSnapshot}
}

// timedFSM reports how long the snapshot phases of fsm take. It embeds
// *fsm, so Raft still finds ApplyBatch (raft.BatchingFSM).
type timedFSM struct {
	*fsm
	observe func(phase string, d time.Duration, err error)
}

var _ raft.BatchingFSM = timedFSM{}

func (t timedFSM) Snapshot() (raft.FSMSnapshot, error) {
	start := time.Now()
	s, err := t.fsm.Snapshot()
	t.observe(SnapshotCapture, time.Since(start), err)
	if err != nil {
		return nil, err
	}
	return timedSnapshot{FSMSnapshot: s, observe: t.observe}, nil
}

func (t timedFSM) Restore(rc io.ReadCloser) error {
	start := time.Now()
	err := t.fsm.Restore(rc)
	t.observe(SnapshotRestore, time.Since(start), err)
	return err
}

// timedSnapshot reports how long Persist takes.
type timedSnapshot struct {
	raft.FSMSnapshot
	observe func(phase string, d time.Duration, err error)
}

func (s timedSnapshot) Persist(sink raft.SnapshotSink) error {
	start := time.Now()
	err := s.FSMSnapshot.Persist(sink)
	s.observe(SnapshotPersist, time.Since(start), err)
	return err
}
