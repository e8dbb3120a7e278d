package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Memory is an LDM that keeps everything in memory. It is for tests and
// demos: nothing survives Close. The zero value is not usable; call
// NewMemory.
type Memory struct {
	maxTile int

	mu      sync.RWMutex
	closed  bool
	volumes map[string]*memVolume
}

type memVolume struct {
	meta    VolumeMeta
	tiles   []Tile
	size    uint64
	bricks  map[BrickKey]uint64
	changed chan struct{} // closed and replaced on every append and on delete
	deleted bool
}

// NewMemory returns an empty memory store. maxTileBytes <= 0 means
// DefaultMaxTileBytes.
func NewMemory(maxTileBytes int) *Memory {
	if maxTileBytes <= 0 {
		maxTileBytes = DefaultMaxTileBytes
	}
	return &Memory{maxTile: maxTileBytes, volumes: map[string]*memVolume{}}
}

var _ LDM = (*Memory)(nil)

func (m *Memory) volume(name string) (*memVolume, error) {
	if m.closed {
		return nil, ErrClosed
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	v, ok := m.volumes[name]
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	return v, nil
}

// info returns the volume's state. The metadata's slice and map are
// copied so a caller cannot change the stored volume.
func (v *memVolume) info() VolumeInfo {
	return VolumeInfo{VolumeMeta: v.meta.clone(), NextOffset: uint64(len(v.tiles)), SizeBytes: v.size}
}

// CreateVolume implements LDM.
func (m *Memory) CreateVolume(_ context.Context, meta VolumeMeta) (VolumeInfo, error) {
	if err := meta.Normalize(); err != nil {
		return VolumeInfo{}, err
	}
	if meta.CreatedAt.IsZero() {
		meta.CreatedAt = time.Now().UTC()
	}
	meta = meta.clone()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return VolumeInfo{}, ErrClosed
	}
	if _, ok := m.volumes[meta.Name]; ok {
		return VolumeInfo{}, fmt.Errorf("volume %q: %w", meta.Name, ErrExists)
	}
	v := &memVolume{meta: meta, bricks: map[BrickKey]uint64{}, changed: make(chan struct{})}
	m.volumes[meta.Name] = v
	return v.info(), nil
}

// Volume implements LDM.
func (m *Memory) Volume(name string) (VolumeInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, err := m.volume(name)
	if err != nil {
		return VolumeInfo{}, err
	}
	return v.info(), nil
}

// Volumes implements LDM.
func (m *Memory) Volumes() ([]VolumeInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	out := make([]VolumeInfo, 0, len(m.volumes))
	for _, v := range m.volumes {
		out = append(out, v.info())
	}
	slices.SortFunc(out, func(a, b VolumeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteVolume implements LDM.
func (m *Memory) DeleteVolume(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.volume(name)
	if err != nil {
		return err
	}
	delete(m.volumes, name)
	v.deleted = true
	close(v.changed)
	return nil
}

// Append implements LDM.
func (m *Memory) Append(_ context.Context, volume string, tiles ...Tile) (uint64, error) {
	for i := range tiles {
		if len(tiles[i].Value) > m.maxTile {
			return 0, fmt.Errorf("tile of %d bytes, limit %d: %w", len(tiles[i].Value), m.maxTile, ErrTooLarge)
		}
		sum := Checksum(tiles[i].Value)
		if tiles[i].CRC32C != 0 && tiles[i].CRC32C != sum {
			return 0, fmt.Errorf("tile crc32c %08x does not match its bytes (%08x): %w", tiles[i].CRC32C, sum, ErrCorrupt)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.volume(volume)
	if err != nil {
		return 0, err
	}
	if err := checkCodec(&v.meta, tiles); err != nil {
		return 0, err
	}
	first := uint64(len(v.tiles))
	for _, t := range tiles {
		t.Offset = uint64(len(v.tiles))
		t.CRC32C = Checksum(t.Value)
		t.Value = slices.Clone(t.Value)
		v.tiles = append(v.tiles, t)
		v.size += uint64(len(t.Value))
		if t.HasKey {
			v.bricks[t.Key] = t.Offset
		}
	}
	close(v.changed)
	v.changed = make(chan struct{})
	return first, nil
}

// Read implements LDM.
func (m *Memory) Read(volume string, offset uint64) (Tile, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, err := m.volume(volume)
	if err != nil {
		return Tile{}, err
	}
	return v.read(offset)
}

func (v *memVolume) read(offset uint64) (Tile, error) {
	if offset >= uint64(len(v.tiles)) {
		return Tile{}, fmt.Errorf("volume %q offset %d (next offset %d): %w", v.meta.Name, offset, len(v.tiles), ErrOutOfRange)
	}
	t := v.tiles[offset]
	if Checksum(t.Value) != t.CRC32C {
		return Tile{}, fmt.Errorf("volume %q offset %d: %w", v.meta.Name, offset, ErrCorrupt)
	}
	t.Value = slices.Clone(t.Value)
	return t, nil
}

// Brick implements LDM.
func (m *Memory) Brick(volume string, key BrickKey) (Tile, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, err := m.volume(volume)
	if err != nil {
		return Tile{}, err
	}
	off, ok := v.bricks[key]
	if !ok {
		return Tile{}, fmt.Errorf("volume %q brick %+v: %w", volume, key, ErrNotFound)
	}
	return v.read(off)
}

// Bricks implements LDM.
func (m *Memory) Bricks(volume string, lod uint32) (map[BrickKey]uint64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	v, err := m.volume(volume)
	if err != nil {
		return nil, err
	}
	out := map[BrickKey]uint64{}
	for k, off := range v.bricks {
		if k.LOD == lod {
			out[k] = off
		}
	}
	return out, nil
}

// Wait implements LDM.
func (m *Memory) Wait(ctx context.Context, volume string, offset uint64) error {
	for {
		m.mu.RLock()
		v, err := m.volume(volume)
		if err != nil {
			m.mu.RUnlock()
			return err
		}
		if uint64(len(v.tiles)) > offset {
			m.mu.RUnlock()
			return nil
		}
		ch := v.changed
		m.mu.RUnlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Close implements LDM. Waiters wake with ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	for _, v := range m.volumes {
		close(v.changed)
	}
	return nil
}
