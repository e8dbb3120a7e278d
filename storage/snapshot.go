package storage

// Snapshot stream format. Integers are little-endian, checksums CRC-32C.
//
//	stream header, snapHeaderLen = 32 bytes:
//	  0  magic          8  "LDMSNAP\x00"
//	  8  version        4  snapVersion (1)
//	 12  reserved       4  zero
//	 16  applied index  8  AppliedIndex at capture
//	 24  reserved       4  zero
//	 28  header crc     4  CRC-32C of bytes 0..28
//	then frames, each:
//	  0  type           4  frameVolume, frameBlock or frameEnd
//	  4  reserved       4  zero
//	  8  payload length 8
//	 16  reserved       4  zero
//	 20  header crc     4  CRC-32C of bytes 0..20
//	 24  payload        payload length bytes
//	  …  payload crc    4  CRC-32C of the payload
//
// Payloads:
//
//	frameVolume: the volume's meta file, byte for byte. The blocks that
//	             follow, up to the next frameVolume, belong to it.
//	frameBlock:  base u64, data length u64, index length u64, then the
//	             first data-length bytes of the block's data file and the
//	             first index-length bytes of its index file (header plus
//	             the committed entries).
//	frameEnd:    volume count u32, block count u32, applied index u64.
//	             Nothing follows it.
//
// A restored block's files are byte-identical prefixes of the originals.

import (
	"bufio"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	snapHeaderLen   = 32
	snapMagicLen    = 8
	snapVersion     = 1
	frameHeaderLen  = 24
	blockPrefixLen  = 24 // base, data length, index length
	frameEndLen     = 16
	frameVolume     = 1
	frameBlock      = 2
	frameEnd        = 3
	snapCopyBufSize = 1 << 20
)

var snapMagic = [snapMagicLen]byte{'L', 'D', 'M', 'S', 'N', 'A', 'P', 0}

// Snapshot is a point-in-time copy of a Store that costs only open file
// handles: sealed blocks are immutable, and the active block is read only
// up to the length it had when the snapshot was taken. Deleting, sealing
// or restoring volumes meanwhile does not affect it, because it holds its
// own handles to the files. Call Release when done.
type Snapshot struct {
	applied uint64
	vols    []snapVolume

	mu       sync.Mutex
	released bool
}

type snapVolume struct {
	meta   []byte
	blocks []snapBlock
}

type snapBlock struct {
	base     uint64
	data     *os.File
	index    *os.File
	dataLen  int64 // committed bytes of the data file
	indexLen int64 // header plus committed entries of the index file
}

// Snapshot captures every volume's committed state. It holds the store
// lock only while it duplicates file handles; appends continue.
func (s *Store) Snapshot() (*Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrClosed
	}
	sn := &Snapshot{applied: s.applied.Load()}
	names := make([]string, 0, len(s.volumes()))
	for n := range s.volumes() {
		names = append(names, n)
	}
	slices.SortFunc(names, strings.Compare)
	for _, n := range names {
		v := s.volumes()[n]
		if !v.acquire() {
			continue
		}
		sv, lastIndex, err := v.capture()
		v.release()
		if err != nil {
			sn.Release()
			return nil, err
		}
		sn.applied = max(sn.applied, v.meta.Index, lastIndex)
		sn.vols = append(sn.vols, sv)
	}
	return sn, nil
}

// capture records the volume's committed blocks with duplicated handles
// and returns them with the largest tile replication index among them.
func (v *volume) capture() (snapVolume, uint64, error) {
	meta, err := encodeMeta(v.meta)
	if err != nil {
		return snapVolume{}, 0, err
	}
	sv := snapVolume{meta: meta}
	st := v.state.Load()
	for _, bv := range st.blocks {
		d, err := dupFile(bv.b.data)
		if err != nil {
			sv.release()
			return snapVolume{}, 0, err
		}
		x, err := dupFile(bv.b.index)
		if err != nil {
			d.Close()
			sv.release()
			return snapVolume{}, 0, err
		}
		sv.blocks = append(sv.blocks, snapBlock{
			base: bv.b.base, data: d, index: x,
			dataLen: bv.end, indexLen: indexHeaderLen + int64(bv.count)*indexEntryLen,
		})
	}
	return sv, st.lastIndex, nil
}

