package cluster

import (
	"context"
	"encoding/gob"
	"fmt"
	"io"
	"sync"

	"github.com/xcheng85/go-ldm/storage"
)

// MemoryStore is a Store kept in memory (a storage.Memory plus the applied
// index). It is for tests and demos: nothing survives the process, so a
// restarted node rebuilds it from the Raft snapshot and log. Its snapshots
// copy the data, which is fine at the sizes it is meant for.
type MemoryStore struct {
	mu      sync.RWMutex
	mem     *storage.Memory
	applied uint64
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{mem: storage.NewMemory(0)} }

func (m *MemoryStore) inner() *storage.Memory {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.mem
}

func (m *MemoryStore) noteIndex(idx uint64) {
	m.mu.Lock()
	if idx > m.applied {
		m.applied = idx
	}
	m.mu.Unlock()
}

// CreateVolume implements storage.LDM.
func (m *MemoryStore) CreateVolume(ctx context.Context, meta storage.VolumeMeta) (storage.VolumeInfo, error) {
	info, err := m.inner().CreateVolume(ctx, meta)
	if err == nil {
		m.noteIndex(meta.Index)
	}
	return info, err
}

// Volume implements storage.LDM.
func (m *MemoryStore) Volume(name string) (storage.VolumeInfo, error) { return m.inner().Volume(name) }

// Volumes implements storage.LDM.
func (m *MemoryStore) Volumes() ([]storage.VolumeInfo, error) { return m.inner().Volumes() }

// DeleteVolume implements storage.LDM.
func (m *MemoryStore) DeleteVolume(ctx context.Context, name string) error {
	return m.inner().DeleteVolume(ctx, name)
}

// Append implements storage.LDM.
func (m *MemoryStore) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	first, err := m.inner().Append(ctx, volume, tiles...)
	if err == nil {
		for _, t := range tiles {
			m.noteIndex(t.Index)
		}
	}
	return first, err
}

// Read implements storage.LDM.
func (m *MemoryStore) Read(volume string, offset uint64) (storage.Tile, error) {
	return m.inner().Read(volume, offset)
}

// Brick implements storage.LDM.
func (m *MemoryStore) Brick(volume string, key storage.BrickKey) (storage.Tile, error) {
	return m.inner().Brick(volume, key)
}

// Bricks implements storage.LDM.
func (m *MemoryStore) Bricks(volume string, lod uint32) (map[storage.BrickKey]uint64, error) {
	return m.inner().Bricks(volume, lod)
}

// Wait implements storage.LDM.
func (m *MemoryStore) Wait(ctx context.Context, volume string, offset uint64) error {
	return m.inner().Wait(ctx, volume, offset)
}

// Close implements storage.LDM.
func (m *MemoryStore) Close() error { return m.inner().Close() }

// AppliedIndex implements Store.
func (m *MemoryStore) AppliedIndex() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.applied
}

// DurableIndex implements Store: what a MemoryStore holds lasts as long as
// the process, so everything applied counts.
func (m *MemoryStore) DurableIndex() uint64 { return m.AppliedIndex() }

// Sync implements Store; there is nothing to write.
func (m *MemoryStore) Sync(idx uint64) error {
	m.noteIndex(idx)
	return nil
}

// SetAppliedIndex implements Store.
func (m *MemoryStore) SetAppliedIndex(idx uint64) error {
	m.noteIndex(idx)
	return nil
}

type memSnapVolume struct {
	Meta  storage.VolumeMeta
	Tiles []storage.Tile
}

type memSnapshot struct {
	Applied uint64
	Volumes []memSnapVolume
}

// Capture implements Store. It copies every tile.
func (m *MemoryStore) Capture() (StoreSnapshot, error) {
	mem := m.inner()
	vols, err := mem.Volumes()
	if err != nil {
		return nil, err
	}
	s := &memSnapshot{Applied: m.AppliedIndex()}
	for _, v := range vols {
		sv := memSnapVolume{Meta: v.VolumeMeta}
		for off := uint64(0); off < v.NextOffset; off++ {
			t, err := mem.Read(v.Name, off)
			if err != nil {
				return nil, fmt.Errorf("capture %s@%d: %w", v.Name, off, err)
			}
			sv.Tiles = append(sv.Tiles, t)
		}
		s.Volumes = append(s.Volumes, sv)
	}
	return s, nil
}

// WriteTo implements StoreSnapshot.
func (s *memSnapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	err := gob.NewEncoder(cw).Encode(s)
	return cw.n, err
}

// Release implements StoreSnapshot.
func (s *memSnapshot) Release() {}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore implements Store. Waiters on the old content wake with
// storage.ErrClosed.
func (m *MemoryStore) Restore(r io.Reader) error {
	var s memSnapshot
	if err := gob.NewDecoder(r).Decode(&s); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	mem := storage.NewMemory(0)
	ctx := context.Background()
	for _, v := range s.Volumes {
		if _, err := mem.CreateVolume(ctx, v.Meta); err != nil {
			return err
		}
		if len(v.Tiles) > 0 {
			if _, err := mem.Append(ctx, v.Meta.Name, v.Tiles...); err != nil {
				return err
			}
		}
	}
	m.mu.Lock()
	old := m.mem
	m.mem = mem
	m.applied = s.Applied
	m.mu.Unlock()
	old.Close()
	return nil
}
