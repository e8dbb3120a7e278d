package storage

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNoSpace: the file system holding the store is full (ENOSPC) or the
// user's quota is used up (EDQUOT). The write that met it left no trace:
// the volume takes writes again once space is freed. The wrapped cause
// names the file, for the server's log; do not show it to clients.
var ErrNoSpace = errors.New("no space left on the store's file system")

// noSpaceError is ErrNoSpace with the system error that caused it.
type noSpaceError struct{ cause error }

func (e *noSpaceError) Error() string        { return e.cause.Error() }
func (e *noSpaceError) Unwrap() error        { return e.cause }
func (e *noSpaceError) Is(target error) bool { return target == ErrNoSpace }

// classify marks an error caused by ENOSPC or EDQUOT as ErrNoSpace.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrNoSpace) {
		return err
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return &noSpaceError{cause: err}
	}
	return err
}

// fileSys is what the store does to its directory that changes it: create,
// write, truncate, rename, remove and sync. Reads (pread, the index
// mappings, directory listings) go to the *os.File and the os package
// directly, so the read path never pays for this indirection. Production
// uses osFS; tests substitute a layer that injects a full disk or
// simulates a power cut (it sees every fsync, so it knows what a machine
// that lost power would have kept).
type fileSys interface {
	// OpenFile opens a file for writing (flags as os.OpenFile).
	OpenFile(path string, flag int, perm os.FileMode) (*os.File, error)
	Mkdir(path string) error
	MkdirAll(path string) error
	Rename(from, to string) error
	Remove(path string) error
	RemoveAll(path string) error
	// Pwritev writes bufs at off, all of them or an error.
	Pwritev(f *os.File, bufs [][]byte, off int64) error
	Truncate(f *os.File, size int64) error
	// Sync is fsync, Datasync fdatasync.
	Sync(f *os.File) error
	Datasync(f *os.File) error
	// SyncDir fsyncs a directory, making its entries durable.
	SyncDir(path string) error
}

// osFS is the real file system.
type osFS struct{}

func (osFS) OpenFile(path string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(path, flag, perm)
}
func (osFS) Mkdir(path string) error      { return os.Mkdir(path, 0o755) }
func (osFS) MkdirAll(path string) error   { return os.MkdirAll(path, 0o755) }
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) Remove(path string) error     { return os.Remove(path) }
func (osFS) RemoveAll(path string) error  { return os.RemoveAll(path) }
func (osFS) Sync(f *os.File) error        { return f.Sync() }
func (osFS) Datasync(f *os.File) error    { return fdatasyncFile(f) }
func (osFS) Truncate(f *os.File, n int64) error {
	return f.Truncate(n)
}

func (osFS) Pwritev(f *os.File, bufs [][]byte, off int64) error { return pwritevFile(f, bufs, off) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// pwritevFile writes bufs at off in as few system calls as it can.
func pwritevFile(f *os.File, bufs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(bufs) > 0 {
		var n int
		var werr error
		if cerr := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), bufs, off)
			return !errors.Is(werr, unix.EAGAIN)
		}); cerr != nil {
			return cerr
		}
		if werr != nil {
			if errors.Is(werr, unix.EINTR) {
				continue
			}
			return &os.PathError{Op: "write", Path: f.Name(), Err: werr}
		}
		if n == 0 {
			return &os.PathError{Op: "write", Path: f.Name(), Err: io.ErrShortWrite}
		}
		off += int64(n)
		bufs = advanceBufs(bufs, n)
	}
	return nil
}

// advanceBufs drops the first n bytes of bufs.
func advanceBufs(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
		} else {
			bufs[0] = bufs[0][n:]
			n = 0
		}
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}

func fdatasyncFile(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// fsWriter writes sequentially to f through fs, from offset off.
type fsWriter struct {
	fs  fileSys
	f   *os.File
	off int64
}

func (w *fsWriter) Write(p []byte) (int, error) {
	if err := w.fs.Pwritev(w.f, [][]byte{p}, w.off); err != nil {
		return 0, err
	}
	w.off += int64(len(p))
	return len(p), nil
}

// Helpers that wrap the file system's errors the way the store reports
// them.

// writeFileSync creates path with b and fsyncs it.
func writeFileSync(fs fileSys, path string, b []byte) error {
	f, err := fs.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := fs.Pwritev(f, [][]byte{b}, 0); err != nil {
		f.Close()
		return fmt.Errorf("storage: %w", err)
	}
	if err := fs.Sync(f); err != nil {
		f.Close()
		return fmt.Errorf("storage: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// writeFileAtomic replaces dir/name with b: tmp, fsync, rename, fsync
// dir.
func writeFileAtomic(fs fileSys, dir, name string, b []byte) error {
	tmp := dir + string(os.PathSeparator) + name + ".tmp"
	if err := writeFileSync(fs, tmp, b); err != nil {
		return err
	}
	if err := fs.Rename(tmp, dir+string(os.PathSeparator)+name); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return syncDir(fs, dir)
}

func syncDir(fs fileSys, dir string) error {
	if err := fs.SyncDir(dir); err != nil {
		return fmt.Errorf("storage: fsync %s: %w", dir, err)
	}
	return nil
}

func fdatasync(fs fileSys, f *os.File) error {
	if err := fs.Datasync(f); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

func truncateSync(fs fileSys, f *os.File, size int64) error {
	if err := fs.Truncate(f, size); err != nil {
		return fmt.Errorf("storage: truncate %s: %w", f.Name(), err)
	}
	if err := fs.Sync(f); err != nil {
		return fmt.Errorf("storage: fsync %s: %w", f.Name(), err)
	}
	return nil
}
