package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
)

// faultFS is the store's file system for tests. It passes every change
// through to the real files under root and can, in addition:
//
//   - run out of space: with a capacity set, a write that would grow the
//     files under root past it writes what fits and fails with ENOSPC, as
//     a full disk does; creating a file or directory on a full disk fails
//     too. Truncating or removing files frees space.
//   - lose power: it keeps what a machine would keep through a power cut,
//     each file's content at its last fsync (or fdatasync) and each
//     directory's entries at its last fsync, by inode, so a file renamed
//     or a directory moved after its fsync keeps what it had. Sync call
//     number cutAt cuts the power: the durable state is frozen at that
//     moment, and that and every later sync fail with EIO, as they would
//     on a dead machine, so nothing after the cut is acknowledged. image
//     writes the frozen state into a new directory for the next Open.
//
// Once the power is cut (or the process killed), every change fails with
// EIO too. It never calls the real fsync: the real files are scratch, the
// durability is simulated. Every inode it records is held open, so its
// number is not reused while the test runs.
type faultFS struct {
	root string

	mu       sync.Mutex
	capacity int64      // 0: unlimited
	syncs    int        // sync calls (file and directory) so far
	cutAt    int        // the sync call that cuts power (0: never)
	cut      bool       // the power is off; frozen holds what survived
	killOnly bool       // cutAt kills the process instead: syncs fail, nothing is frozen
	dead     bool       // syncs fail
	torn     *rand.Rand // non-nil: at the cut, unsynced writes may survive in part
	frozen   *imgNode
	files    map[uint64][]byte            // file inode -> content at its last sync
	dirs     map[uint64]map[string]uint64 // dir inode -> entries at its last sync
	isDir    map[uint64]bool
	held     map[uint64]*os.File
	rootIno  uint64
	noSpace  int // ENOSPC errors returned
	// failSync, if set, is asked before each file sync; an error it
	// returns is the sync's result (nothing is recorded as durable).
	failSync func(h *os.File) error
}

var errPowerCut = &os.PathError{Op: "fsync", Path: "(power cut)", Err: syscall.EIO}

// newFaultFS treats everything under root (created if needed) as durable.
func newFaultFS(tb testing.TB, root string) *faultFS {
	tb.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		tb.Fatal(err)
	}
	f := &faultFS{
		root:  root,
		files: map[uint64][]byte{},
		dirs:  map[uint64]map[string]uint64{},
		isDir: map[uint64]bool{},
		held:  map[uint64]*os.File{},
	}
	tb.Cleanup(f.close)
	var rec func(dir string) (uint64, error)
	rec = func(dir string) (uint64, error) {
		ino, err := f.recordDir(dir)
		if err != nil {
			return 0, err
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			if e.IsDir() {
				if _, err := rec(p); err != nil {
					return 0, err
				}
				continue
			}
			h, err := os.Open(p)
			if err != nil {
				return 0, err
			}
			if err := f.recordFile(h); err != nil {
				h.Close()
				return 0, err
			}
			h.Close()
		}
		return ino, nil
	}
	ino, err := rec(root)
	if err != nil {
		tb.Fatal(err)
	}
	f.rootIno = ino
	return f
}

func (f *faultFS) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.held {
		h.Close()
	}
	f.held = map[uint64]*os.File{}
}

func inodeOf(h *os.File) (uint64, error) {
	fi, err := h.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Sys().(*syscall.Stat_t).Ino, nil
}

// hold keeps an inode open (by reopening h read-only through /proc, which
// works for write-only handles too) and returns its number.
func (f *faultFS) hold(h *os.File) (uint64, error) {
	ino, err := inodeOf(h)
	if err != nil {
		return 0, err
	}
	if _, ok := f.held[ino]; !ok {
		var fd uintptr
		rc, err := h.SyscallConn()
		if err != nil {
			return 0, err
		}
		rc.Control(func(x uintptr) { fd = x })
		r, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", fd))
		if err != nil {
			return 0, err
		}
		f.held[ino] = r
	}
	return ino, nil
}

