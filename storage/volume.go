package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edsrzf/mmap-go"
)

// block is one data file and its memory-mapped index file. The files and
// the mapping live until the volume is released.
type block struct {
	base  uint64
	data  *os.File
	index *os.File
	idx   mmap.MMap // read-only; may extend past the end of the index file

	// Owned by the writer (volume.wmu).
	wEnd   int64  // data bytes written
	wCount uint64 // tiles written

	// Owned by the committer (volume.cmu).
	idxCount uint64 // entries written to the index file

	view dataMap // the data file's mapping for ReadView (see mapped.go)
}

func blockFileName(base uint64, ext string) string { return fmt.Sprintf("%020d.%s", base, ext) }

// entry decodes index entry i of the block. The caller guarantees that the
// entry has been committed.
func (b *block) entry(i uint64) (indexEntry, error) {
	at := indexHeaderLen + i*indexEntryLen
	return decodeIndexEntry(b.idx[at : at+indexEntryLen])
}

func (b *block) release() {
	if b.idx != nil {
		b.idx.Unmap()
	}
	b.view.unmap()
	b.data.Close()
	b.index.Close()
}

// blockView is the committed part of one block.
type blockView struct {
	b     *block
	count uint64 // committed tiles
	end   int64  // committed data bytes, including the header
}

// entry decodes committed index entry i and checks that its record lies
// inside the committed data, so that a damaged or crafted entry (one whose
// checksum holds, say in a restored snapshot) never makes a reader
// allocate or read more than the block holds.
func (bv blockView) entry(i uint64) (indexEntry, error) {
	e, err := bv.b.entry(i)
	if err != nil {
		return indexEntry{}, err
	}
	if end := e.Pos + recordHeaderLen + int64(e.Length); end > bv.end {
		return indexEntry{}, fmt.Errorf("index entry %d: record at %d ends at %d, past the block's %d committed bytes: %w", i, e.Pos, end, bv.end, ErrCorrupt)
	}
	return e, nil
}

// volState is an immutable view of a volume's committed log. Readers load
// it from volume.state without a lock.
type volState struct {
	blocks    []blockView // ordered by base
	next      uint64      // committed tiles
	size      uint64      // committed value bytes
	lastIndex uint64      // largest tile replication index
	changed   chan struct{}
}

type pendingEntry struct {
	b     *block
	off   uint64
	e     indexEntry
	batch *writeBatch
}

// writeBatch is one call of write. If its entries are dropped unpublished
// (their commit failed, or a repair removed them), err says why; the
// appender reads it under cmu before it trusts the committed count, since
// after a repair the same offsets may hold someone else's tiles.
type writeBatch struct {
	err error // guarded by cmu
}

// volume is one open volume. Appends write records under wmu and are made
// durable by a committer under cmu (lock order: cmu, then wmu). Readers use
// state and pin the files with acquire/release.
type volume struct {
	s    *Store
	name string
	dir  string
	meta VolumeMeta
	log  *slog.Logger

	state atomic.Pointer[volState]
	// ref is readers<<1 | closed. The party that brings it to exactly 1
	// (closed, no readers) releases the files.
	ref  atomic.Int64
	gone chan struct{} // closed when the volume is closed

	commits  atomic.Uint64         // commits that made tiles visible (tests observe group commit)
	failed   atomic.Pointer[error] // sticky write failure
	replaced atomic.Bool           // set by Restore before it stops writes

	cmu           sync.Mutex
	idxDirty      *block    // block whose index has entries not yet fsynced (cmu)
	idxDirtyBytes int64     // data bytes those entries describe (cmu)
	idxIOV        [1][]byte // the buffer list of an index write, kept so a commit does not allocate one (cmu)
	dataDirty     []*block  // blocks whose data has committed records not yet fsynced (cmu); see Store.Sync

	wmu     sync.Mutex
	wblocks []*block // every block, the last is active
	wNext   uint64   // next offset to assign
	pending []pendingEntry
	stopped bool // no more appends (deleted, replaced or closed)

	bmu    sync.RWMutex
	bricks *brickIndex
}

func (v *volume) info() VolumeInfo {
	st := v.state.Load()
	return VolumeInfo{VolumeMeta: v.meta.clone(), NextOffset: st.next, SizeBytes: st.size}
}

func (v *volume) acquire() bool {
	for {
		r := v.ref.Load()
		if r&1 != 0 {
			return false
		}
		if v.ref.CompareAndSwap(r, r+2) {
			return true
		}
	}
}

