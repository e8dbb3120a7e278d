package storage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

// firstValueAt is the byte position of a block's first tile value in its
// data file: the 32-byte file header and the 48-byte record header.
const firstValueAt = 32 + 48

// flipFileByte flips one bit of the byte at at in path, as damage on disk.
func flipFileByte(tb testing.TB, path string, at int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		tb.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		tb.Fatal(err)
	}
}

func TestStore_ReadView(t *testing.T) {
	t.Parallel()
	t.Run("same_as_read_across_blocks_and_growth", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, t.TempDir(), storage.Config{Sync: storage.SyncNone, BlockTiles: 8})
		create(t, s, "v")
		const n = 4 << 10
		for round := range 5 {
			// Each round appends to the active block after earlier views
			// mapped it, so the mapping must grow.
			for i := range 5 {
				seed := uint64(round*5 + i)
				appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(seed, n+int(seed)), HasKey: true, Key: storage.BrickKey{X: uint32(seed)}})
			}
			for off := range uint64(round*5 + 5) {
				want, err := s.Read("v", off)
				if err != nil {
					t.Fatal(err)
				}
				got, release, err := s.ReadView("v", off)
				if err != nil {
					t.Fatalf("ReadView(%d): %v", off, err)
				}
				if !bytes.Equal(got.Value, want.Value) || got.Offset != want.Offset || got.CRC32C != want.CRC32C || got.HasKey != want.HasKey || got.Key != want.Key {
					t.Fatalf("ReadView(%d) = %+v (%d bytes), want %+v", off, got.Key, len(got.Value), want.Key)
				}
				release()
			}
		}
		got, release, err := s.BrickView("v", storage.BrickKey{X: 7})
		if err != nil || got.Offset != 7 {
			t.Fatalf("BrickView = offset %d, %v; want offset 7", got.Offset, err)
		}
		release()
	})
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, t.TempDir(), storage.Config{Sync: storage.SyncNone})
		create(t, s, "v")
		appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(1, 100)})
		if _, _, err := s.ReadView("v", 1); !errors.Is(err, storage.ErrOutOfRange) {
			t.Fatalf("ReadView past the end = %v, want ErrOutOfRange", err)
		}
		if _, _, err := s.ReadView("nope", 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("ReadView of a missing volume = %v, want ErrNotFound", err)
		}
		if _, _, err := s.BrickView("v", storage.BrickKey{X: 1}); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("BrickView of a missing brick = %v, want ErrNotFound", err)
		}
	})
	t.Run("damage_before_first_read_is_corrupt", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := openStore(t, dir, storage.Config{Sync: storage.SyncNone})
		create(t, s, "v")
		appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(1, 1000)})
		flipFileByte(t, filepath.Join(dir, "v", "00000000000000000000.data"), firstValueAt+500)
		for range 2 { // and again: a failed check is not remembered as passed
			if _, _, err := s.ReadView("v", 0); !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("ReadView of a damaged tile = %v, want ErrCorrupt", err)
			}
		}
	})
	t.Run("damage_after_a_read_is_corrupt_once_verify_finds_it", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := openStore(t, dir, storage.Config{Sync: storage.SyncNone})
		create(t, s, "v")
		appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(1, 1000)}, storage.Tile{Value: ldmtest.Value(2, 1000)})
		for off := range uint64(2) {
			_, release, err := s.ReadView("v", off)
			if err != nil {
				t.Fatal(err)
			}
			release()
		}
		flipFileByte(t, filepath.Join(dir, "v", "00000000000000000000.data"), firstValueAt+10)
		damage, err := s.Verify(context.Background())
		if err != nil || len(damage) != 1 || damage[0].Offset != 0 {
			t.Fatalf("Verify = %v, %v; want the damage of offset 0", damage, err)
		}
		if _, _, err := s.ReadView("v", 0); !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("ReadView after Verify found damage = %v, want ErrCorrupt", err)
		}
		if _, release, err := s.ReadView("v", 1); err != nil {
			t.Fatalf("ReadView of the sound tile: %v", err)
		} else {
			release()
		}
	})
	t.Run("concurrent_views_appends_and_delete", func(t *testing.T) {
		t.Parallel()
		s := openStore(t, t.TempDir(), storage.Config{Sync: storage.SyncNone, BlockTiles: 4})
		create(t, s, "v")
		appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(0, 3000)})
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := range 40 {
				appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(uint64(i+1), 3000)})
			}
		})
		for range 4 {
			wg.Go(func() {
				for i := range 200 {
					off := uint64(i % 41)
					got, release, err := s.ReadView("v", off)
					if errors.Is(err, storage.ErrOutOfRange) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if !bytes.Equal(got.Value, ldmtest.Value(off, 3000)) {
						t.Errorf("ReadView(%d): wrong bytes", off)
					}
					release()
				}
			})
		}
		wg.Wait()
		// A view outlives the deletion of its volume: the files stay
		// mapped until it is released.
		got, release, err := s.ReadView("v", 40)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteVolume(context.Background(), "v"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Value, ldmtest.Value(40, 3000)) {
			t.Fatal("a view's bytes changed after the volume was deleted")
		}
		release()
	})
}
