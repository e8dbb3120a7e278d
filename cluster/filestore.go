package cluster

import "github.com/xcheng85/go-ldm/storage"

// FileStore adapts the file store to Store. Its snapshots hold duplicated
// file handles and the active blocks' lengths; they copy nothing into
// memory.
func FileStore(s *storage.Store) Store { return fileStore{s} }

type fileStore struct{ *storage.Store }

// Capture implements Store.
func (f fileStore) Capture() (StoreSnapshot, error) {
	sn, err := f.Snapshot()
	if err != nil {
		return nil, err
	}
	return sn, nil
}
