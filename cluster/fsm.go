package cluster

// Snapshot stream layout (what FSM.Snapshot persists and FSM.Restore reads):
//
//	offset  width  field
//	0       8      magic "LDMSNAP\x00"
//	8       4      version (snapVersion), little-endian
//	12      8      last applied Raft index of a command, little-endian
//	20      4      CRC-32C of bytes 0..19, little-endian
//	version 2 only:
//	24      4      length D of the request id table, little-endian
//	28      D      the request id table (dedup.go, dedupTable.encode)
//	28+D    4      CRC-32C of the table
//	...     ...    the store's own snapshot stream (Store.Capture)
//
// Version 1 (no request id table) is still read.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/storage"
)

// Store is what the FSM needs from the tile store: the LDM interface plus
// the last applied Raft index kept with the data, and point-in-time
// snapshots. FileStore adapts *storage.Store; MemoryStore is an in-memory
// implementation for tests and demos.
type Store interface {
	storage.LDM
	// AppliedIndex returns the largest Raft index the store holds the
	// effect of (a tile's, a volume's, or the durable marker's), durable
	// or not; 0 for an empty store.
	AppliedIndex() uint64
	// DurableIndex returns the Raft index through which every command's
	// effect is durable in the store (the idx of the last Sync, or of a
	// restored snapshot). Commands after it may be missing, partly present
	// or whole after a crash; the FSM re-applies them idempotently.
	DurableIndex() uint64
	// Sync makes every command applied so far durable and records idx as
	// DurableIndex. The FSM's appends need not be durable before it (the
	// Raft log is the durable copy until then).
	Sync(idx uint64) error
	// SetAppliedIndex records idx durably as DurableIndex (after a
	// restored snapshot).
	SetAppliedIndex(idx uint64) error
	// Capture takes a point-in-time snapshot. It is called on the FSM
	// goroutine, so no append runs concurrently; it must be quick and must
	// not copy the store into memory.
	Capture() (StoreSnapshot, error)
	// Restore replaces the whole content of the store with a stream that
	// StoreSnapshot.WriteTo wrote.
	Restore(r io.Reader) error
}

// StoreSnapshot is a captured store state. WriteTo may run concurrently
// with appends; Release frees what the capture pinned.
type StoreSnapshot interface {
	WriteTo(w io.Writer) (int64, error)
	Release()
}

const (
	snapMagic      = "LDMSNAP\x00"
	snapVersion    = 2
	snapHeaderSize = 24
)

// ErrBadSnapshot: a snapshot stream does not start with a valid header.
var ErrBadSnapshot = errors.New("bad snapshot")

// fsm applies committed commands to the store. Raft calls Apply,
// ApplyBatch, Snapshot and Restore from one goroutine; applied and changed
// are also read by other goroutines under mu.
type fsm struct {
	store Store
	log   *slog.Logger

	mu      sync.Mutex
	applied uint64 // Raft index of the last command applied (or skipped)
	// through is the Raft index of the last command or configuration
	// entry applied: every entry up to it that the FSM sees is applied.
	// Raft never hands the FSM its no-op and barrier entries, so through
	// may stay below them; see Node.leaderReadIndex.
	through uint64
	changed chan struct{} // closed and replaced when applied or through grows

	// dedup and replay are used on the FSM goroutine only (and by New
	// before Raft starts).
	dedup  *dedupTable
	replay replayCursor
	// present is the store's AppliedIndex when the FSM started (or last
	// restored): commands above applied (the durable index) and up to
	// present may have left their effect in the store before a crash, so
	// they are re-applied idempotently (reapply). FSM goroutine only.
	present uint64

	// unsynced counts the tile bytes applied since the last store sync;
	// past syncBytes the FSM wakes the syncer (syncNow).
	unsynced  atomic.Int64
	syncBytes int64
	syncNow   chan struct{}
	syncMu    sync.Mutex // serializes syncStore
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.BatchingFSM = (*fsm)(nil)
)

