package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

func testValue(i int) []byte {
	b := make([]byte, 50+i*13)
	for j := range b {
		b[j] = byte(i*31 + j)
	}
	return b
}

// fillStore writes n tiles (tile i is testValue(i), brick key X=i) to
// volume "v" and closes the store.
func fillStore(t *testing.T, dir string, cfg Config, n int) {
	t.Helper()
	fillStoreCfg(t, dir, cfg, n)
}

func fillStoreTB(tb testing.TB, dir string, n int) { fillStoreCfg(tb, dir, Config{}, n) }

func fillStoreCfg(t testing.TB, dir string, cfg Config, n int) {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(context.Background(), VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := s.Append(context.Background(), "v", Tile{Value: testValue(i), HasKey: true, Key: BrickKey{X: uint32(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// reopen opens dir, capturing the log, and checks that exactly want tiles
// survive, intact, and that the next append gets offset want.
func reopen(t *testing.T, dir string, cfg Config, want int) (*Store, string) {
	t.Helper()
	var logs testutil.SyncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatalf("Open after damage: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	info, err := s.Volume("v")
	if err != nil {
		t.Fatal(err)
	}
	if info.NextOffset != uint64(want) {
		t.Fatalf("after repair the volume has %d tiles, want %d\nlog:\n%s", info.NextOffset, want, logs.String())
	}
	for i := range want {
		got, err := s.Read("v", uint64(i))
		if err != nil || !bytes.Equal(got.Value, testValue(i)) {
			t.Fatalf("Read(%d) after repair: %v", i, err)
		}
	}
	if d, err := s.Verify(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("Verify after repair: %v %v", d, err)
	}
	off, err := s.Append(context.Background(), "v", Tile{Value: testValue(want)})
	if err != nil || off != uint64(want) {
		t.Fatalf("append after repair at %d, %v; want %d", off, err, want)
	}
	if got, err := s.Read("v", off); err != nil || !bytes.Equal(got.Value, testValue(want)) {
		t.Fatalf("read of the append after repair: %v", err)
	}
	return s, logs.String()
}

func lastBlock(t *testing.T, dir, ext string) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "v", "*."+ext))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s files: %v", ext, err)
	}
	return m[len(m)-1]
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func appendBytes(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestStore_TornTail(t *testing.T) {
	const n = 10
	cfg := Config{}
	cases := []struct {
		name    string
		damage  func(t *testing.T, dir string)
		want    int
		logWant string
	}{
		{"data_truncated_mid_tile", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "data")
			if err := os.Truncate(p, fileSize(t, p)-int64(len(testValue(n-1))/2)); err != nil {
				t.Fatal(err)
			}
		}, n - 1, "past the data file"},
		{"data_truncated_mid_header", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "data")
			if err := os.Truncate(p, fileSize(t, p)-int64(len(testValue(n-1)))-recordHeaderLen/2); err != nil {
				t.Fatal(err)
			}
		}, n - 1, "past the data file"},
		{"index_entry_past_end", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "data")
			e := make([]byte, indexEntryLen)
			putIndexEntry(e, indexEntry{Pos: fileSize(t, p), Length: 100, CRC: 1})
			appendBytes(t, lastBlock(t, dir, "index"), e)
		}, n, "past the data file"},
		{"garbage_after_last_tile", func(t *testing.T, dir string) {
			appendBytes(t, lastBlock(t, dir, "data"), bytes.Repeat([]byte{0xAB}, 777))
		}, n, "data_bytes_removed=777"},
		{"index_shorter_than_data", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "index")
			if err := os.Truncate(p, fileSize(t, p)-2*indexEntryLen); err != nil {
				t.Fatal(err)
			}
		}, n, "index_entries_rebuilt=2"},
		{"index_longer_than_data_partial_entry", func(t *testing.T, dir string) {
			appendBytes(t, lastBlock(t, dir, "index"), []byte("partial entry"))
		}, n, "partial index entry"},
		{"index_tail_entry_bad_checksum", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "index")
			flipByte(t, p, fileSize(t, p)-10)
		}, n, "index_entries_rebuilt=1"},
		{"zeroed_last_record", func(t *testing.T, dir string) {
			p := lastBlock(t, dir, "data")
			sz := fileSize(t, p)
			rec := int64(recordHeaderLen + len(testValue(n-1)))
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, rec), sz-rec); err != nil {
				t.Fatal(err)
			}
		}, n - 1, "record header of offset 9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			fillStore(t, dir, cfg, n)
			tc.damage(t, dir)
			_, logs := reopen(t, dir, cfg, tc.want)
			if !strings.Contains(logs, "repaired active block") || !strings.Contains(logs, tc.logWant) {
				t.Fatalf("repair log does not say what was cut (want %q):\n%s", tc.logWant, logs)
			}
		})
	}
}

