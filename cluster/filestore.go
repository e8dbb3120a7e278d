package cluster

import (
	"context"

	"github.com/xcheng85/go-ldm/storage"
)

// FileStore adapts the file store to Store. Its snapshots hold duplicated
// file handles and the active blocks' lengths; they copy nothing into
// memory. The FSM's appends do not wait for the disk
// (storage.Store.AppendDeferred): the Raft log is the durable copy until
// the node's background Sync, whose index (DurableIndex) is where a
// restart replays the log from.
func FileStore(s *storage.Store) Store { return fileStore{s} }

type fileStore struct{ *storage.Store }

// Append implements Store: the tiles are durable at the next Sync.
func (f fileStore) Append(ctx context.Context, name string, tiles ...storage.Tile) (uint64, error) {
	return f.AppendDeferred(ctx, name, tiles...)
}

// Capture implements Store.
func (f fileStore) Capture() (StoreSnapshot, error) {
	sn, err := f.Snapshot()
	if err != nil {
		return nil, err
	}
	return sn, nil
}
