package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// seedBlock returns the data and index files of a small real block.
func seedBlock(tb testing.TB) (data, index []byte) {
	tb.Helper()
	dir := tb.TempDir()
	fillStoreTB(tb, dir, 5)
	d, err := os.ReadFile(filepath.Join(dir, "v", blockFileName(0, "data")))
	if err != nil {
		tb.Fatal(err)
	}
	x, err := os.ReadFile(filepath.Join(dir, "v", blockFileName(0, "index")))
	if err != nil {
		tb.Fatal(err)
	}
	return d, x
}

// fuzzDir returns a scratch directory for one fuzz input, on tmpfs
// (/dev/shm) where the machine has one. The code under test fsyncs every
// file it writes; on a disk that costs milliseconds per input, and the
// fuzzing engine, which re-runs an input hundreds of times to minimize it,
// then spends its whole budget minimizing one input.
func fuzzDir(tb testing.TB) string {
	tb.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "ldm-fuzz-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}

func FuzzDecodeIndexFile(f *testing.F) {
	_, x := seedBlock(f)
	f.Add(x)
	f.Add(x[:indexHeaderLen])
	f.Add(x[:len(x)-7])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, entries, err := decodeIndexFile(b)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if err == nil && len(entries) != (len(b)-indexHeaderLen)/indexEntryLen {
			t.Fatalf("%d entries from %d bytes without an error", len(entries), len(b))
		}
		// Every decoded entry encodes back to the same bytes.
		enc := make([]byte, indexEntryLen)
		for i, e := range entries {
			putIndexEntry(enc, e)
			at := indexHeaderLen + i*indexEntryLen
			if !bytes.Equal(enc, b[at:at+indexEntryLen]) {
				t.Fatalf("entry %d does not round-trip", i)
			}
		}
		if len(entries) > 0 && !bytes.Equal(encodeBlockHeader(magicIndex, h.Base), b[:indexHeaderLen]) {
			t.Fatal("header does not round-trip")
		}
	})
}

func FuzzDecodeDataFile(f *testing.F) {
	d, _ := seedBlock(f)
	f.Add(d)
	f.Add(d[:dataHeaderLen])
	f.Add(d[:len(d)-3])
	f.Add(append(bytes.Clone(d), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, recs, err := decodeDataFile(b)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		pos := dataHeaderLen
		rh := make([]byte, recordHeaderLen)
		for i, r := range recs {
			if r.Offset != h.Base+uint64(i) {
				t.Fatalf("record %d has offset %d", i, r.Offset)
			}
			putRecordHeader(rh, r)
			if !bytes.Equal(rh, b[pos:pos+recordHeaderLen]) {
				t.Fatalf("record %d header does not round-trip", i)
			}
			pos += recordHeaderLen + int(r.Length)
		}
		if err == nil && pos != len(b) {
			t.Fatalf("decoded %d of %d bytes without an error", pos, len(b))
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	m := VolumeMeta{Name: "seed", Shape: Shape{1, 2, 3}, DataType: Float32, Labels: map[string]string{"a": "b"}, Spacing: []float64{1, 2, 3}}
	if err := m.Normalize(); err != nil {
		f.Fatal(err)
	}
	b, err := encodeMeta(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(encodeApplied(42))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if ValidateName(m.Name) != nil {
			t.Fatalf("decoded an invalid name %q", m.Name)
		}
		if _, err := decodeApplied(b); err == nil {
			t.Fatal("bytes decode as both meta and applied marker")
		}
	})
}

// FuzzReadSnapshot feeds arbitrary streams to the snapshot decoder that
// Restore uses: it must fail with ErrCorrupt (or an I/O error) and never
// panic or accept a stream whose checksums do not hold.
func FuzzReadSnapshot(f *testing.F) {
	dir := f.TempDir()
	fillStoreTB(f, dir, 3)
	s, err := Open(dir, Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	snap := SnapshotBytes(f, s)
	s.Close()
	f.Add(snap)
	f.Add(snap[:snapHeaderLen+frameHeaderLen])
	f.Fuzz(func(t *testing.T, b []byte) {
		staging := fuzzDir(t)
		names, _, err := readSnapshot(osFS{}, bytes.NewReader(b), staging)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		for _, n := range names {
			if ValidateName(n) != nil {
				t.Fatalf("accepted volume name %q", n)
			}
		}
	})
}

// FuzzRecoverBlock feeds arbitrary data and index files to the recovery
// that Open runs on a volume's active block (recoverActive, scanRecords):
// the decoders of on-disk data that production uses. Open must either fail
// with ErrCorrupt or succeed with a log whose every tile reads back or
// fails with ErrCorrupt where Verify reports damage, that takes an
// append at the next offset, and that a second Open finds unchanged.
func FuzzRecoverBlock(f *testing.F) {
	d, x := seedBlock(f)
	f.Add(d, x)
	f.Add(d, x[:indexHeaderLen])
	f.Add(d[:len(d)-3], x)
	f.Add(d, x[:len(x)-7])
	f.Add(append(bytes.Clone(d), 1, 2, 3), x)
	f.Add(d[:dataHeaderLen], x)
	f.Fuzz(func(t *testing.T, data, index []byte) {
		dir := fuzzDir(t)
		vdir := filepath.Join(dir, "v")
		meta, err := encodeMeta(VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8, LODCount: 1, BrickShape: Shape{8, 8, 8}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(vdir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{metaName: meta, blockFileName(0, "data"): data, blockFileName(0, "index"): index} {
			if err := os.WriteFile(filepath.Join(vdir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg := Config{BlockTiles: 64, Sync: SyncNone, Logger: slog.New(slog.DiscardHandler)}
		s, err := Open(dir, cfg)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v does not wrap ErrCorrupt", err)
			}
			return
		}
		info, err := s.Volume("v")
		if err != nil {
			t.Fatal(err)
		}
		// Damage inside the indexed part of the block is reported, not cut
		// (cutting it would drop the tiles after it): such a tile reads as
		// ErrCorrupt and Verify lists it.
		var bad []uint64
		for off := range info.NextOffset {
			if _, err := s.Read("v", off); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("recovered tile %d: %v does not wrap ErrCorrupt", off, err)
				}
				bad = append(bad, off)
			}
		}
		// Verify also reports a damaged record header whose value still
		// reads back whole, so it may list more than the failed reads.
		dmg, err := s.Verify(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		reported := map[uint64]bool{}
		for _, d := range dmg {
			reported[d.Offset] = true
		}
		for _, off := range bad {
			if !reported[off] {
				t.Fatalf("tile %d reads as corrupt but Verify reports only %v", off, dmg)
			}
		}
		off, err := s.Append(context.Background(), "v", Tile{Value: []byte("after")})
		if err != nil || off != info.NextOffset {
			t.Fatalf("append after recovery at %d, %v; want %d", off, err, info.NextOffset)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, err = Open(dir, cfg)
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s.Close()
		if info2, err := s.Volume("v"); err != nil || info2.NextOffset != info.NextOffset+1 {
			t.Fatalf("second Open: %d tiles, %v; want %d", info2.NextOffset, err, info.NextOffset+1)
		}
		if got, err := s.Read("v", off); err != nil || string(got.Value) != "after" {
			t.Fatalf("second Open: tile %d = %q, %v", off, got.Value, err)
		}
	})
}