// recordFile makes h's current content its durable content.
func (f *faultFS) recordFile(h *os.File) error {
	ino, err := f.hold(h)
	if err != nil {
		return err
	}
	b, err := readAll(f.held[ino])
	if err != nil {
		return err
	}
	f.files[ino] = b
	f.isDir[ino] = false
	return nil
}

func readAll(h *os.File) ([]byte, error) {
	fi, err := h.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, fi.Size())
	if _, err := h.ReadAt(b, 0); err != nil && len(b) > 0 {
		return nil, err
	}
	return b, nil
}

// recordDir makes dir's current entries its durable entries.
func (f *faultFS) recordDir(dir string) (uint64, error) {
	d, err := os.Open(dir)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	ino, err := f.hold(d)
	if err != nil {
		return 0, err
	}
	f.isDir[ino] = true
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	m := map[string]uint64{}
	for _, e := range ents {
		h, err := os.Open(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		eino, err := f.hold(h)
		h.Close()
		if err != nil {
			return 0, err
		}
		if e.IsDir() {
			f.isDir[eino] = true
		}
		m[e.Name()] = eino
	}
	f.dirs[ino] = m
	return ino, nil
}

// syncPoint counts a sync call and cuts the power at cutAt. The caller
// holds mu.
func (f *faultFS) syncPoint() error {
	if f.dead {
		return errPowerCut
	}
	f.syncs++
	if f.cutAt > 0 && f.syncs >= f.cutAt {
		if !f.killOnly {
			f.frozen = f.snapshot()
			f.cut = true
		}
		f.dead = true
		return errPowerCut
	}
	return nil
}

// revive lets syncs succeed again after a process kill (killOnly): the
// next store that opens the directory is the restarted process, on a
// machine that kept running, so the page cache (the current files) and the
// durable state both carry over.
func (f *faultFS) revive() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut {
		panic("revive after a power cut")
	}
	f.dead, f.cutAt = false, 0
}

// imgNode is a file or directory of a frozen image.
type imgNode struct {
	dir  bool
	data []byte
	kids map[string]*imgNode
}

// snapshot builds the durable tree from the root. With torn set, a file
// whose current content extends its synced content keeps a random part of
// the unsynced tail (write-back got that far), and a file whose content
// was replaced keeps either version. The caller holds mu.
func (f *faultFS) snapshot() *imgNode {
	var build func(ino uint64, depth int) *imgNode
	build = func(ino uint64, depth int) *imgNode {
		if f.isDir[ino] {
			n := &imgNode{dir: true, kids: map[string]*imgNode{}}
			if depth > 16 {
				return n
			}
			for name, k := range f.dirs[ino] {
				n.kids[name] = build(k, depth+1)
			}
			return n
		}
		data := slices.Clone(f.files[ino])
		if f.torn != nil && f.torn.IntN(2) == 0 {
			if cur, err := readAll(f.held[ino]); err == nil {
				switch {
				case len(cur) > len(data) && bytes.Equal(cur[:len(data)], data):
					data = cur[:len(data)+f.torn.IntN(len(cur)-len(data)+1)]
				case !bytes.Equal(cur, data):
					data = cur
				}
			}
		}
		return &imgNode{data: data}
	}
	return build(f.rootIno, 0)
}

// cutNow cuts the power at once (if it is not cut yet).
func (f *faultFS) cutNow() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.cut {
		f.frozen = f.snapshot()
		f.cut, f.dead = true, true
	}
}