func (v *volume) release() {
	if v.ref.Add(-2) == 1 {
		v.releaseFiles()
	}
}

// stopWrites waits for appends and commits in progress and refuses new
// ones.
func (v *volume) stopWrites() {
	v.cmu.Lock()
	v.wmu.Lock()
	v.stopped = true
	v.wmu.Unlock()
	v.cmu.Unlock()
}

// errReplaced is returned by an append that raced with Restore; the Store
// retries it on the volume that replaced this one.
var errReplaced = fmt.Errorf("volume replaced by a restore: %w", ErrNotFound)

func (v *volume) stoppedErr() error {
	switch {
	case v.s.closed.Load():
		return ErrClosed
	case v.replaced.Load():
		return errReplaced
	}
	return fmt.Errorf("volume %q: %w", v.name, ErrNotFound)
}

// resumeWrites undoes stopWrites after the operation that stopped them
// failed (cause). An append that finished its write while writes were
// stopped was refused at its commit, but its records are in the data file
// and its index entries are still queued: the next commit would make tiles
// visible whose appender was told they failed, and a retry would store
// them twice. So if any are queued the volume is poisoned instead, like
// after a failed write: appends fail until the store is reopened, and
// recovery then decides what the data file holds.
func (v *volume) resumeWrites(cause error) {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	v.stopped = false
	if len(v.pending) > 0 {
		v.fail(fmt.Errorf("storage: %d tiles of refused appends were written while writes were stopped: %w", len(v.pending), cause))
	}
}

// close wakes waiters and releases the files once no reader holds them.
// Call stopWrites first.
func (v *volume) close() {
	close(v.gone)
	if v.ref.Or(1) == 0 {
		v.releaseFiles()
	}
}

func (v *volume) releaseFiles() {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	for _, b := range v.wblocks {
		b.release()
	}
	v.wblocks = nil
}

func (v *volume) fail(err error) error {
	err = classify(err)
	v.failed.CompareAndSwap(nil, &err)
	v.log.Error("volume write failed; repairing the volume", "err", err)
	return err
}

