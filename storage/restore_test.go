package storage

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestStore_RestoreInterrupted simulates a crash in the middle of the swap
// after the commit point: one staged volume has already been moved into
// place. Open must finish the swap.
func TestStore_RestoreInterrupted(t *testing.T) {
	t.Parallel()
	quiet := Config{Logger: slog.New(slog.DiscardHandler)}
	src, err := Open(t.TempDir(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, n := range []string{"a", "b"} {
		if _, err := src.CreateVolume(context.Background(), VolumeMeta{Name: n, Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Append(context.Background(), n, Tile{Value: []byte("new " + n), Index: 77}); err != nil {
			t.Fatal(err)
		}
	}
	snap := SnapshotBytes(t, src)

	dir := t.TempDir()
	dst, err := Open(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "old"} {
		if _, err := dst.CreateVolume(context.Background(), VolumeMeta{Name: n, Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		if _, err := dst.Append(context.Background(), n, Tile{Value: []byte("old " + n)}); err != nil {
			t.Fatal(err)
		}
	}
	dst.Close()

	// Stage and commit by hand, then do the first step of the swap for "b"
	// only: the old "a" is still in place.
	ready := filepath.Join(dir, restoreReadyName)
	if err := os.Mkdir(ready, 0o755); err != nil {
		t.Fatal(err)
	}
	names, applied, err := readSnapshot(osFS{}, bufio.NewReader(bytes.NewReader(snap)), ready)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ready, appliedName), encodeApplied(applied), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := ""
	for _, n := range names {
		manifest += n + "\n"
	}
	if err := os.WriteFile(filepath.Join(ready, restoreManifest), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(ready, "b"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}

	for round := range 2 { // the second Open finds nothing left to do
		s, err := Open(dir, quiet)
		if err != nil {
			t.Fatalf("Open #%d: %v", round, err)
		}
		for _, n := range []string{"a", "b"} {
			got, err := s.Read(n, 0)
			if err != nil || string(got.Value) != "new "+n {
				t.Fatalf("Open #%d: volume %s holds %q, %v", round, n, got.Value, err)
			}
		}
		if _, err := s.Volume("old"); err == nil {
			t.Fatalf("Open #%d: volume absent from the snapshot survived", round)
		}
		if s.AppliedIndex() != 77 {
			t.Fatalf("Open #%d: AppliedIndex %d", round, s.AppliedIndex())
		}
		if _, err := os.Stat(ready); !os.IsNotExist(err) {
			t.Fatalf("Open #%d: %s still exists", round, restoreReadyName)
		}
		s.Close()
	}
}