// image writes what survived the power cut (cutting it now if it was not
// cut yet) into dir, which must not exist.
func (f *faultFS) image(tb testing.TB, dir string) {
	tb.Helper()
	f.cutNow()
	var write func(n *imgNode, path string) error
	write = func(n *imgNode, path string) error {
		if !n.dir {
			return os.WriteFile(path, n.data, 0o644)
		}
		if err := os.Mkdir(path, 0o755); err != nil {
			return err
		}
		for name, k := range n.kids {
			if err := write(k, filepath.Join(path, name)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := write(f.frozen, dir); err != nil {
		tb.Fatal(err)
	}
}

func (f *faultFS) syncCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs
}

func (f *faultFS) setCapacity(n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.capacity = n
}

// usage is the bytes of regular files under root. The caller holds mu.
func (f *faultFS) usage() int64 {
	var n int64
	filepath.WalkDir(f.root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func (f *faultFS) full(path string) error {
	f.noSpace++
	return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
}

// gone fails every change once the power is cut or the process killed:
// a dead machine or process writes nothing more. The caller holds mu.
func (f *faultFS) gone(op, path string) error {
	if f.dead {
		return &os.PathError{Op: op, Path: path, Err: syscall.EIO}
	}
	return nil
}

func (f *faultFS) OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.gone("open", path); err != nil {
		return nil, err
	}
	if f.capacity > 0 && flag&os.O_CREATE != 0 && f.usage() >= f.capacity {
		if _, err := os.Stat(path); err != nil {
			return nil, f.full(path)
		}
	}
	return os.OpenFile(path, flag, perm)
}

func (f *faultFS) Mkdir(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.gone("mkdir", path); err != nil {
		return err
	}
	if f.capacity > 0 && f.usage() >= f.capacity {
		return f.full(path)
	}
	return os.Mkdir(path, 0o755)
}

// do runs a change unless the power is cut or the process killed.
func (f *faultFS) do(op, path string, fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.gone(op, path); err != nil {
		return err
	}
	return fn()
}

func (f *faultFS) MkdirAll(path string) error {
	return f.do("mkdir", path, func() error { return os.MkdirAll(path, 0o755) })
}

func (f *faultFS) Rename(from, to string) error {
	return f.do("rename", from, func() error { return os.Rename(from, to) })
}

func (f *faultFS) Remove(path string) error {
	return f.do("remove", path, func() error { return os.Remove(path) })
}

func (f *faultFS) RemoveAll(path string) error {
	return f.do("remove", path, func() error { return os.RemoveAll(path) })
}

func (f *faultFS) Truncate(h *os.File, n int64) error {
	return f.do("truncate", h.Name(), func() error { return h.Truncate(n) })
}

func (f *faultFS) Pwritev(h *os.File, bufs [][]byte, off int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.gone("write", h.Name()); err != nil {
		return err
	}
	if f.capacity > 0 {
		fi, err := h.Stat()
		if err != nil {
			return err
		}
		var total int64
		for _, b := range bufs {
			total += int64(len(b))
		}
		grow := max(0, off+total-fi.Size())
		if free := f.capacity - f.usage(); grow > free {
			// Write what fits, then fail, as a full disk does.
			n := min(total, max(0, fi.Size()+free-off))
			var part [][]byte
			for _, b := range bufs {
				if n == 0 {
					break
				}
				k := min(int64(len(b)), n)
				part = append(part, b[:k])
				n -= k
			}
			if len(part) > 0 {
				if err := pwritevFile(h, part, off); err != nil {
					return err
				}
			}
			return f.full(h.Name())
		}
	}
	return pwritevFile(h, slices.Clone(bufs), off)
}

func (f *faultFS) Sync(h *os.File) error { return f.Datasync(h) }

func (f *faultFS) Datasync(h *os.File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failSync != nil && !f.dead {
		if err := f.failSync(h); err != nil {
			return err
		}
	}
	if err := f.syncPoint(); err != nil {
		return err
	}
	return f.recordFile(h)
}

func (f *faultFS) SyncDir(dir string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.syncPoint(); err != nil {
		return err
	}
	_, err := f.recordDir(dir)
	return err
}

var _ fileSys = (*faultFS)(nil)
