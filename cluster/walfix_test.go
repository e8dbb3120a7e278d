package cluster

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// TestSealedTailFiler_Restart reproduces hashicorp/raft-wal#31: truncate the tail,
// append again, reopen, read every entry.
func TestSealedTailFiler_Restart(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fixed=%v", fixed), func(t *testing.T) {
			dir := t.TempDir()
			open := func() (*raftwal.WAL, *metadb.BoltMetaDB) {
				meta := &metadb.BoltMetaDB{}
				var w *raftwal.WAL
				var err error
				if fixed {
					w, err = raftwal.Open(dir, raftwal.WithMetaStore(meta), raftwal.WithSegmentFiler(newSealedTailFiler(dir)))
				} else {
					w, err = raftwal.Open(dir, raftwal.WithMetaStore(meta))
				}
				if err != nil {
					t.Fatal(err)
				}
				return w, meta
			}
			entry := func(i uint64, gen string) *raft.Log {
				return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "%s-%d", gen, i)}
			}
			w, meta := open()
			var logs []*raft.Log
			for i := uint64(1); i <= 10; i++ {
				logs = append(logs, entry(i, "old"))
			}
			if err := w.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			if err := w.DeleteRange(8, 10); err != nil {
				t.Fatal(err)
			}
			logs = nil
			for i := uint64(8); i <= 12; i++ {
				logs = append(logs, entry(i, "new"))
			}
			if err := w.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			w.Close()
			meta.Close()

			w, meta = open()
			defer meta.Close()
			defer w.Close()
			var readErr error
			for i := uint64(1); i <= 12; i++ {
				var l raft.Log
				if err := w.GetLog(i, &l); err != nil {
					readErr = fmt.Errorf("get log %d: %w", i, err)
					break
				}
				want := "old"
				if i >= 8 {
					want = "new"
				}
				if got, w := string(l.Data), fmt.Sprintf("%s-%d", want, i); got != w {
					t.Fatalf("log %d holds %q, want %q", i, got, w)
				}
			}
			if fixed && readErr != nil {
				t.Fatal(readErr)
			}
			if !fixed && readErr == nil {
				t.Fatal("raft-wal read the truncated segment without the workaround: drop sealedTailFiler")
			}
		})
	}
}
