package storage

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestStore_Sync_after_failed_seal_fsync: a failed fdatasync while a
// deferred append seals a block is sticky: the kernel may have dropped the
// pages of tiles that were published, and the repair's own fsync succeeds
// (the error is reported once), so every later Sync fails and DurableIndex
// stays where it was.
func TestStore_Sync_after_failed_seal_fsync(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	s, err := Open(root, Config{BlockTiles: 2, Logger: slog.New(slog.DiscardHandler), fs: ffs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 2; i++ {
		if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(i), Index: i}); err != nil {
			t.Fatal(err)
		}
	}
	data0 := blockFileName(0, "data")
	failed := 0
	ffs.mu.Lock()
	ffs.failSync = func(h *os.File) error {
		if failed == 0 && filepath.Base(h.Name()) == data0 {
			failed++
			return &os.PathError{Op: "fdatasync", Path: h.Name(), Err: syscall.EIO}
		}
		return nil
	}
	ffs.mu.Unlock()
	if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(3), Index: 3}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("append that seals block 0 = %v, want EIO", err)
	}
	ffs.mu.Lock()
	n := failed
	ffs.mu.Unlock()
	if n != 1 {
		t.Fatalf("the seal made %d failing fdatasyncs of block 0's data, want 1", n)
	}
	// The volume repairs itself and takes appends again.
	if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(4), Index: 4}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := s.Sync(4); !errors.Is(err, syscall.EIO) {
			t.Fatalf("Sync %d after a failed seal fsync = %v, want the EIO", i, err)
		}
	}
	if d := s.DurableIndex(); d != 0 {
		t.Fatalf("DurableIndex %d after a failed fsync, want 0", d)
	}
}
