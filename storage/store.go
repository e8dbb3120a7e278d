package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked means another Store (in this or another process) has the
// directory open.
var ErrLocked = errors.New("store directory is locked by another store")

// SyncPolicy says when an append is made durable.
type SyncPolicy int

const (
	// SyncBatch (the default) is group commit: concurrent appenders share
	// one fsync; each returns after its tiles are durable.
	SyncBatch SyncPolicy = iota
	// SyncAlways fsyncs every append on its own.
	SyncAlways
	// SyncNone never fsyncs appended tiles (creating, deleting and
	// recovering volumes still fsync). A process crash loses nothing that
	// was acknowledged, a machine crash may. For tests and benchmarks.
	SyncNone
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncBatch:
		return "batch"
	case SyncAlways:
		return "always"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ParseSyncPolicy parses the names String returns.
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	for p := SyncBatch; p <= SyncNone; p++ {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: sync policy %q (want batch, always or none)", ErrInvalidArgument, s)
}

const (
	// DefaultBlockBytes is the data size at which a block is sealed.
	DefaultBlockBytes = 1 << 30
	// DefaultBlockTiles is the tile count at which a block is sealed. It
	// bounds the address space reserved for the active block's index.
	DefaultBlockTiles = 1 << 21
)

// Config configures a Store. The zero value is valid.
type Config struct {
	// BlockBytes is the data size at which the active block is sealed and
	// a new one begins (default DefaultBlockBytes). A tile larger than it
	// still goes into one block.
	BlockBytes int64
	// BlockTiles is the tile count at which a block is sealed (default
	// DefaultBlockTiles).
	BlockTiles int
	// MaxTileBytes is the largest tile value accepted (default
	// DefaultMaxTileBytes).
	MaxTileBytes int
	// Sync is the durability policy (default SyncBatch).
	Sync SyncPolicy
	// Logger receives recovery and repair reports (nil: slog.Default()).
	Logger *slog.Logger
	// Observer, when set, receives the fsync latencies and group-commit
	// batch sizes of the store (see Observer); nil reports nothing.
	Observer Observer

	// fs is the file system the store changes its directory through
	// (nil: the real one). Tests inject full disks and power cuts here.
	fs fileSys
}

func (c *Config) normalize() error {
	if c.BlockBytes == 0 {
		c.BlockBytes = DefaultBlockBytes
	}
	if c.BlockTiles == 0 {
		c.BlockTiles = DefaultBlockTiles
	}
	if c.MaxTileBytes == 0 {
		c.MaxTileBytes = DefaultMaxTileBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.fs == nil {
		c.fs = osFS{}
	}
	c.fs = observe(c.fs, c.Observer)
	switch {
	case c.BlockBytes < 0:
		return fmt.Errorf("%w: BlockBytes %d", ErrInvalidArgument, c.BlockBytes)
	case c.BlockTiles < 0 || c.BlockTiles > 1<<26:
		return fmt.Errorf("%w: BlockTiles %d (want 1..%d)", ErrInvalidArgument, c.BlockTiles, 1<<26)
	case c.MaxTileBytes < 0 || c.MaxTileBytes > math.MaxInt32:
		return fmt.Errorf("%w: MaxTileBytes %d", ErrInvalidArgument, c.MaxTileBytes)
	case c.Sync < SyncBatch || c.Sync > SyncNone:
		return fmt.Errorf("%w: sync policy %d", ErrInvalidArgument, c.Sync)
	}
	return nil
}

// Names of the store's own files. Volume names never start with a dot, so
// these never collide with a volume.
const (
	lockName         = ".lock"
	appliedName      = ".applied"
	tmpPrefix        = ".tmp-"
	trashPrefix      = ".trash-"
	restoreReadyName = ".restore-ready"
	restoreManifest  = "MANIFEST"
	metaName         = "meta"
)

// Store is the file-backed LDM: each volume is a directory of blocks, each
// block a data file and a memory-mapped index file. See DESIGN.md.
//
// All methods are safe for concurrent use. Reads take no lock: they load an
// immutable view of the volume's committed blocks from an atomic pointer.
type Store struct {
	dir  string
	cfg  Config
	log  *slog.Logger
	lock *os.File
	fs   fileSys // cfg.fs

	// mu serializes changes to the set of volumes (create, delete,
	// restore, close) and snapshot capture.
	mu      sync.Mutex
	vols    atomic.Pointer[map[string]*volume]
	closed  atomic.Bool
	applied atomic.Uint64 // the durable marker's value
	syncMu  sync.Mutex    // serializes Sync
	// syncErr is the first failed fsync of a volume's files (by Sync, a
	// commit, a seal or a repair): sticky, see Sync.
	syncErr atomic.Pointer[error]
	seq     atomic.Uint64 // unique suffixes for temporary names
}

var _ LDM = (*Store)(nil)

// Open opens (creating if needed) the store in dir and recovers every
// volume: torn tails are cut back to the last durable tile and what was
// removed is logged. Only one Store may have dir open at a time
// (ErrLocked).
func Open(dir string, cfg Config) (*Store, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if err := cfg.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lf.Close()
		return nil, fmt.Errorf("storage: %s: %w (%v)", dir, ErrLocked, err)
	}
	s := &Store{dir: dir, cfg: cfg, log: cfg.Logger.With("component", "storage"), lock: lf, fs: cfg.fs}
	s.seq.Store(uint64(time.Now().UnixNano()))
	vols, err := s.load(true)
	if err != nil {
		lf.Close()
		return nil, err
	}
	s.vols.Store(&vols)
	return s, nil
}

// load finishes an interrupted restore, removes leftovers and opens every
// volume in s.dir. Staging directories (.tmp-*) are removed only at Open
// (removeTmp), since a live Restore may be staging another restore.
func (s *Store) load(removeTmp bool) (map[string]*volume, error) {
	if err := s.finishRestore(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	if b, err := os.ReadFile(filepath.Join(s.dir, appliedName)); err == nil {
		idx, err := decodeApplied(b)
		if err != nil {
			return nil, fmt.Errorf("storage: %s: %w", appliedName, err)
		}
		s.applied.Store(idx)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("storage: %w", err)
	}
	vols := map[string]*volume{}
	for _, e := range ents {
		name := e.Name()
		if (removeTmp && strings.HasPrefix(name, tmpPrefix)) || strings.HasPrefix(name, trashPrefix) {
			s.log.Info("removing leftover", "path", name)
			if err := s.fs.RemoveAll(filepath.Join(s.dir, name)); err != nil {
				return nil, fmt.Errorf("storage: %w", err)
			}
			continue
		}
		if !e.IsDir() || ValidateName(name) != nil {
			continue
		}
		v, err := openVolume(s, name, filepath.Join(s.dir, name))
		if err != nil {
			for _, v := range vols {
				v.close()
			}
			return nil, err
		}
		vols[name] = v
	}
	// A volume or applied marker that a crashed process renamed into
	// place without fsyncing the directory is visible now: make it
	// durable, so that it cannot vanish in a later power loss.
	if err := syncDir(s.fs, s.dir); err != nil {
		for _, v := range vols {
			v.close()
		}
		return nil, err
	}
	return vols, nil
}

func (s *Store) volumes() map[string]*volume { return *s.vols.Load() }

func (s *Store) lookup(name string) (*volume, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	v, ok := s.volumes()[name]
	if !ok {
		return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
	}
	return v, nil
}

// acquire looks up a volume and pins its files for a read; call release.
// A volume that Restore replaced between the lookup and the pin is looked
// up again: Restore publishes the new volume before it closes the old one.
func (s *Store) acquire(name string) (*volume, error) {
	for {
		v, err := s.lookup(name)
		if err != nil {
			return nil, err
		}
		if v.acquire() {
			return v, nil
		}
		if s.closed.Load() {
			return nil, ErrClosed
		}
		if !v.replaced.Load() {
			return nil, fmt.Errorf("volume %q: %w", name, ErrNotFound)
		}
	}
}

// setVolumes publishes a new volume map. Callers hold s.mu.
func (s *Store) setVolumes(m map[string]*volume) { s.vols.Store(&m) }

func (s *Store) tmpName(kind string) string {
	return fmt.Sprintf("%s%s-%d", tmpPrefix, kind, s.seq.Add(1))
}

// CreateVolume implements LDM. The volume directory is built under a
// temporary name and renamed into place, so a crash never leaves half a
// volume.
func (s *Store) CreateVolume(ctx context.Context, m VolumeMeta) (_ VolumeInfo, err error) {
	defer s.noSpace(&err, "create volume")
	if err := m.Normalize(); err != nil {
		return VolumeInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return VolumeInfo{}, err
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	m = m.clone()
	metaBytes, err := encodeMeta(m)
	if err != nil {
		return VolumeInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return VolumeInfo{}, ErrClosed
	}
	if _, ok := s.volumes()[m.Name]; ok {
		return VolumeInfo{}, fmt.Errorf("volume %q: %w", m.Name, ErrExists)
	}
	tmp := filepath.Join(s.dir, s.tmpName("create"))
	if err := buildVolumeDir(s.fs, tmp, metaBytes); err != nil {
		s.fs.RemoveAll(tmp)
		return VolumeInfo{}, err
	}
	final := filepath.Join(s.dir, m.Name)
	if err := s.fs.Rename(tmp, final); err != nil {
		s.fs.RemoveAll(tmp)
		return VolumeInfo{}, fmt.Errorf("storage: create %q: %w", m.Name, err)
	}
	if err := syncDir(s.fs, s.dir); err != nil {
		return VolumeInfo{}, err
	}
	v, err := openVolume(s, m.Name, final)
	if err != nil {
		return VolumeInfo{}, err
	}
	next := maps1(s.volumes())
	next[m.Name] = v
	s.setVolumes(next)
	return v.info(), nil
}

// buildVolumeDir writes a new volume directory: meta plus an empty first
// block, all fsynced.
func buildVolumeDir(fs fileSys, dir string, metaBytes []byte) error {
	if err := fs.Mkdir(dir); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := writeFileSync(fs, filepath.Join(dir, metaName), metaBytes); err != nil {
		return err
	}
	if err := createBlockFiles(fs, dir, 0); err != nil {
		return err
	}
	return syncDir(fs, dir)
}

func maps1(m map[string]*volume) map[string]*volume {
	out := make(map[string]*volume, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Volume implements LDM.
func (s *Store) Volume(name string) (VolumeInfo, error) {
	v, err := s.lookup(name)
	if err != nil {
		return VolumeInfo{}, err
	}
	return v.info(), nil
}

// Volumes implements LDM.
func (s *Store) Volumes() ([]VolumeInfo, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	vols := s.volumes()
	out := make([]VolumeInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, v.info())
	}
	slices.SortFunc(out, func(a, b VolumeInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// DeleteVolume implements LDM. The directory is renamed to a trash name
// (the commit point, made durable by fsyncing the store directory) and then
// removed; Open removes trash left by a crash.
func (s *Store) DeleteVolume(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.lookup(name)
	if err != nil {
		return err
	}
	trash := filepath.Join(s.dir, fmt.Sprintf("%s%s-%d", trashPrefix, name, s.seq.Add(1)))
	v.stopWrites()
	if err := s.fs.Rename(v.dir, trash); err != nil {
		err = fmt.Errorf("storage: delete %q: %w", name, err)
		v.resumeWrites(err)
		return err
	}
	next := maps1(s.volumes())
	delete(next, name)
	s.setVolumes(next)
	v.close()
	if err := syncDir(s.fs, s.dir); err != nil {
		return err
	}
	if err := s.fs.RemoveAll(trash); err != nil {
		s.log.Warn("removing deleted volume", "volume", name, "err", err)
	}
	return nil
}

// Append implements LDM.
func (s *Store) Append(ctx context.Context, name string, tiles ...Tile) (uint64, error) {
	return s.append(ctx, name, false, tiles)
}

// AppendDeferred is Append without waiting for the disk, whatever the sync
// policy: when it returns the tiles are written and readable, and a
// process crash loses none of them (the kernel holds them), but a machine
// crash may lose a tail of them until the next Sync makes them durable.
// Recovery keeps a prefix of each volume's log, so what survives a machine
// crash is every tile up to some offset, never a gap. A replication layer
// that keeps its own durable log (the Raft log) uses it and replays what
// Sync has not yet covered (see Sync and DurableIndex).
func (s *Store) AppendDeferred(ctx context.Context, name string, tiles ...Tile) (uint64, error) {
	return s.append(ctx, name, true, tiles)
}

func (s *Store) append(ctx context.Context, name string, deferred bool, tiles []Tile) (uint64, error) {
	sums := make([]uint32, len(tiles))
	for i := range tiles {
		if len(tiles[i].Value) > s.cfg.MaxTileBytes {
			return 0, fmt.Errorf("tile of %d bytes, limit %d: %w", len(tiles[i].Value), s.cfg.MaxTileBytes, ErrTooLarge)
		}
		sum := Checksum(tiles[i].Value)
		if tiles[i].CRC32C != 0 && tiles[i].CRC32C != sum {
			return 0, fmt.Errorf("tile crc32c %08x does not match its bytes (%08x): %w", tiles[i].CRC32C, sum, ErrCorrupt)
		}
		sums[i] = sum
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		v, err := s.lookup(name)
		if err != nil {
			return 0, err
		}
		if err := checkCodec(&v.meta, tiles); err != nil {
			return 0, err
		}
		first, err := v.append(tiles, sums, deferred)
		if errors.Is(err, errReplaced) && attempt < 3 {
			// Restore is swapping the volume (it holds s.mu until the new
			// one is published); nothing was acknowledged, so retry there.
			s.mu.Lock()
			s.mu.Unlock() //lint:ignore SA2001 taking and releasing s.mu waits for Restore to publish the new volume
			continue
		}
		return first, err
	}
}

// Read implements LDM. The value is read with one pread into a new buffer
// of the tile's length.
func (s *Store) Read(name string, offset uint64) (Tile, error) {
	v, err := s.acquire(name)
	if err != nil {
		return Tile{}, err
	}
	defer v.release()
	return v.read(v.state.Load(), offset, nil)
}

// ReadInto is Read with a caller-supplied buffer: the value is read into
// buf[:n] when cap(buf) is at least the tile's length n (no allocation),
// and into a new buffer otherwise. The returned Value aliases buf in the
// first case, so buf must not be reused while the tile is in use.
func (s *Store) ReadInto(name string, offset uint64, buf []byte) (Tile, error) {
	v, err := s.acquire(name)
	if err != nil {
		return Tile{}, err
	}
	defer v.release()
	return v.read(v.state.Load(), offset, buf)
}

// Brick implements LDM.
func (s *Store) Brick(name string, key BrickKey) (Tile, error) {
	v, err := s.acquire(name)
	if err != nil {
		return Tile{}, err
	}
	defer v.release()
	v.bmu.RLock()
	off, ok := v.bricks.get(key)
	v.bmu.RUnlock()
	if !ok {
		return Tile{}, fmt.Errorf("volume %q brick %+v: %w", name, key, ErrNotFound)
	}
	return v.read(v.state.Load(), off, nil)
}

// Bricks implements LDM.
func (s *Store) Bricks(name string, lod uint32) (map[BrickKey]uint64, error) {
	v, err := s.lookup(name)
	if err != nil {
		return nil, err
	}
	v.bmu.RLock()
	defer v.bmu.RUnlock()
	return v.bricks.level(lod), nil
}

// Wait implements LDM. It sleeps on a channel that the next commit closes,
// so an idle waiter costs nothing. If the volume is replaced by Restore the
// wait continues on the new volume.
func (s *Store) Wait(ctx context.Context, name string, offset uint64) error {
	for {
		v, err := s.lookup(name)
		if err != nil {
			return err
		}
		st := v.state.Load()
		if st.next > offset {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-st.changed:
		case <-v.gone:
		}
	}
}

// Close implements LDM. Waiters wake with ErrClosed; reads in progress
// finish before the files are closed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Swap(true) {
		return ErrClosed
	}
	for _, v := range s.volumes() {
		v.syncIndex()
		v.stopWrites()
		v.close()
	}
	return s.lock.Close()
}

// noSpace marks *errp as ErrNoSpace if ENOSPC or EDQUOT caused it, and
// logs it with its cause (which names a path the caller must not see).
func (s *Store) noSpace(errp *error, op string) {
	if *errp == nil {
		return
	}
	if err := classify(*errp); errors.Is(err, ErrNoSpace) {
		*errp = err
		s.log.Error(op+" failed: the file system is full", "err", err)
	}
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// AppliedIndex returns the highest replication index recoverable from the
// store: the largest tile Index of any volume, any VolumeMeta.Index and the
// marker last written by SetAppliedIndex.
func (s *Store) AppliedIndex() uint64 {
	idx := s.applied.Load()
	for _, v := range s.volumes() {
		idx = max(idx, v.meta.Index, v.state.Load().lastIndex)
	}
	return idx
}

// SetAppliedIndex durably records idx as applied (for replicated commands
// that write no tile, such as a delete). It writes a small marker file:
// tmp, fsync, rename, fsync directory. A smaller idx than the marker's is
// ignored.
func (s *Store) SetAppliedIndex(idx uint64) (err error) {
	defer s.noSpace(&err, "set applied index")
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if idx <= s.applied.Load() {
		return nil
	}
	if err := writeFileAtomic(s.fs, s.dir, appliedName, encodeApplied(idx)); err != nil {
		return err
	}
	s.applied.Store(idx)
	return nil
}

// Sync makes every tile appended so far durable (those of AppendDeferred
// included: the data and index files they dirtied are fdatasynced) and
// then records idx durably as DurableIndex, like SetAppliedIndex. The
// caller promises that every replicated command up to idx had been applied
// to the store before it called Sync. Appends go on while it fsyncs: it
// holds no volume's commit lock during the IO.
//
// A failed fsync is sticky: the kernel may have dropped the pages it could
// not write, so a later fsync proves nothing. That holds for any fsync of
// a volume's files, not only Sync's: an append's commit, the seal of a
// block by a deferred append, or the repair after a failed write (which
// would otherwise see its own fsync succeed, the error being reported
// once, while tiles published by deferred appends were lost). After any of
// them every later Sync returns the first failure and DurableIndex stops
// growing; reopening the store (a restart, which replays the replication
// log from DurableIndex) clears it.
func (s *Store) Sync(idx uint64) (err error) {
	defer s.noSpace(&err, "sync")
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.syncFailure(); err != nil {
		return err
	}
	if s.closed.Load() {
		return ErrClosed
	}
	for _, v := range s.volumes() {
		if !v.acquire() {
			continue // closed: deleted or replaced, nothing to keep
		}
		for _, f := range v.takeDirty() {
			if err := fdatasync(s.fs, f); err != nil {
				v.release()
				s.failSync(err)
				return s.syncFailure()
			}
		}
		// A commit's fsync of the same files may have consumed an error
		// (it is reported once); the commit records it before it releases
		// cmu, so wait for a commit in progress before looking.
		v.cmu.Lock()
		v.cmu.Unlock() //lint:ignore SA2001 taking and releasing cmu waits for a commit in progress
		v.release()
	}
	if err := s.syncFailure(); err != nil {
		return err
	}
	return s.SetAppliedIndex(idx)
}

// failSync records a failed fsync of a volume's files as the store's
// sticky sync failure (the first one is kept).
func (s *Store) failSync(err error) {
	err = classify(fmt.Errorf("storage: sync: %w (reopen the store to recover)", err))
	s.syncErr.CompareAndSwap(nil, &err)
}

// syncFailure returns the sticky sync failure, if any.
func (s *Store) syncFailure() error {
	if p := s.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// DurableIndex returns the replication index last recorded durably by
// Sync, SetAppliedIndex or Restore. Every command up to it is durable in
// the store; commands after it may be missing, partly present (a prefix of
// a volume's log survives a machine crash) or whole (a process crash keeps
// what the kernel holds). AppliedIndex, the largest index the store holds,
// is at least DurableIndex.
func (s *Store) DurableIndex() uint64 { return s.applied.Load() }
