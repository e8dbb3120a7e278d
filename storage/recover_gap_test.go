package storage

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestOpen_gap_after_durable_index: a power cut after deferred appends can
// leave index entries on disk whose records were never written back (the
// page cache writes back out of order: a zero-filled gap in the data
// file). Recovery checks the records of the active block past
// DurableIndex whole and cuts the log at the first bad one, so the volume
// is a prefix of its log that reaches DurableIndex.
func TestOpen_gap_after_durable_index(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{Logger: slog.New(slog.DiscardHandler)}
	s, err := Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 6; i++ {
		if _, err := s.AppendDeferred(ctx, "v", Tile{Value: plValue(i + 10), Index: i}); err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			if err := s.Sync(3); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, err := s.lookup("v")
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.state.Load().blocks[0].entry(4) // Index 5, after the durable point
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // fsyncs the index, as writeback could have
		t.Fatal(err)
	}
	// The value of offset 4 never reached the disk: zeros.
	f, err := os.OpenFile(filepath.Join(dir, "v", blockFileName(0, "data")), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, e.Length), e.Pos+recordHeaderLen); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s2, err := Open(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	info, err := s2.Volume("v")
	if err != nil {
		t.Fatal(err)
	}
	if info.NextOffset != 4 {
		t.Fatalf("volume holds %d tiles after a gap at offset 4, want the 4 before it", info.NextOffset)
	}
	for off := range info.NextOffset {
		tl, err := s2.Read("v", off)
		if err != nil || !bytes.Equal(tl.Value, plValue(off+11)) {
			t.Fatalf("Read(%d) = %v", off, err)
		}
	}
	if d := s2.DurableIndex(); d != 3 {
		t.Fatalf("DurableIndex %d, want 3", d)
	}
	// Appends go on after the cut.
	if first, err := s2.AppendDeferred(ctx, "v", Tile{Value: plValue(15), Index: 5}); err != nil || first != 4 {
		t.Fatalf("append after recovery = offset %d, %v; want offset 4", first, err)
	}
}