func newFSM(store Store, log *slog.Logger) *fsm {
	applied := store.DurableIndex()
	return &fsm{
		store: store, log: log, applied: applied, through: applied, changed: make(chan struct{}),
		dedup:   newDedupTable(dedupEntries),
		replay:  replayCursor{store: store, next: map[string]uint64{}},
		present: store.AppliedIndex(),
		syncNow: make(chan struct{}, 1),
	}
}

// syncStore makes the store durable through every command applied so far
// and records that index in it (Store.Sync), so a restart replays the
// Raft log from there. It runs off the FSM goroutine: the store takes no
// commit lock during its fsyncs, so applies go on.
func (f *fsm) syncStore() error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	applied, _ := f.appliedIndex()
	pending := f.unsynced.Swap(0)
	if err := f.store.Sync(applied); err != nil {
		f.unsynced.Add(pending)
		return err
	}
	return nil
}

// noteApplied counts applied tile bytes and wakes the syncer past
// syncBytes.
func (f *fsm) noteApplied(n int64) {
	if f.syncBytes > 0 && f.unsynced.Add(n) >= f.syncBytes {
		select {
		case f.syncNow <- struct{}{}:
		default:
		}
	}
}

// applyResult is what Raft hands back to the proposer of a command.
type applyResult struct {
	first uint64 // cmdAppend: offset of the first tile
	// offsets is the offset of every tile of an append whose tiles carry
	// request ids: a tile whose id was applied before has its original
	// offset, so they need not be contiguous. Nil otherwise.
	offsets []uint64
	info    storage.VolumeInfo // cmdCreateVolume
	err     error
}

func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.changed
}

// setApplied records a batch: idx is its last command, through its last
// command or configuration entry (0 for none).
func (f *fsm) setApplied(idx, through uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	grew := false
	if idx > f.applied {
		f.applied = idx
		grew = true
	}
	if t := max(idx, through); t > f.through {
		f.through = t
		grew = true
	}
	if grew {
		close(f.changed)
		f.changed = make(chan struct{})
	}
}

// waitApplied blocks until the FSM has applied the command at index idx,
// ctx ends or done is closed.
func (f *fsm) waitApplied(ctx context.Context, idx uint64, done <-chan struct{}) error {
	return f.wait(ctx, done, func() bool {
		applied, _ := f.appliedIndex()
		return applied >= idx
	})
}

// waitThrough blocks until the FSM has applied every command and
// configuration entry up to index idx, ctx ends or done is closed. idx must
// be such an entry (or below the FSM's through): Raft never hands the FSM a
// no-op or a barrier, so a wait for one would only end with a later entry.
func (f *fsm) waitThrough(ctx context.Context, idx uint64, done <-chan struct{}) error {
	return f.wait(ctx, done, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.through >= idx
	})
}

func (f *fsm) wait(ctx context.Context, done <-chan struct{}, ok func() bool) error {
	for {
		_, ch := f.appliedIndex()
		if ok() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return storage.ErrClosed
		case <-ch:
		}
	}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// pendingAppend is one command of a run of appends to the same volume.
type pendingAppend struct {
	pos   int // position in the batch
	index uint64
	tiles []storage.Tile // the tiles to store

	// With request ids (all nil without):
	ids     []string // request id of each tile to store ("" for none)
	stored  []int    // position in the command of each tile to store
	offsets []uint64 // per tile of the command; duplicates filled in by prepare
	dupOf   []int    // per tile: an earlier tile of the command with its id, -2 for a known id, -1 for none
}

// prepareAppend sorts the tiles of an append into those to store and
// duplicates of ids already applied (or repeated within the command).
func (f *fsm) prepareAppend(pos int, index uint64, c command) pendingAppend {
	for j := range c.tiles {
		c.tiles[j].Index = index
	}
	p := pendingAppend{pos: pos, index: index}
	if c.ids == nil {
		p.tiles = c.tiles
		return p
	}
	p.offsets = make([]uint64, len(c.tiles))
	p.dupOf = make([]int, len(c.tiles))
	var seen map[string]int
	for j := range c.tiles {
		p.dupOf[j] = -1
		if id := c.ids[j]; id != "" {
			if off, ok := f.dedup.get(c.volume, id); ok {
				p.offsets[j], p.dupOf[j] = off, -2
				continue
			}
			if k, ok := seen[id]; ok {
				p.dupOf[j] = k
				continue
			}
			if seen == nil {
				seen = map[string]int{}
			}
			seen[id] = j
		}
		p.stored = append(p.stored, j)
		p.tiles = append(p.tiles, c.tiles[j])
		p.ids = append(p.ids, c.ids[j])
	}
	return p
}