// repairLocked undoes everything a failed write or commit left behind, so
// the volume is as if the failed appends had never started: blocks created
// after the last committed one are removed (with any half-created block
// files), the last committed block's data and index files are truncated to
// their committed ends and fsynced, queued entries are dropped (their
// appenders get the failure), and the write position goes back to the
// committed count. Committed tiles are untouched: they are never
// rewritten. The caller holds cmu.
//
// Committed tiles of Append were durable before they were published, but
// those of AppendDeferred are published before they are durable: after a
// failed fsync the kernel may have dropped their dirty pages as well as
// the pages past the committed end that the repair cuts, and the repair's
// own fsync succeeds (the error is reported once). So a failed fsync is
// also the store's sticky sync failure (Store.Sync fails until the store is
// reopened and DurableIndex stays before those tiles), and the repair does
// not claim to save them. If the repair itself fails, the volume stays
// failed and the next append tries again.
func (v *volume) repairLocked() error {
	p := v.failed.Load()
	if p == nil {
		return nil
	}
	cause := *p
	v.wmu.Lock()
	defer v.wmu.Unlock()
	if v.stopped {
		return v.stoppedErr()
	}
	st := v.state.Load()
	last := st.blocks[len(st.blocks)-1]
	keep := slices.Index(v.wblocks, last.b)
	if keep < 0 {
		return fmt.Errorf("volume %q: repair: the last committed block is not open: %w", v.name, cause)
	}
	fs := v.s.fs
	dropped := v.wNext - st.next
	removed := 0
	err := func() error {
		// Blocks after the last committed one, whole or half created.
		ents, err := os.ReadDir(v.dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			stem, _, _ := strings.Cut(e.Name(), ".")
			base, perr := strconv.ParseUint(stem, 10, 64)
			if perr != nil || len(stem) != 20 || base <= last.b.base {
				continue
			}
			if err := fs.Remove(filepath.Join(v.dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			removed++
		}
		if removed > 0 {
			if err := syncDir(fs, v.dir); err != nil {
				return err
			}
		}
		if err := truncateSync(fs, last.b.data, last.end); err != nil {
			return err
		}
		if err := truncateSync(fs, last.b.index, indexHeaderLen+int64(last.count)*indexEntryLen); err != nil {
			return err
		}
		if v.idxDirty != nil && v.idxDirty != last.b {
			if err := fdatasync(fs, v.idxDirty.index); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		err = classify(err)
		// The repair's fsyncs cover published records of deferred
		// appends too: a failure is the store's sticky sync failure.
		v.s.failSync(err)
		v.log.Error("volume repair after a write failure failed; the next append tries again", "cause", cause, "err", err)
		return fmt.Errorf("volume %q: earlier write failure: %w (repair: %v)", v.name, cause, err)
	}
	for _, b := range v.wblocks[keep+1:] {
		b.release()
	}
	v.dataDirty = slices.DeleteFunc(v.dataDirty, func(b *block) bool { return slices.Index(v.wblocks[keep+1:], b) >= 0 })
	v.wblocks = v.wblocks[:keep+1]
	last.b.wEnd, last.b.wCount, last.b.idxCount = last.end, last.count, last.count
	for _, pe := range v.pending {
		pe.batch.err = cause
	}
	v.pending = nil
	v.wNext = st.next
	v.idxDirty, v.idxDirtyBytes = nil, 0
	v.failed.Store(nil)
	v.log.Warn("volume repaired after a write failure: uncommitted records removed, appends resume",
		"cause", cause, "tiles_dropped", dropped, "block_files_removed", removed, "next_offset", st.next)
	return nil
}

func (v *volume) failure() error {
	if p := v.failed.Load(); p != nil {
		return fmt.Errorf("volume %q: earlier write failure: %w", v.name, *p)
	}
	return nil
}

// durability says when a commit makes its records durable.
type durability int

const (
	durableNow   durability = iota // fsync before publishing (SyncBatch, SyncAlways)
	durableLater                   // at the next Store.Sync (AppendDeferred)
	durableNever                   // never (SyncNone); Store.Sync still can
)

// append writes tiles and makes them durable under the sync policy, or
// only at the next Store.Sync when deferred. A failed write or commit is
// repaired at once (repairLocked), so the volume is left as if the failed
// append had never started.
func (v *volume) append(tiles []Tile, sums []uint32, deferred bool) (uint64, error) {
	if v.failed.Load() != nil {
		v.cmu.Lock()
		err := v.repairLocked()
		v.cmu.Unlock()
		if err != nil {
			return 0, err
		}
	}
	d := durableNow
	switch {
	case deferred:
		d = durableLater
	case v.s.cfg.Sync == SyncNone:
		d = durableNever
	}
	if v.s.cfg.Sync == SyncAlways && !deferred {
		v.cmu.Lock()
		defer v.cmu.Unlock()
		first, _, _, err := v.write(tiles, sums)
		if err == nil {
			err = v.commitLocked(d)
		}
		if err != nil {
			v.repairLocked()
			return 0, err
		}
		return first, nil
	}
	first, end, wb, err := v.write(tiles, sums)
	v.cmu.Lock()
	defer v.cmu.Unlock()
	if err != nil {
		v.repairLocked()
		return 0, err
	}
	if wb.err != nil {
		return 0, wb.err
	}
	if v.state.Load().next >= end {
		return first, nil // a commit by another appender covered these tiles
	}
	if err := v.commitLocked(d); err != nil {
		v.repairLocked()
		return 0, err
	}
	return first, nil
}

// maxIOV bounds the buffers passed to one pwritev.
const maxIOV = 1024

// write appends records to the active block (rolling over to new blocks as
// they fill) and queues their index entries for the committer. It returns
// the first offset and the offset after the last.
func (v *volume) write(tiles []Tile, sums []uint32) (first, end uint64, wb *writeBatch, err error) {
	v.wmu.Lock()
	defer v.wmu.Unlock()
	if v.stopped {
		return 0, 0, nil, v.stoppedErr()
	}
	if err := v.failure(); err != nil {
		return 0, 0, nil, err
	}
	first = v.wNext
	wb = &writeBatch{}
	if len(tiles) == 0 {
		return first, first, wb, nil
	}
	hdrs := make([]byte, recordHeaderLen*len(tiles))
	iov := make([][]byte, 0, min(2*len(tiles), maxIOV))
	b := v.wblocks[len(v.wblocks)-1]
	start := b.wEnd
	flush := func() error {
		if len(iov) == 0 {
			return nil
		}
		err := v.s.fs.Pwritev(b.data, iov, start)
		iov = iov[:0]
		start = b.wEnd
		return err
	}
	for i := range tiles {
		t := &tiles[i]
		if b.wCount > 0 && (b.wEnd >= v.s.cfg.BlockBytes || b.wCount >= uint64(v.s.cfg.BlockTiles)) {
			if err := flush(); err != nil {
				return 0, 0, nil, v.fail(err)
			}
			nb, err := v.newBlock(v.wNext)
			if err != nil {
				return 0, 0, nil, v.fail(err)
			}
			b = nb
			start = b.wEnd
		}
		h := hdrs[i*recordHeaderLen : (i+1)*recordHeaderLen]
		rh := recordHeader{Offset: v.wNext, Length: uint32(len(t.Value)), CRC: sums[i], HasKey: t.HasKey, Key: t.Key, Index: t.Index}
		putRecordHeader(h, rh)
		iov = append(iov, h)
		if len(t.Value) > 0 {
			iov = append(iov, t.Value)
		}
		v.pending = append(v.pending, pendingEntry{b: b, off: v.wNext, e: rh.entry(b.wEnd), batch: wb})
		b.wEnd += recordHeaderLen + int64(len(t.Value))
		b.wCount++
		v.wNext++
		if len(iov) >= maxIOV-1 {
			if err := flush(); err != nil {
				return 0, 0, nil, v.fail(err)
			}
		}
	}
	if err := flush(); err != nil {
		return 0, 0, nil, v.fail(err)
	}
	return first, v.wNext, wb, nil
}

// newBlock creates the block starting at base and makes it active. The
// caller holds wmu.
func (v *volume) newBlock(base uint64) (*block, error) {
	if err := createBlockFiles(v.s.fs, v.dir, base); err != nil {
		return nil, err
	}
	b, err := v.openBlockFiles(base, true)
	if err != nil {
		return nil, err
	}
	b.wEnd = dataHeaderLen
	v.wblocks = append(v.wblocks, b)
	return b, nil
}

// createBlockFiles writes the headers of a new block's index and data
// files, each as tmp, fsync, rename, and then fsyncs dir.
func createBlockFiles(fs fileSys, dir string, base uint64) error {
	for _, f := range []struct {
		ext   string
		magic [magicLen]byte
	}{{"index", magicIndex}, {"data", magicData}} {
		name := blockFileName(base, f.ext)
		tmp := filepath.Join(dir, name+".tmp")
		if err := writeFileSync(fs, tmp, encodeBlockHeader(f.magic, base)); err != nil {
			return err
		}
		if err := fs.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
	}
	return syncDir(fs, dir)
}

// openBlockFiles opens a block's files and maps its index. An active block
// maps room for BlockTiles entries so the mapping never has to move.
func (v *volume) openBlockFiles(base uint64, active bool) (*block, error) {
	data, err := os.OpenFile(filepath.Join(v.dir, blockFileName(base, "data")), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	index, err := os.OpenFile(filepath.Join(v.dir, blockFileName(base, "index")), os.O_RDWR, 0)
	if err != nil {
		data.Close()
		return nil, fmt.Errorf("storage: %w", err)
	}
	fi, err := index.Stat()
	if err != nil {
		data.Close()
		index.Close()
		return nil, fmt.Errorf("storage: %w", err)
	}
	n := fi.Size()
	if n < indexHeaderLen {
		data.Close()
		index.Close()
		return nil, fmt.Errorf("storage: index file %s of %d bytes: %w", index.Name(), n, ErrCorrupt)
	}
	if active {
		n = max(n, indexHeaderLen+int64(v.s.cfg.BlockTiles)*indexEntryLen)
	}
	m, err := mmap.MapRegion(index, int(n), mmap.RDONLY, 0, 0)
	if err != nil {
		data.Close()
		index.Close()
		return nil, fmt.Errorf("storage: mmap %s: %w", index.Name(), err)
	}
	return &block{base: base, data: data, index: index, idx: m}, nil
}

// indexSyncBytes is how much tile data the active block's index may
// describe beyond its last fsync. Recovery rebuilds at most that much
// (plus what the kernel had not written back) from the data file.
const indexSyncBytes = 64 << 20

// commitLocked makes every pending record durable (under d), writes its
// index entries, and publishes them. The caller holds cmu.
//
// The records (whose headers carry every index field) are made durable by
// fdatasync of the data files; that is what an acknowledgement means.
// Index entries are written after it, so an entry on disk always points at
// a durable record. The active block's index is fsynced only every
// indexSyncBytes, but a block's index is always fsynced before the first
// entry of the next block is written, so every sealed block's index is
// complete; only the active block's index can lag its data, and recovery
// rebuilds the lag from the record headers.
//
// A deferred commit (durableLater) fsyncs nothing on the way: it notes the
// blocks whose data is not durable in dataDirty, for Store.Sync. It keeps
// the sealing rule (a block's data and index are fsynced before the first
// entry of the next block is written), which costs one fsync per sealed
// block.
func (v *volume) commitLocked(d durability) error {
	if err := v.failure(); err != nil {
		return err
	}
	v.wmu.Lock()
	if v.stopped {
		v.wmu.Unlock()
		return v.stoppedErr()
	}
	pend := v.pending
	v.pending = nil
	v.wmu.Unlock()
	if len(pend) == 0 {
		return nil
	}
	// failPend makes the volume fail and tells the appenders of pend that
	// their tiles were dropped (the repair cuts them from the data file).
	failPend := func(err error) error {
		err = v.fail(err)
		for _, p := range pend {
			p.batch.err = err
		}
		return err
	}
	// failSync is failPend for a failed fsync, which is also the store's
	// sticky sync failure (see Store.Sync): the kernel may have dropped
	// pages of records that are published but not durable yet (deferred
	// appends), and a later fsync of the file (the repair's) succeeds.
	failSync := func(err error) error {
		v.s.failSync(err)
		return failPend(err)
	}
	doSync := d == durableNow
	var synced []*block // blocks whose data this commit fdatasynced
	if doSync {
		for _, p := range pend {
			if n := len(synced); n == 0 || synced[n-1] != p.b {
				synced = append(synced, p.b)
				if err := fdatasync(v.s.fs, p.b.data); err != nil {
					return failSync(err)
				}
			}
		}
	} else {
		for _, p := range pend {
			if n := len(v.dataDirty); n == 0 || v.dataDirty[n-1] != p.b {
				v.dataDirty = append(v.dataDirty, p.b)
			}
		}
	}
	buf := make([]byte, 0, min(len(pend), 1<<16)*indexEntryLen)
	for i := 0; i < len(pend); {
		b := pend[i].b
		if v.idxDirty != nil && v.idxDirty != b {
			// Seal: the previous block's data and index are complete and
			// durable before the next block's first entry is written.
			// Its data is fsynced here unless this commit did, even when
			// dataDirty no longer lists it: a Store.Sync that took it from
			// the list may not have fsynced it yet.
			if doSync || d == durableLater {
				if !slices.Contains(synced, v.idxDirty) {
					if err := v.syncDataLocked(v.idxDirty); err != nil {
						return failSync(err)
					}
				}
				if err := fdatasync(v.s.fs, v.idxDirty.index); err != nil {
					return failSync(err)
				}
			}
			v.idxDirty, v.idxDirtyBytes = nil, 0
		}
		j := i
		buf = buf[:0]
		for ; j < len(pend) && pend[j].b == b; j++ {
			buf = buf[:len(buf)+indexEntryLen]
			putIndexEntry(buf[len(buf)-indexEntryLen:], pend[j].e)
			v.idxDirtyBytes += recordHeaderLen + int64(pend[j].e.Length)
		}
		v.idxIOV[0] = buf
		err := v.s.fs.Pwritev(b.index, v.idxIOV[:], indexHeaderLen+int64(b.idxCount)*indexEntryLen)
		v.idxIOV[0] = nil
		if err != nil {
			return failPend(fmt.Errorf("storage: write index: %w", err))
		}
		b.idxCount += uint64(j - i)
		v.idxDirty = b
		i = j
	}
	if v.idxDirtyBytes >= indexSyncBytes {
		if doSync {
			if err := fdatasync(v.s.fs, v.idxDirty.index); err != nil {
				return failSync(err)
			}
		}
		v.idxDirtyBytes = 0
	}
	v.publish(pend)
	v.commits.Add(1)
	return nil
}

// syncDataLocked fsyncs the data of b and of every block before it in
// dataDirty, and drops them from it. b's data is fsynced even if dataDirty
// does not list it (a Store.Sync in progress took it). The caller holds
// cmu.
func (v *volume) syncDataLocked(b *block) error {
	i := slices.Index(v.dataDirty, b)
	if i >= 0 {
		for _, db := range v.dataDirty[:i] {
			if err := fdatasync(v.s.fs, db.data); err != nil {
				return err
			}
		}
	}
	if err := fdatasync(v.s.fs, b.data); err != nil {
		return err
	}
	v.dataDirty = slices.Delete(v.dataDirty, 0, i+1)
	return nil
}

// takeDirty returns the files a Store.Sync must fsync so that every
// committed record of the volume is durable, and forgets them. The caller
// holds a reference (acquire), which keeps the files open.
func (v *volume) takeDirty() []*os.File {
	v.cmu.Lock()
	defer v.cmu.Unlock()
	var fs []*os.File
	for _, b := range v.dataDirty {
		fs = append(fs, b.data)
	}
	v.dataDirty = nil
	if v.idxDirty != nil {
		fs = append(fs, v.idxDirty.index)
		v.idxDirtyBytes = 0
	}
	return fs
}

// syncIndex fsyncs the active block's index if it has unsynced entries, so
// the next Open has nothing to rebuild. Correctness never depends on it.
func (v *volume) syncIndex() {
	v.cmu.Lock()
	defer v.cmu.Unlock()
	if v.idxDirty != nil && v.s.cfg.Sync != SyncNone && v.failed.Load() == nil {
		if err := fdatasync(v.s.fs, v.idxDirty.index); err != nil {
			v.s.failSync(err)
			v.log.Warn("fsync of the index at close failed", "err", err)
		}
	}
	v.idxDirty, v.idxDirtyBytes = nil, 0
}

// publish installs the state that includes pend, updates the brick index
// and wakes waiters. The caller holds cmu.
func (v *volume) publish(pend []pendingEntry) {
	old := v.state.Load()
	st := &volState{
		blocks:    append(make([]blockView, 0, len(old.blocks)+1), old.blocks...),
		next:      old.next,
		size:      old.size,
		lastIndex: old.lastIndex,
		changed:   make(chan struct{}),
	}
	for _, p := range pend {
		if n := len(st.blocks); n == 0 || st.blocks[n-1].b != p.b {
			st.blocks = append(st.blocks, blockView{b: p.b})
		}
		bv := &st.blocks[len(st.blocks)-1]
		bv.count++
		bv.end = p.e.Pos + recordHeaderLen + int64(p.e.Length)
		st.next++
		st.size += uint64(p.e.Length)
		st.lastIndex = max(st.lastIndex, p.e.Index)
	}
	v.state.Store(st)
	v.bmu.Lock()
	for _, p := range pend {
		if p.e.HasKey {
			v.bricks.set(p.e.Key, p.off)
		}
	}
	v.bmu.Unlock()
	close(old.changed)
}

// blockAt returns the view of the last block whose base is <= offset
// (binary search; st holds at least one block).
func (st *volState) blockAt(offset uint64) blockView {
	lo, hi := 0, len(st.blocks)
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if st.blocks[mid].b.base <= offset {
			lo = mid
		} else {
			hi = mid
		}
	}
	return st.blocks[lo]
}

// read returns the tile at offset from st, reading the value into buf when
// it is large enough and into a new buffer otherwise. The caller holds a
// reference.
func (v *volume) read(st *volState, offset uint64, buf []byte) (Tile, error) {
	if offset >= st.next {
		return Tile{}, fmt.Errorf("volume %q offset %d (next offset %d): %w", v.name, offset, st.next, ErrOutOfRange)
	}
	bv := st.blockAt(offset)
	b := bv.b
	e, err := bv.entry(offset - b.base)
	if err != nil {
		return Tile{}, fmt.Errorf("volume %q offset %d: %w", v.name, offset, err)
	}
	if uint64(cap(buf)) >= uint64(e.Length) {
		buf = buf[:e.Length]
	} else {
		buf = make([]byte, e.Length)
	}
	if _, err := b.data.ReadAt(buf, e.Pos+recordHeaderLen); err != nil {
		return Tile{}, fmt.Errorf("volume %q offset %d: read: %v: %w", v.name, offset, err, ErrCorrupt)
	}
	if Checksum(buf) != e.CRC {
		return Tile{}, fmt.Errorf("volume %q offset %d: value checksum mismatch: %w", v.name, offset, ErrCorrupt)
	}
	return Tile{Offset: offset, Value: buf, CRC32C: e.CRC, HasKey: e.HasKey, Key: e.Key, Index: e.Index}, nil
}
