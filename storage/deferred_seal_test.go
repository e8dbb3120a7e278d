package storage

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// orderFS is faultFS that records the order of data syncs and index
// writes, and can hold one fdatasync of a file until the test lets it go.
type orderFS struct {
	*faultFS

	mu       sync.Mutex
	events   []string // "sync NAME" after a successful fdatasync, "write NAME" before a write
	hold     string   // base name of the file whose next fdatasync is held
	entered  chan struct{}
	proceeds chan struct{}
}

func (o *orderFS) note(ev string) {
	o.mu.Lock()
	o.events = append(o.events, ev)
	o.mu.Unlock()
}

func (o *orderFS) Datasync(h *os.File) error {
	name := filepath.Base(h.Name())
	o.mu.Lock()
	held := o.hold != "" && o.hold == name
	if held {
		o.hold = ""
	}
	o.mu.Unlock()
	if held {
		close(o.entered)
		<-o.proceeds
	}
	err := o.faultFS.Datasync(h)
	if err == nil {
		o.note("sync " + name)
	}
	return err
}

func (o *orderFS) Sync(h *os.File) error { return o.Datasync(h) }

func (o *orderFS) Pwritev(h *os.File, bufs [][]byte, off int64) error {
	o.note("write " + filepath.Base(h.Name()))
	return o.faultFS.Pwritev(h, bufs, off)
}

// TestStore_AppendDeferred_seal_during_sync: a deferred append that seals
// a block while a Store.Sync is fsyncing that block's data (Sync has
// taken it from the dirty list) still makes the sealed block's data
// durable before it writes the next block's first index entry; otherwise
// a power cut could leave a sealed block whose index describes records its
// data file does not hold.
func TestStore_AppendDeferred_seal_during_sync(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "store")
	ofs := &orderFS{faultFS: newFaultFS(t, root), entered: make(chan struct{}), proceeds: make(chan struct{})}
	s, err := Open(root, Config{BlockTiles: 2, Logger: slog.New(slog.DiscardHandler), fs: ofs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 2; i++ { // block 0 is full
		if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(i), Index: i}); err != nil {
			t.Fatal(err)
		}
	}
	data0, index2 := blockFileName(0, "data"), blockFileName(2, "index")
	ofs.mu.Lock()
	ofs.hold = data0
	ofs.events = nil
	ofs.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- s.Sync(2) }()
	released := false
	defer func() {
		if !released { // a failure below: let Sync finish
			close(ofs.proceeds)
			<-errc
		}
	}()
	select {
	case <-ofs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("Sync did not fdatasync block 0's data within 10s")
	}
	// Sync now holds block 0's data out of the dirty list, unsynced. The
	// next append seals block 0 and starts block 2.
	if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(3), Index: 3}); err != nil {
		t.Fatal(err)
	}
	ofs.mu.Lock()
	events := slices.Clone(ofs.events)
	ofs.mu.Unlock()
	released = true
	close(ofs.proceeds)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	w := slices.Index(events, "write "+index2)
	if w < 0 {
		t.Fatalf("no write of %s: %v", index2, events)
	}
	if !slices.Contains(events[:w], "sync "+data0) {
		t.Fatalf("%s was written before %s was fdatasynced: %v", index2, data0, events[:w+1])
	}
}