// finishAppend records the ids of the tiles stored from first on and
// returns the command's result.
func (f *fsm) finishAppend(volume string, p pendingAppend, first uint64) *applyResult {
	if p.offsets == nil {
		return &applyResult{first: first}
	}
	for k, j := range p.stored {
		p.offsets[j] = first + uint64(k)
		if id := p.ids[k]; id != "" {
			f.dedup.put(volume, id, first+uint64(k))
		}
	}
	for j, d := range p.dupOf {
		if d >= 0 {
			p.offsets[j] = p.offsets[d]
		}
	}
	res := &applyResult{offsets: p.offsets}
	if len(p.offsets) > 0 {
		res.first = p.offsets[0]
	}
	return res
}

// replaySkipped records the effect on the request id table of an entry
// the store already holds (Raft replays the log after its latest snapshot
// on start): the ids of the tiles it stored, found in the store by their
// Raft index, and the deletion of a volume.
func (f *fsm) replaySkipped(l *raft.Log) {
	c, err := decodeCommand(l.Data)
	if err != nil {
		return
	}
	switch c.typ {
	case cmdCreateVolume:
		f.replay.reset(c.volume)
	case cmdDeleteVolume:
		f.dedup.dropVolume(c.volume)
		f.replay.reset(c.volume)
	case cmdAppend:
		if c.ids == nil {
			return
		}
		first, ok := f.replay.locate(c.volume, l.Index)
		if !ok {
			return
		}
		p := f.prepareAppend(0, l.Index, c)
		f.finishAppend(c.volume, p, first)
		f.replay.advance(c.volume, first, len(p.tiles))
	}
}

// ApplyBatch implements raft.BatchingFSM. Consecutive appends to the same
// volume are written with one store.Append (one sync); if that fails, each
// is applied alone, so the outcome never depends on how Raft grouped the
// entries.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	applied, _ := f.appliedIndex()
	last := applied
	var lastConfig uint64

	var run []pendingAppend
	var runVolume string
	var runIDs map[string]bool // request ids of the run's tiles to store
	flush := func() {
		if len(run) > 0 {
			f.applyAppends(runVolume, run, out)
			run = run[:0]
			clear(runIDs)
		}
	}
	for i, l := range logs {
		if l.Type == raft.LogConfiguration {
			lastConfig = l.Index
		}
		if l.Type != raft.LogCommand {
			continue
		}
		if l.Index <= applied {
			// The store already holds this entry's effect durably (a
			// restart replays the log after the last snapshot).
			f.replaySkipped(l)
			out[i] = &applyResult{err: fmt.Errorf("raft index %d: %w", l.Index, errAlreadyApplied)}
			continue
		}
		last = l.Index
		c, err := decodeCommand(l.Data)
		if err != nil {
			f.log.Error("cannot apply raft entry", "index", l.Index, "error", err)
			out[i] = &applyResult{err: err}
			continue
		}
		if l.Index <= f.present {
			// Applied before a crash, maybe only in part, and not
			// synced: re-apply what is missing.
			flush()
			out[i] = f.reapply(i, l.Index, c)
			continue
		}
		if c.typ == cmdAppend {
			if len(run) > 0 && runVolume != c.volume {
				flush()
			}
			// An id that a tile earlier in the run stores is recorded
			// only once that run is written: write it first.
			for _, id := range c.ids {
				if id != "" && runIDs[id] {
					flush()
					break
				}
			}
			runVolume = c.volume
			p := f.prepareAppend(i, l.Index, c)
			for _, id := range p.ids {
				if id != "" {
					if runIDs == nil {
						runIDs = map[string]bool{}
					}
					runIDs[id] = true
				}
			}
			run = append(run, p)
			continue
		}
		flush()
		out[i] = f.applyOther(l.Index, c)
	}
	flush()
	f.setApplied(last, lastConfig)
	return out
}

