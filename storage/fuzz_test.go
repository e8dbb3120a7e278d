package storage

import (
	"bytes"
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
	sn, err := s.Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	sn.Release()
	s.Close()
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:snapHeaderLen+frameHeaderLen])
	f.Fuzz(func(t *testing.T, b []byte) {
		staging := t.TempDir()
		names, _, err := readSnapshot(bytes.NewReader(b), staging)
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
