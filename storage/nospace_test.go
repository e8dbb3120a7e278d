package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// fullDiskValue is tile i's value in the full-disk test: 1 to 5 KiB, so
// appends meet the full disk inside a record, at a record boundary and at
// a rollover (16 KiB blocks).
func fullDiskValue(i int) []byte {
	b := make([]byte, 1024+(i*977)%4096)
	for j := range b {
		b[j] = byte(i*131 + j*7)
	}
	return b
}

// TestStore_FullDisk fills the file system under a store until appends fail
// with ENOSPC: the error is ErrNoSpace (its cause, with the file's path,
// goes to the log), every acknowledged tile reads back, nothing else is
// visible or left in the data file, and once space is freed the next
// append succeeds without a reopen. Each cycle stops the disk at a
// different point (inside a record, at a rollover, with concurrent
// appenders); the reopen at the end sees the same tiles.
func TestStore_FullDisk(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncBatch, SyncAlways} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			testFullDisk(t, policy)
		})
	}
}

func testFullDisk(t *testing.T, policy SyncPolicy) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	var logs testutil.SyncBuffer
	cfg := Config{BlockBytes: 16 << 10, Sync: policy, Logger: slog.New(slog.NewTextHandler(&logs, nil)), fs: ffs}
	s, err := Open(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	for _, name := range []string{"v", "filler"} {
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: name, Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if _, err := s.Append(ctx, "filler", Tile{Value: fullDiskValue(i)}); err != nil {
			t.Fatal(err)
		}
	}

	var mu sync.Mutex
	acked := map[uint64]int{} // offset -> value number
	next := 0                 // next value number
	appendOne := func(batch int) error {
		mu.Lock()
		first := next
		next += batch
		mu.Unlock()
		tiles := make([]Tile, batch)
		for k := range tiles {
			tiles[k] = Tile{Value: fullDiskValue(first + k), HasKey: true, Key: BrickKey{X: uint32(first + k)}}
		}
		off, err := s.Append(ctx, "v", tiles...)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for k := range tiles {
			if prev, ok := acked[off+uint64(k)]; ok {
				t.Errorf("offset %d acknowledged twice (values %d and %d)", off+uint64(k), prev, first+k)
			}
			acked[off+uint64(k)] = first + k
		}
		return nil
	}
	// fill appends until the disk is full; it returns the error that
	// stopped each appender.
	fill := func(appenders int) []error {
		errs := make([]error, appenders)
		var wg sync.WaitGroup
		for a := range appenders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 400 {
					if err := appendOne(1 + (i+a)%3); err != nil {
						errs[a] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		return errs
	}
	// check: exactly the acknowledged tiles are visible, whole, and the
	// data file ends at the last of them.
	check := func(s *Store, when string) {
		t.Helper()
		info, err := s.Volume("v")
		if err != nil {
			t.Fatal(err)
		}
		if info.NextOffset != uint64(len(acked)) {
			t.Fatalf("%s: volume has %d tiles, %d were acknowledged", when, info.NextOffset, len(acked))
		}
		for off, i := range acked {
			got, err := s.Read("v", off)
			if err != nil || !bytes.Equal(got.Value, fullDiskValue(i)) {
				t.Fatalf("%s: Read(%d) = %d bytes, %v; want value %d", when, off, len(got.Value), err, i)
			}
		}
		if _, err := s.Read("v", info.NextOffset); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("%s: Read past the end: %v", when, err)
		}
		if d, err := s.Verify(ctx); err != nil || len(d) != 0 {
			t.Fatalf("%s: Verify: %v, %v", when, d, err)
		}
		v := s.volumes()["v"]
		st := v.state.Load()
		last := st.blocks[len(st.blocks)-1]
		fi, err := last.b.data.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != last.end {
			t.Fatalf("%s: the active data file has %d bytes, the committed tiles end at %d", when, fi.Size(), last.end)
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, "v"))
		if err != nil {
			t.Fatal(err)
		}
		if want := 2*len(st.blocks) + 1; len(ents) != want {
			t.Fatalf("%s: volume directory holds %d files, want %d (meta and %d blocks)", when, len(ents), want, len(st.blocks))
		}
	}
	wantNoSpace := func(err error, what string) {
		t.Helper()
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s on a full disk: %v, want ErrNoSpace wrapping ENOSPC", what, err)
		}
	}

	for cycle, c := range []struct {
		room      int64 // free bytes when the cycle starts
		appenders int
		free      func()
	}{
		// Space comes back by deleting another volume.
		{room: 9 << 10, appenders: 1, free: func() {
			if err := s.DeleteVolume(ctx, "filler"); err != nil {
				t.Fatalf("DeleteVolume on a full disk: %v", err)
			}
		}},
		{room: 23 << 10, appenders: 1},
		{room: 40 << 10, appenders: 3},
		{room: 61 << 10, appenders: 2},
	} {
		ffs.mu.Lock()
		used := ffs.usage()
		ffs.mu.Unlock()
		ffs.setCapacity(used + c.room)
		for a, err := range fill(c.appenders) {
			if err == nil {
				t.Fatalf("cycle %d: appender %d never met the full disk", cycle, a)
			}
			wantNoSpace(err, fmt.Sprintf("cycle %d: append", cycle))
		}
		check(s, fmt.Sprintf("cycle %d, disk full", cycle))
		// The repair freed what the failed write had taken; with no room
		// at all, appends keep failing the same way, and so does creating
		// a volume, which leaves nothing behind.
		ffs.mu.Lock()
		ffs.capacity = ffs.usage()
		ffs.mu.Unlock()
		wantNoSpace(appendOne(2), "a second append")
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: fmt.Sprintf("new%d", cycle), Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
			wantNoSpace(err, "CreateVolume")
		}
		check(s, fmt.Sprintf("cycle %d, after more failures", cycle))
		if c.free != nil {
			c.free()
		}
		ffs.setCapacity(0)
		if err := appendOne(2); err != nil {
			t.Fatalf("cycle %d: append after space was freed: %v", cycle, err)
		}
		check(s, fmt.Sprintf("cycle %d, space freed", cycle))
	}
	if !strings.Contains(logs.String(), "no space left on device") || !strings.Contains(logs.String(), root) {
		t.Fatalf("the log does not carry the cause with its path:\n%s", logs.String())
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Fatalf("a failed CreateVolume left %s behind", e.Name())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(root, Config{BlockBytes: 16 << 10, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	check(s, "reopened")
}

// TestStore_FailedCommit fails some fdatasyncs of the data files with
// EDQUOT (a quota, or a file system that reports a full disk at writeback)
// while four appenders share group commits: every appender whose tiles
// were in a failed commit gets ErrNoSpace, the others succeed, exactly the
// acknowledged tiles are visible (once each), and so after a reopen.
func TestStore_FailedCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	cfg := Config{BlockBytes: 16 << 10, Logger: slog.New(slog.DiscardHandler), fs: ffs}
	s, err := Open(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	syncs, failed := 0, 0
	ffs.failSync = func(h *os.File) error {
		if !strings.HasSuffix(h.Name(), ".data") {
			return nil
		}
		syncs++
		if syncs%4 != 0 {
			return nil
		}
		failed++
		return &os.PathError{Op: "fdatasync", Path: h.Name(), Err: syscall.EDQUOT}
	}
	var mu sync.Mutex
	acked := map[uint64]int{}
	refused := 0
	var wg sync.WaitGroup
	for a := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				n := a*1000 + i
				off, err := s.Append(ctx, "v", Tile{Value: fullDiskValue(n)})
				mu.Lock()
				switch {
				case err == nil:
					if prev, ok := acked[off]; ok {
						t.Errorf("offset %d acknowledged twice (values %d and %d)", off, prev, n)
					}
					acked[off] = n
				case errors.Is(err, ErrNoSpace) && errors.Is(err, syscall.EDQUOT):
					refused++
				default:
					t.Errorf("append: %v, want ErrNoSpace wrapping EDQUOT", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed == 0 || refused == 0 {
		t.Fatalf("%d failed syncs, %d refused appends: the test did not fail a commit", failed, refused)
	}
	check := func(s *Store, when string) {
		t.Helper()
		info, err := s.Volume("v")
		if err != nil {
			t.Fatal(err)
		}
		if info.NextOffset != uint64(len(acked)) {
			t.Fatalf("%s: %d tiles visible, %d acknowledged (%d refused)", when, info.NextOffset, len(acked), refused)
		}
		for off, n := range acked {
			if got, err := s.Read("v", off); err != nil || !bytes.Equal(got.Value, fullDiskValue(n)) {
				t.Fatalf("%s: Read(%d): %v", when, off, err)
			}
		}
		if d, err := s.Verify(ctx); err != nil || len(d) != 0 {
			t.Fatalf("%s: Verify: %v, %v", when, d, err)
		}
	}
	check(s, "after the failures")
	ffs.failSync = nil
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(root, Config{BlockBytes: 16 << 10, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	check(s, "reopened")
}