// errAlreadyApplied answers an entry at or below the store's applied index.
var errAlreadyApplied = errors.New("entry already applied")

func (f *fsm) applyAppends(volume string, run []pendingAppend, out []any) {
	ctx := context.Background()
	if len(run) > 1 {
		var all []storage.Tile
		for _, p := range run {
			all = append(all, p.tiles...)
		}
		var first uint64
		var err error
		if len(all) > 0 {
			first, err = f.store.Append(ctx, volume, all...)
		}
		if err == nil {
			for _, p := range run {
				out[p.pos] = f.finishAppend(volume, p, first)
				first += uint64(len(p.tiles))
			}
			f.noteApplied(tileBytes(all))
			return
		}
	}
	for _, p := range run {
		if len(p.tiles) == 0 && p.offsets != nil {
			// Every tile repeats an applied request id.
			out[p.pos] = f.finishAppend(volume, p, 0)
			continue
		}
		first, err := f.store.Append(ctx, volume, p.tiles...)
		f.checkErr(p.index, err)
		if err != nil {
			out[p.pos] = &applyResult{first: first, err: err}
			continue
		}
		out[p.pos] = f.finishAppend(volume, p, first)
		f.noteApplied(tileBytes(p.tiles))
	}
}

func tileBytes(tiles []storage.Tile) int64 {
	var n int64
	for _, t := range tiles {
		n += int64(len(t.Value))
	}
	return n
}

func (f *fsm) applyOther(index uint64, c command) *applyResult {
	ctx := context.Background()
	switch c.typ {
	case cmdCreateVolume:
		m := c.meta
		m.Index = index
		info, err := f.store.CreateVolume(ctx, m)
		f.checkErr(index, err)
		return &applyResult{info: info, err: err}
	case cmdDeleteVolume:
		err := f.store.DeleteVolume(ctx, c.volume)
		f.checkErr(index, err)
		if err == nil || errors.Is(err, storage.ErrNotFound) {
			// A volume that does not exist has no ids either, unless this
			// deletion was applied before a crash and is replayed (a
			// deletion leaves no index in the store): drop them alike.
			f.dedup.dropVolume(c.volume)
		}
		return &applyResult{err: err}
	}
	return &applyResult{err: fmt.Errorf("%w: %d", ErrUnknownCommand, c.typ)}
}

// deterministic lists the errors every replica returns alike for the same
// command on the same state; any other error means this replica's disk
// failed and is logged loudly.
var deterministic = []error{
	storage.ErrNotFound, storage.ErrExists, storage.ErrInvalidName, storage.ErrInvalidArgument,
	storage.ErrOutOfRange, storage.ErrTooLarge, storage.ErrCorrupt,
}

func (f *fsm) checkErr(index uint64, err error) {
	if err == nil {
		return
	}
	for _, s := range deterministic {
		if errors.Is(err, s) {
			return
		}
	}
	f.log.Error("store failed to apply a committed entry; this replica may diverge", "index", index, "error", err)
}

// Snapshot implements raft.FSM. It only captures; Persist does the IO.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.store.Capture()
	if err != nil {
		return nil, fmt.Errorf("capture store: %w", err)
	}
	applied, _ := f.appliedIndex()
	return &fsmSnapshot{snap: snap, applied: applied, dedup: f.dedup.encode(), sync: f.syncStore}, nil
}

