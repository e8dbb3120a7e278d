package storage

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/edsrzf/mmap-go"
)

// dataMap is the read-only memory mapping of a block's data file that
// ReadView serves from, and the set of the block's tiles whose value has
// passed its checksum in this process.
//
// The mapping covers at least the committed bytes a view asked for. It may
// extend past the end of the file (the active block grows): bytes past the
// committed end are never touched, so no access faults. When a read needs
// more than the mapping covers, a larger one (at least twice the size)
// replaces it; the old mappings stay until the block is released, because
// views handed out earlier may still alias them.
type dataMap struct {
	cur atomic.Pointer[mmap.MMap]

	mu  sync.Mutex  // guards old, growth of the mapping and of verified
	old []mmap.MMap // superseded mappings, unmapped by unmap

	// verified has bit i set once tile base+i passed its checksum. A bit
	// lost to a concurrent growth only costs one more check.
	verified atomic.Pointer[[]atomic.Uint64]

	mapFailed atomic.Bool // a mapping failed and was logged
}

// mapped returns a mapping of at least end bytes of the data file. want is
// the size to map when the mapping must grow (the committed end of the
// block, at least end).
func (m *dataMap) mapped(f *os.File, end, want int64) (mmap.MMap, error) {
	if p := m.cur.Load(); p != nil && int64(len(*p)) >= end {
		return *p, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.cur.Load()
	if cur != nil && int64(len(*cur)) >= end {
		return *cur, nil
	}
	// Never map for bytes the file does not hold: touching a page past
	// the end of the file raises SIGBUS, which kills the process.
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if size := fi.Size(); end > size {
		return nil, fmt.Errorf("record ends at %d, past the end of the %d-byte data file: %w", end, size, ErrCorrupt)
	}
	n := max(want, end)
	if cur != nil {
		n = max(n, 2*int64(len(*cur)))
	}
	mm, err := mapRegion(f, int(n), mmap.RDONLY, 0, 0)
	if err != nil {
		return nil, err
	}
	if cur != nil {
		m.old = append(m.old, *cur)
	}
	m.cur.Store(&mm)
	return mm, nil
}

// mapRegion maps a data file; tests replace it to make mapping fail.
var mapRegion = mmap.MapRegion

// errPageFault reports a fault while reading a mapped value: the file was
// cut short after it was mapped, or the disk failed to read the page.
var errPageFault = errors.New("fault reading the mapped data file")

// checksumMapped is Checksum of bytes of a file mapping. A fault on a page
// of the mapping (an I/O error reading it, or the file cut short by
// something outside the store after it was mapped) is a SIGBUS that would
// kill the process; here it becomes errPageFault. SetPanicOnFault is per
// goroutine, so the previous setting is restored.
func checksumMapped(b []byte) (sum uint32, err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = errPageFault
		}
	}()
	return Checksum(b), nil
}

// isVerified reports whether tile i of the block passed its checksum.
func (m *dataMap) isVerified(i uint64) bool {
	p := m.verified.Load()
	if p == nil || i/64 >= uint64(len(*p)) {
		return false
	}
	return (*p)[i/64].Load()&(1<<(i%64)) != 0
}

// setVerified records that tile i passed its checksum.
func (m *dataMap) setVerified(i uint64) {
	p := m.verified.Load()
	if p == nil || i/64 >= uint64(len(*p)) {
		m.mu.Lock()
		p = m.verified.Load()
		if p == nil || i/64 >= uint64(len(*p)) {
			n := max(i/64+1, 2*uint64(wordCount(p)))
			words := make([]atomic.Uint64, n)
			if p != nil {
				for k := range *p {
					words[k].Store((*p)[k].Load())
				}
			}
			m.verified.Store(&words)
			p = &words
		}
		m.mu.Unlock()
	}
	(*p)[i/64].Or(1 << (i % 64))
}

// wordCount is the length of a bitmap that may be nil.
func wordCount(p *[]atomic.Uint64) int {
	if p == nil {
		return 0
	}
	return len(*p)
}

// forget clears tile i's verified bit, so its next view checks the value
// again (and fails while it is damaged).
func (m *dataMap) forget(i uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.verified.Load(); p != nil && i/64 < uint64(len(*p)) {
		(*p)[i/64].And(^uint64(1 << (i % 64)))
	}
}