func (sv *snapVolume) release() {
	for _, b := range sv.blocks {
		b.data.Close()
		b.index.Close()
	}
	sv.blocks = nil
}

func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd int
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("storage: dup %s: %w", f.Name(), derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// AppliedIndex is the store's AppliedIndex at the time of the snapshot.
func (sn *Snapshot) AppliedIndex() uint64 { return sn.applied }

// Release closes the snapshot's file handles. It is safe to call twice.
func (sn *Snapshot) Release() {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.released {
		return
	}
	sn.released = true
	for i := range sn.vols {
		sn.vols[i].release()
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// WriteTo streams the snapshot in the format described at the top of
// snapshot.go. It may run while the store keeps appending, deleting or
// restoring; Release waits for a WriteTo in progress. It fails with
// ErrClosed after Release.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.released {
		return 0, fmt.Errorf("snapshot released: %w", ErrClosed)
	}
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	h := make([]byte, snapHeaderLen)
	copy(h, snapMagic[:])
	le.PutUint32(h[8:], snapVersion)
	le.PutUint64(h[16:], sn.applied)
	le.PutUint32(h[28:], Checksum(h[:28]))
	if _, err := bw.Write(h); err != nil {
		return cw.n, err
	}
	buf := make([]byte, snapCopyBufSize)
	var blocks uint32
	for _, sv := range sn.vols {
		if err := writeFrame(bw, frameVolume, int64(len(sv.meta)), func(fw io.Writer) error {
			_, err := fw.Write(sv.meta)
			return err
		}); err != nil {
			return cw.n, err
		}
		for _, b := range sv.blocks {
			blocks++
			n := blockPrefixLen + b.dataLen + b.indexLen
			if err := writeFrame(bw, frameBlock, n, func(fw io.Writer) error {
				p := make([]byte, blockPrefixLen)
				le.PutUint64(p[0:], b.base)
				le.PutUint64(p[8:], uint64(b.dataLen))
				le.PutUint64(p[16:], uint64(b.indexLen))
				if _, err := fw.Write(p); err != nil {
					return err
				}
				if err := copySection(fw, b.data, b.dataLen, buf); err != nil {
					return err
				}
				return copySection(fw, b.index, b.indexLen, buf)
			}); err != nil {
				return cw.n, err
			}
		}
	}
	end := make([]byte, frameEndLen)
	le.PutUint32(end[0:], uint32(len(sn.vols)))
	le.PutUint32(end[4:], blocks)
	le.PutUint64(end[8:], sn.applied)
	if err := writeFrame(bw, frameEnd, frameEndLen, func(fw io.Writer) error {
		_, err := fw.Write(end)
		return err
	}); err != nil {
		return cw.n, err
	}
	err := bw.Flush()
	return cw.n, err
}

func copySection(w io.Writer, f *os.File, n int64, buf []byte) error {
	r := io.NewSectionReader(f, 0, n)
	m, err := io.CopyBuffer(w, struct{ io.Reader }{r}, buf)
	if err != nil {
		return fmt.Errorf("storage: snapshot of %s: %w", f.Name(), err)
	}
	if m != n {
		return fmt.Errorf("storage: snapshot of %s: %d of %d bytes: %w", f.Name(), m, n, ErrCorrupt)
	}
	return nil
}

// writeFrame writes a frame header, the payload produced by body (exactly
// n bytes) and the payload checksum.
func writeFrame(w io.Writer, typ uint32, n int64, body func(io.Writer) error) error {
	h := make([]byte, frameHeaderLen)
	le.PutUint32(h[0:], typ)
	le.PutUint64(h[8:], uint64(n))
	le.PutUint32(h[20:], Checksum(h[:20]))
	if _, err := w.Write(h); err != nil {
		return err
	}
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: io.MultiWriter(w, crc)}
	if err := body(cw); err != nil {
		return err
	}
	if cw.n != n {
		return fmt.Errorf("storage: snapshot frame of %d bytes, announced %d", cw.n, n)
	}
	t := make([]byte, crcLen)
	le.PutUint32(t, crc.Sum32())
	_, err := w.Write(t)
	return err
}