func TestStore_TornRollover(t *testing.T) {
	t.Parallel()
	cfg := Config{BlockTiles: 4}
	t.Run("empty_last_block_removed", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 8) // blocks 0 and 4, both full
		// A crash right after the next block was created.
		if err := createBlockFiles(osFS{}, filepath.Join(dir, "v"), 8); err != nil {
			t.Fatal(err)
		}
		reopen(t, dir, cfg, 8)
	})
	t.Run("unwritten_index_of_new_block", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 10) // blocks 0, 4, 8 (2 tiles)
		// The last block's index entries never reached the disk; its
		// records did, so the entries are rebuilt from them.
		if err := os.Truncate(lastBlock(t, dir, "index"), indexHeaderLen); err != nil {
			t.Fatal(err)
		}
		_, logs := reopen(t, dir, cfg, 10)
		if !strings.Contains(logs, "index_entries_rebuilt=2") {
			t.Fatalf("log:\n%s", logs)
		}
	})
	t.Run("unwritten_new_block", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 10)
		// Neither the records nor the entries of the last block survived.
		if err := os.Truncate(lastBlock(t, dir, "index"), indexHeaderLen); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(lastBlock(t, dir, "data"), dataHeaderLen); err != nil {
			t.Fatal(err)
		}
		_, logs := reopen(t, dir, cfg, 8)
		if !strings.Contains(logs, "removing empty last block") {
			t.Fatalf("log:\n%s", logs)
		}
	})
	t.Run("missing_index_of_last_block", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 8)
		if err := os.Remove(lastBlock(t, dir, "index")); err != nil {
			t.Fatal(err)
		}
		_, logs := reopen(t, dir, cfg, 8)
		if !strings.Contains(logs, "recreating missing index file") || !strings.Contains(logs, "index_entries_rebuilt=4") {
			t.Fatalf("log:\n%s", logs)
		}
	})
	t.Run("rebuilt_index_larger_than_mapping", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, Config{BlockTiles: 100}, 6)
		if err := os.Truncate(lastBlock(t, dir, "index"), indexHeaderLen); err != nil {
			t.Fatal(err)
		}
		// Reopened with room for only 2 entries per block, the rebuild of
		// 6 must remap the index, and the next append starts a new block.
		small := Config{BlockTiles: 2}
		reopen(t, dir, small, 6)
		if _, err := os.Stat(filepath.Join(dir, "v", blockFileName(6, "data"))); err != nil {
			t.Fatalf("the append after the rebuild did not start a new block: %v", err)
		}
	})
	t.Run("sealed_block_short_index", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 10) // blocks 0, 4, 8
		// A crash after a rollover, before the commit that wrote the rest
		// of block 4's index: its records are all there.
		p := filepath.Join(dir, "v", blockFileName(4, "index"))
		if err := os.Truncate(p, fileSize(t, p)-2*indexEntryLen); err != nil {
			t.Fatal(err)
		}
		_, logs := reopen(t, dir, cfg, 10)
		if !strings.Contains(logs, "index_entries_rebuilt=2") {
			t.Fatalf("log:\n%s", logs)
		}
	})
	t.Run("sealed_block_short_data", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 10)
		// As above, and block 4's last record is torn too: nothing after
		// tile 6 can have been acknowledged, so block 8 goes.
		p := filepath.Join(dir, "v", blockFileName(4, "index"))
		if err := os.Truncate(p, fileSize(t, p)-2*indexEntryLen); err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, "v", blockFileName(4, "data"))
		if err := os.Truncate(d, fileSize(t, d)-5); err != nil {
			t.Fatal(err)
		}
		_, logs := reopen(t, dir, cfg, 7)
		if !strings.Contains(logs, "removing the blocks after it") {
			t.Fatalf("log:\n%s", logs)
		}
		if _, err := os.Stat(filepath.Join(dir, "v", blockFileName(8, "index"))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("block 8 survived: %v", err)
		}
	})
	t.Run("sealed_block_damaged_header", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 10)
		flipByte(t, filepath.Join(dir, "v", blockFileName(4, "data")), 9)
		_, err := Open(dir, Config{Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open with a damaged sealed data header = %v, want ErrCorrupt", err)
		}
	})
	t.Run("bad_meta", func(t *testing.T) {
		dir := t.TempDir()
		fillStore(t, dir, cfg, 1)
		flipByte(t, filepath.Join(dir, "v", metaName), 20)
		_, err := Open(dir, Config{Logger: slog.New(slog.DiscardHandler)})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open with damaged meta = %v, want ErrCorrupt", err)
		}
	})
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestStore_BitFlip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{BlockTiles: 8}
	fillStore(t, dir, cfg, 30)
	s, err := Open(dir, Config{BlockTiles: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, _ := s.lookup("v")
	st := v.state.Load()
	// Flip a value bit of tile 3 and an index bit of tile 13, both in
	// sealed blocks, while the store is open.
	e3, _ := st.blocks[0].b.entry(3)
	flipByte(t, filepath.Join(dir, "v", blockFileName(0, "data")), e3.Pos+recordHeaderLen+7)
	flipByte(t, filepath.Join(dir, "v", blockFileName(8, "index")), indexHeaderLen+5*indexEntryLen+2)
	// And a record header bit of tile 20: reads do not look at it, Verify does.
	e20, _ := st.blocks[2].b.entry(4)
	flipByte(t, filepath.Join(dir, "v", blockFileName(16, "data")), e20.Pos+1)

	for _, off := range []uint64{3, 13} {
		if _, err := s.Read("v", off); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Read(%d) of a flipped tile = %v, want ErrCorrupt", off, err)
		}
	}
	if _, err := s.Brick("v", BrickKey{X: 3}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Brick of a flipped tile = %v, want ErrCorrupt", err)
	}
	for i := range 30 {
		if i == 3 || i == 13 {
			continue
		}
		if got, err := s.Read("v", uint64(i)); err != nil || !bytes.Equal(got.Value, testValue(i)) {
			t.Fatalf("Read(%d) next to damage: %v", i, err)
		}
	}
	d, err := s.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var offs []uint64
	for _, x := range d {
		if !errors.Is(x.Err, ErrCorrupt) || x.Volume != "v" {
			t.Fatalf("damage report %v", x)
		}
		offs = append(offs, x.Offset)
	}
	if len(offs) != 3 || offs[0] != 3 || offs[1] != 13 || offs[2] != 20 {
		t.Fatalf("Verify reported %v, want [3 13 20]", d)
	}
	// After a reopen the damage is still reported, not repaired away.
	s.Close()
	s2, err := Open(dir, Config{BlockTiles: 8, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if d, _ := s2.Verify(context.Background()); len(d) != 3 {
		t.Fatalf("Verify after reopen: %v", d)
	}
}

// TestStore_EntryPastCommittedData rewrites an index entry of a sealed
// block with a length far past the block's data and a checksum that holds
// (a crafted snapshot, or damage the checksum misses): reading that tile
// fails with ErrCorrupt without allocating the length it claims, Verify
// reports it, and the other tiles read.
//
// Not parallel: it measures the process's allocations around one read.
func TestStore_EntryPastCommittedData(t *testing.T) {
	dir := t.TempDir()
	fillStore(t, dir, Config{BlockTiles: 4}, 8)
	idx := filepath.Join(dir, "v", blockFileName(0, "index"))
	b, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	at := indexHeaderLen + 1*indexEntryLen
	e, err := decodeIndexEntry(b[at : at+indexEntryLen])
	if err != nil {
		t.Fatal(err)
	}
	e.Length = 1 << 30
	putIndexEntry(b[at:at+indexEntryLen], e)
	if err := os.WriteFile(idx, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Config{BlockTiles: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = s.Read("v", 1)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read of a tile whose entry runs past the data: %v, want ErrCorrupt", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Fatalf("the failed read allocated %d bytes", n)
	}
	for _, off := range []uint64{0, 2, 3, 4, 7} {
		if got, err := s.Read("v", off); err != nil || !bytes.Equal(got.Value, testValue(int(off))) {
			t.Fatalf("Read(%d): %v", off, err)
		}
	}
	if d, err := s.Verify(context.Background()); err != nil || len(d) != 1 || d[0].Offset != 1 {
		t.Fatalf("Verify = %v, %v; want damage at offset 1", d, err)
	}
}

func TestStore_BadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Config{MaxTileBytes: 1000, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{1, 1, 1}, DataType: Uint8, Spacing: []float64{1, 1, nan()}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NaN spacing = %v, want ErrInvalidArgument", err)
	}
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "v", Tile{Value: make([]byte, 1001)}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized tile = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Append(cctx, "v", Tile{Value: []byte("x")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a cancelled context = %v", err)
	}
	if _, err := s.Read("v", 0); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Read(0) of empty = %v", err)
	}
	if _, err := s.VerifyVolume(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("VerifyVolume(nope) = %v", err)
	}
	// A volume directory name that is not a volume name is ignored by Open.
	if err := os.Mkdir(filepath.Join(dir, "Not-A-Volume"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Verify(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Verify after Close = %v", err)
	}
	s2, err := Open(dir, Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if vols, _ := s2.Volumes(); len(vols) != 1 {
		t.Fatalf("volumes = %v", vols)
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}
