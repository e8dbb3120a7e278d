package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/edsrzf/mmap-go"
)

// mfValue is the value of tile i in the tests of this file.
func mfValue(i uint64, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(i*131 + uint64(k)*29)
	}
	return b
}

// mfStore opens a store in dir with a volume "v" (created if missing).
func mfStore(t *testing.T, dir string, cfg Config) *Store {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Volume("v"); errors.Is(err, ErrNotFound) {
		if _, err := s.CreateVolume(context.Background(), VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func mfAppend(t *testing.T, s *Store, from, to uint64, n int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := s.Append(context.Background(), "v", Tile{Value: mfValue(i, n)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStore_ReadView_short_data_file: a data file that holds fewer bytes
// than its index describes never makes a view touch a page past its end
// (SIGBUS, fatal): the tiles past the end read as ErrCorrupt, by Read and
// by ReadView alike, and the rest of the store stays usable.
func TestStore_ReadView_short_data_file(t *testing.T) {
	t.Parallel()
	const tileLen = 16 << 10
	t.Run("sealed_block_cut_short_before_open", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := Config{BlockBytes: 64 << 10, Sync: SyncNone}
		s := mfStore(t, dir, cfg)
		mfAppend(t, s, 0, 12, tileLen)
		s.Close()
		if err := os.Truncate(filepath.Join(dir, "v", blockFileName(0, "data")), 4096); err != nil {
			t.Fatal(err)
		}
		s = mfStore(t, dir, cfg)
		v, err := s.lookup("v")
		if err != nil {
			t.Fatal(err)
		}
		if end := v.state.Load().blocks[0].end; end > 4096 {
			t.Fatalf("sealed block 0 has a committed end of %d bytes, past its 4096-byte data file", end)
		}
		corrupt := 0
		for off := range uint64(12) {
			_, rerr := s.Read("v", off)
			got, release, verr := s.ReadView("v", off)
			switch {
			case rerr == nil && verr == nil:
				if !bytes.Equal(got.Value, mfValue(off, tileLen)) {
					t.Fatalf("ReadView(%d): wrong bytes", off)
				}
				release()
			case errors.Is(rerr, ErrCorrupt) && errors.Is(verr, ErrCorrupt):
				corrupt++
			default:
				t.Fatalf("offset %d: Read = %v, ReadView = %v; want both to succeed or both ErrCorrupt", off, rerr, verr)
			}
		}
		if corrupt == 0 {
			t.Fatal("no tile of the cut block reads as corrupt")
		}
		mfAppend(t, s, 12, 14, tileLen)
		if got, release, err := s.ReadView("v", 13); err != nil || !bytes.Equal(got.Value, mfValue(13, tileLen)) {
			t.Fatalf("ReadView of a tile appended after recovery: %v", err)
		} else {
			release()
		}
	})
	t.Run("mapping_refuses_bytes_past_the_end", func(t *testing.T) {
		t.Parallel()
		p := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var m dataMap
		defer m.unmap()
		if _, err := m.mapped(f, 8192, 8192); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("mapping 8192 bytes of a 4096-byte file = %v, want ErrCorrupt", err)
		}
		if mm, err := m.mapped(f, 4096, 4096); err != nil || len(mm) < 4096 {
			t.Fatalf("mapping the whole file = %d bytes, %v", len(mm), err)
		}
	})
	t.Run("file_cut_after_it_was_mapped", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := mfStore(t, dir, Config{Sync: SyncNone})
		mfAppend(t, s, 0, 6, tileLen)
		_, release, err := s.ReadView("v", 0) // maps all six tiles
		if err != nil {
			t.Fatal(err)
		}
		release()
		// Something outside the store cuts the file.
		if err := os.Truncate(filepath.Join(dir, "v", blockFileName(0, "data")), 4096); err != nil {
			t.Fatal(err)
		}
		for off := uint64(1); off < 6; off++ {
			if _, _, err := s.ReadView("v", off); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadView(%d) of a tile cut off after mapping = %v, want ErrCorrupt", off, err)
			}
		}
	})
}

// TestStore_ReadView_mmap_failure: when the data file cannot be mapped
// (say the process has used up vm.max_map_count), a view is a copy of the
// sound data rather than an error.
func TestStore_ReadView_mmap_failure(t *testing.T) {
	// Not parallel: it replaces mapRegion for the package.
	orig := mapRegion
	mapRegion = func(*os.File, int, int, int, int64) (mmap.MMap, error) {
		return nil, &os.SyscallError{Syscall: "mmap", Err: syscall.ENOMEM}
	}
	defer func() { mapRegion = orig }()
	s := mfStore(t, t.TempDir(), Config{Sync: SyncNone})
	mfAppend(t, s, 0, 3, 1000)
	for off := range uint64(3) {
		got, release, err := s.ReadView("v", off)
		if err != nil {
			t.Fatalf("ReadView(%d) with mmap failing = %v, want a copy", off, err)
		}
		if !bytes.Equal(got.Value, mfValue(off, 1000)) {
			t.Fatalf("ReadView(%d): wrong bytes", off)
		}
		release()
	}
}