// Restore replaces the whole store's contents with a snapshot read from r.
// The snapshot is written to a staging directory, checked and fsynced
// first; a damaged stream returns an error wrapping ErrCorrupt and leaves
// the store untouched. The swap then happens under the store lock: appends
// to replaced volumes wait and then see the new volume; reads in progress
// finish on the old files; waiters move to the new volume of the same name.
//
// An error after the commit point (the rename of the staging directory,
// reported as anything but ErrCorrupt or a read error) leaves writes
// stopped; Open finishes the swap, so the store should be reopened.
func (s *Store) Restore(r io.Reader) (err error) {
	defer s.noSpace(&err, "restore")
	if s.closed.Load() {
		return ErrClosed
	}
	staging := filepath.Join(s.dir, s.tmpName("restore"))
	if err := s.fs.Mkdir(staging); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			s.fs.RemoveAll(staging)
		}
	}()
	names, applied, err := readSnapshot(s.fs, bufio.NewReaderSize(r, snapCopyBufSize), staging)
	if err != nil {
		return err
	}
	// Check the staged volumes with the same recovery Open runs.
	for _, n := range names {
		v, err := openVolume(s, n, filepath.Join(staging, n))
		if err != nil {
			return fmt.Errorf("storage: restore: volume %q: %w", n, err)
		}
		v.stopWrites()
		v.close()
		if err := syncDir(s.fs, filepath.Join(staging, n)); err != nil {
			return err
		}
	}
	if err := writeFileSync(s.fs, filepath.Join(staging, appliedName), encodeApplied(applied)); err != nil {
		return err
	}
	if err := writeFileSync(s.fs, filepath.Join(staging, restoreManifest), []byte(strings.Join(names, "\n")+"\n")); err != nil {
		return err
	}
	if err := syncDir(s.fs, staging); err != nil {
		return err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	old := s.volumes()
	for _, v := range old {
		v.replaced.Store(true)
		v.stopWrites()
	}
	if err := s.fs.Rename(staging, filepath.Join(s.dir, restoreReadyName)); err != nil {
		err = fmt.Errorf("storage: restore: %w", err)
		for _, v := range old {
			v.replaced.Store(false)
			v.resumeWrites(err)
		}
		return err
	}
	ok = true
	if err := syncDir(s.fs, s.dir); err != nil {
		return err
	}
	// Committed: from here on Open would finish the swap.
	vols, err := s.load(false)
	if err != nil {
		return fmt.Errorf("storage: restore: %w", err)
	}
	s.setVolumes(vols)
	for _, v := range old {
		v.close()
	}
	return nil
}

