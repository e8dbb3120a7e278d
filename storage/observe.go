package storage

import (
	"os"
	"strings"
	"time"
)

// Observer receives figures of a Store's commit path, for metrics. Its
// methods are called on the appenders' goroutines, with the volume's
// commit lock held: they must be cheap and must not block or call back
// into the store. Set it in Config.Observer.
type Observer interface {
	// Synced reports one fsync or fdatasync of a file of the store and
	// how long it took (err is its outcome).
	Synced(d time.Duration, err error)
	// IndexWritten reports one write of index entries: a group commit
	// writes the entries of the tiles it makes durable in one write per
	// block, so entries is the size of the commit's batch (in tiles)
	// within that block.
	IndexWritten(entries int)
}

// observedFS is a fileSys that reports fsyncs and index writes to an
// Observer and otherwise does what the file system it wraps does.
type observedFS struct {
	fileSys
	obs Observer
}

// observe returns fs reporting to obs, or fs itself when obs is nil.
func observe(fs fileSys, obs Observer) fileSys {
	if obs == nil {
		return fs
	}
	return observedFS{fs, obs}
}

func (o observedFS) Sync(f *os.File) error {
	start := time.Now()
	err := o.fileSys.Sync(f)
	o.obs.Synced(time.Since(start), err)
	return err
}

func (o observedFS) Datasync(f *os.File) error {
	start := time.Now()
	err := o.fileSys.Datasync(f)
	o.obs.Synced(time.Since(start), err)
	return err
}

func (o observedFS) Pwritev(f *os.File, bufs [][]byte, off int64) error {
	err := o.fileSys.Pwritev(f, bufs, off)
	if err == nil && strings.HasSuffix(f.Name(), ".index") {
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		if n%indexEntryLen == 0 {
			o.obs.IndexWritten(n / indexEntryLen)
		}
	}
	return err
}