// unmap releases every mapping. The block's readers are gone.
func (m *dataMap) unmap() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.cur.Swap(nil); p != nil {
		p.Unmap()
	}
	for _, o := range m.old {
		o.Unmap()
	}
	m.old = nil
}

// ReadView returns the tile at offset without copying its value: Value
// aliases a read-only mapping of the block's data file. The caller must
// call release exactly once when it no longer uses Value (the volume's
// files stay open and mapped until then) and must never write to Value.
//
// The value's checksum is checked the first time this process reads the
// tile (by ReadView or BrickView) and remembered: a tile whose checksum
// fails is never returned (ErrCorrupt, checked again on every read while it
// fails), but bytes damaged on disk after a tile passed its first check are
// served as they are until Verify finds them, which makes the next view
// check the tile again. Errors are those of Read. A view never maps bytes
// past the end of the data file, and a fault while the first check reads
// the mapping (an I/O error, or the file cut short by something outside the
// store) is ErrCorrupt, not a crash; but a caller that reads Value later
// can still fault if the file is cut after the check, so a caller that
// copies Value somewhere should do it under debug.SetPanicOnFault as
// service/encoded.go does. If the file cannot be mapped (vm.max_map_count),
// Value is a copy.
func (s *Store) ReadView(name string, offset uint64) (t Tile, release func(), err error) {
	v, err := s.acquire(name)
	if err != nil {
		return Tile{}, nil, err
	}
	t, err = v.view(v.state.Load(), offset)
	if err != nil {
		v.release()
		return Tile{}, nil, err
	}
	return t, v.release, nil
}

// BrickView is Brick without copying, with the contract of ReadView.
func (s *Store) BrickView(name string, key BrickKey) (t Tile, release func(), err error) {
	v, err := s.acquire(name)
	if err != nil {
		return Tile{}, nil, err
	}
	v.bmu.RLock()
	off, ok := v.bricks.get(key)
	v.bmu.RUnlock()
	if !ok {
		v.release()
		return Tile{}, nil, fmt.Errorf("volume %q brick %+v: %w", name, key, ErrNotFound)
	}
	t, err = v.view(v.state.Load(), off)
	if err != nil {
		v.release()
		return Tile{}, nil, err
	}
	return t, v.release, nil
}

// view is read without a copy (see ReadView). The caller holds a
// reference.
func (v *volume) view(st *volState, offset uint64) (Tile, error) {
	if offset >= st.next {
		return Tile{}, fmt.Errorf("volume %q offset %d (next offset %d): %w", v.name, offset, st.next, ErrOutOfRange)
	}
	bv := st.blockAt(offset)
	b := bv.b
	i := offset - b.base
	e, err := bv.entry(i)
	if err != nil {
		return Tile{}, fmt.Errorf("volume %q offset %d: %w", v.name, offset, err)
	}
	start := e.Pos + recordHeaderLen
	end := start + int64(e.Length)
	m, err := b.view.mapped(b.data, end, bv.end)
	if errors.Is(err, ErrCorrupt) {
		return Tile{}, fmt.Errorf("volume %q offset %d: %w", v.name, offset, err)
	}
	if err != nil {
		// The data may be sound and only the mapping failed (say the
		// process is out of mappings, vm.max_map_count): serve a copy.
		if b.view.mapFailed.CompareAndSwap(false, true) {
			v.log.Warn("mapping a data file failed; views of its tiles are copies", "base", b.base, "err", err)
		}
		return v.read(st, offset, nil)
	}
	val := m[start:end:end]
	if !b.view.isVerified(i) {
		sum, err := checksumMapped(val)
		if err != nil {
			return Tile{}, fmt.Errorf("volume %q offset %d: %v: %w", v.name, offset, err, ErrCorrupt)
		}
		if sum != e.CRC {
			return Tile{}, fmt.Errorf("volume %q offset %d: value checksum mismatch: %w", v.name, offset, ErrCorrupt)
		}
		b.view.setVerified(i)
	}
	return Tile{Offset: offset, Value: val, CRC32C: e.CRC, HasKey: e.HasKey, Key: e.Key, Index: e.Index}, nil
}