// readSnapshot reads a snapshot stream into staging, one directory per
// volume, checking every checksum. It returns the volume names and the
// applied index.
func readSnapshot(fs fileSys, r io.Reader, staging string) ([]string, uint64, error) {
	corrupt := func(format string, a ...any) error {
		return fmt.Errorf("storage: snapshot: %s: %w", fmt.Sprintf(format, a...), ErrCorrupt)
	}
	h := make([]byte, snapHeaderLen)
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, 0, corrupt("header: %v", err)
	}
	if [snapMagicLen]byte(h[:snapMagicLen]) != snapMagic || le.Uint32(h[28:]) != Checksum(h[:28]) {
		return nil, 0, corrupt("bad header magic or checksum")
	}
	if v := le.Uint32(h[8:]); v != snapVersion {
		return nil, 0, corrupt("version %d", v)
	}
	applied := le.Uint64(h[16:])
	var names []string
	seen := map[string]bool{}
	var cur string // current volume directory
	var nextBase uint64
	var blocks uint32
	fh := make([]byte, frameHeaderLen)
	buf := make([]byte, snapCopyBufSize)
	for {
		if _, err := io.ReadFull(r, fh); err != nil {
			return nil, 0, corrupt("frame header: %v", err)
		}
		if le.Uint32(fh[20:]) != Checksum(fh[:20]) {
			return nil, 0, corrupt("frame header checksum")
		}
		typ, n := le.Uint32(fh[0:]), le.Uint64(fh[8:])
		crc := crc32.New(castagnoli)
		pr := io.TeeReader(io.LimitReader(r, int64(min(n, 1<<62))), crc)
		switch typ {
		case frameVolume:
			if n > metaHeaderLen+maxMetaPayload {
				return nil, 0, corrupt("volume frame of %d bytes", n)
			}
			mb := make([]byte, n)
			if _, err := io.ReadFull(pr, mb); err != nil {
				return nil, 0, corrupt("volume frame: %v", err)
			}
			if err := checkPayload(r, crc); err != nil {
				return nil, 0, err
			}
			m, err := decodeMeta(mb)
			if err != nil {
				return nil, 0, fmt.Errorf("storage: snapshot: %w", err)
			}
			if seen[m.Name] {
				return nil, 0, corrupt("volume %q twice", m.Name)
			}
			seen[m.Name] = true
			names = append(names, m.Name)
			cur = filepath.Join(staging, m.Name)
			nextBase = 0
			if err := fs.Mkdir(cur); err != nil {
				return nil, 0, fmt.Errorf("storage: %w", err)
			}
			if err := writeFileSync(fs, filepath.Join(cur, metaName), mb); err != nil {
				return nil, 0, err
			}
		case frameBlock:
			if cur == "" {
				return nil, 0, corrupt("block before any volume")
			}
			p := make([]byte, blockPrefixLen)
			if _, err := io.ReadFull(pr, p); err != nil {
				return nil, 0, corrupt("block frame: %v", err)
			}
			base, dl, il := le.Uint64(p[0:]), le.Uint64(p[8:]), le.Uint64(p[16:])
			if n < blockPrefixLen || dl < dataHeaderLen || il < indexHeaderLen || (il-indexHeaderLen)%indexEntryLen != 0 ||
				dl > 1<<50 || il > 1<<50 || dl+il != n-blockPrefixLen || base != nextBase {
				return nil, 0, corrupt("block frame: base %d (want %d), data %d, index %d, payload %d", base, nextBase, dl, il, n)
			}
			nextBase = base + (il-indexHeaderLen)/indexEntryLen
			if err := copyToFile(fs, filepath.Join(cur, blockFileName(base, "data")), pr, int64(dl), buf); err != nil {
				return nil, 0, err
			}
			if err := copyToFile(fs, filepath.Join(cur, blockFileName(base, "index")), pr, int64(il), buf); err != nil {
				return nil, 0, err
			}
			if err := checkPayload(r, crc); err != nil {
				return nil, 0, err
			}
			blocks++
		case frameEnd:
			if n != frameEndLen {
				return nil, 0, corrupt("end frame of %d bytes", n)
			}
			e := make([]byte, frameEndLen)
			if _, err := io.ReadFull(pr, e); err != nil {
				return nil, 0, corrupt("end frame: %v", err)
			}
			if err := checkPayload(r, crc); err != nil {
				return nil, 0, err
			}
			if int(le.Uint32(e[0:])) != len(names) || le.Uint32(e[4:]) != blocks || le.Uint64(e[8:]) != applied {
				return nil, 0, corrupt("end frame counts do not match the stream")
			}
			return names, applied, nil
		default:
			return nil, 0, corrupt("frame type %d", typ)
		}
	}
}

func checkPayload(r io.Reader, crc hash.Hash32) error {
	t := make([]byte, crcLen)
	if _, err := io.ReadFull(r, t); err != nil {
		return fmt.Errorf("storage: snapshot: payload checksum: %v: %w", err, ErrCorrupt)
	}
	if le.Uint32(t) != crc.Sum32() {
		return fmt.Errorf("storage: snapshot: payload checksum mismatch: %w", ErrCorrupt)
	}
	return nil
}

// copyToFile writes exactly n bytes from r to a new file at path and fsyncs
// it.
func copyToFile(fs fileSys, path string, r io.Reader, n int64, buf []byte) error {
	f, err := fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	defer f.Close()
	m, err := io.CopyBuffer(&fsWriter{fs: fs, f: f}, io.LimitReader(r, n), buf)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("storage: snapshot: %v: %w", err, ErrCorrupt)
		}
		return fmt.Errorf("storage: %w", err)
	}
	if m != n {
		return fmt.Errorf("storage: snapshot: stream ended after %d of %d bytes: %w", m, n, ErrCorrupt)
	}
	if err := fs.Sync(f); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return f.Close()
}