// Restore implements raft.FSM: it replaces the store with the snapshot.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var h [snapHeaderSize]byte
	if _, err := io.ReadFull(rc, h[:]); err != nil {
		return fmt.Errorf("%w: header: %v", ErrBadSnapshot, err)
	}
	applied, version, err := parseSnapHeader(h[:])
	if err != nil {
		return err
	}
	dedup := newDedupTable(dedupEntries)
	if version >= 2 {
		if dedup, err = readDedup(rc); err != nil {
			return err
		}
	}
	if err := f.store.Restore(rc); err != nil {
		return fmt.Errorf("restore store: %w", err)
	}
	if f.store.DurableIndex() < applied {
		if err := f.store.SetAppliedIndex(applied); err != nil {
			return fmt.Errorf("restore store: %w", err)
		}
	}
	f.dedup = dedup
	f.replay = replayCursor{store: f.store, next: map[string]uint64{}}
	f.present = f.store.AppliedIndex()
	f.mu.Lock()
	f.applied = f.store.DurableIndex()
	f.through = max(f.through, f.applied)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

func snapHeader(applied uint64) []byte {
	h := make([]byte, 0, snapHeaderSize)
	h = append(h, snapMagic...)
	h = binary.LittleEndian.AppendUint32(h, snapVersion)
	h = binary.LittleEndian.AppendUint64(h, applied)
	return binary.LittleEndian.AppendUint32(h, storage.Checksum(h))
}

// parseSnapHeader returns the applied index and the version of a
// snapshot header.
func parseSnapHeader(h []byte) (applied uint64, version uint32, err error) {
	if !bytes.Equal(h[:8], []byte(snapMagic)) {
		return 0, 0, fmt.Errorf("%w: magic %q", ErrBadSnapshot, h[:8])
	}
	if sum := binary.LittleEndian.Uint32(h[20:24]); sum != storage.Checksum(h[:20]) {
		return 0, 0, fmt.Errorf("%w: header checksum", ErrBadSnapshot)
	}
	if v := binary.LittleEndian.Uint32(h[8:12]); v != 1 && v != snapVersion {
		return 0, 0, fmt.Errorf("%w: version %d (want 1 or %d)", ErrBadSnapshot, v, snapVersion)
	}
	return binary.LittleEndian.Uint64(h[12:20]), binary.LittleEndian.Uint32(h[8:12]), nil
}

// maxDedupBytes bounds the request id table of a snapshot when it is read.
const maxDedupBytes = dedupEntries*(2+maxVolumeNameBytes+1+MaxRequestIDBytes+8) + 4

// maxVolumeNameBytes is the longest volume name (storage.ValidateName).
const maxVolumeNameBytes = 64

// readDedup reads the request id table section of a version 2 snapshot.
func readDedup(r io.Reader) (*dedupTable, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("%w: request id table: %v", ErrBadSnapshot, err)
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > maxDedupBytes {
		return nil, fmt.Errorf("%w: request id table of %d bytes", ErrBadSnapshot, size)
	}
	b := make([]byte, size+4)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: request id table: %v", ErrBadSnapshot, err)
	}
	if binary.LittleEndian.Uint32(b[size:]) != storage.Checksum(b[:size]) {
		return nil, fmt.Errorf("%w: request id table checksum", ErrBadSnapshot)
	}
	return decodeDedup(b[:size], dedupEntries)
}

type fsmSnapshot struct {
	snap    StoreSnapshot
	applied uint64
	dedup   []byte       // the encoded request id table
	sync    func() error // makes the store durable through applied
}

// Persist implements raft.FSMSnapshot. It first makes the store durable
// through the snapshot's index (at least): once the snapshot is stored,
// Raft may drop the log before it, and the log must keep every entry the
// store has not made durable, for the replay after a crash.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.sync(); err != nil {
		sink.Cancel()
		return fmt.Errorf("sync the store before the snapshot: %w", err)
	}
	if _, err := sink.Write(snapHeader(s.applied)); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot header: %w", err)
	}
	sec := binary.LittleEndian.AppendUint32(nil, uint32(len(s.dedup)))
	sec = append(sec, s.dedup...)
	sec = binary.LittleEndian.AppendUint32(sec, storage.Checksum(s.dedup))
	if _, err := sink.Write(sec); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot request ids: %w", err)
	}
	if _, err := s.snap.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot.
func (s *fsmSnapshot) Release() { s.snap.Release() }
