package storage

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestStore_GroupCommit(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	v, _ := s.lookup("v")

	// A batch is one commit.
	batch := make([]Tile, 10)
	for i := range batch {
		batch[i] = Tile{Value: []byte{byte(i)}}
	}
	if _, err := s.Append(ctx, "v", batch...); err != nil {
		t.Fatal(err)
	}
	if c := v.commits.Load(); c != 1 {
		t.Fatalf("a batch of 10 took %d commits", c)
	}

	// Appends queued behind a commit share the next one. The test holds
	// the commit mutex while eight appenders write their records through
	// Store.Append (the production path) and queue on it; released, one of
	// them commits all eight and the others find their tiles committed.
	const writers = 8
	var wg sync.WaitGroup
	v.cmu.Lock()
	for w := range writers {
		wg.Go(func() {
			if _, err := s.Append(ctx, "v", Tile{Value: []byte{byte(w)}}); err != nil {
				t.Error(err)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	for queued := 0; queued < writers; {
		if time.Now().After(deadline) {
			v.cmu.Unlock()
			t.Fatalf("only %d of %d appends queued their records", queued, writers)
		}
		<-tick.C
		v.wmu.Lock()
		queued = len(v.pending)
		v.wmu.Unlock()
	}
	tick.Stop()
	v.cmu.Unlock()
	wg.Wait()
	if c := v.commits.Load(); c != 2 {
		t.Fatalf("%d queued appends took %d commits, want 1", writers, c-1)
	}

	// Free-running concurrent appends: how many commits they share depends
	// on scheduling, so it is reported, not asserted.
	const per = 25
	before := v.commits.Load()
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				if _, err := s.Append(ctx, "v", Tile{Value: []byte{byte(w), byte(i)}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := uint64(writers * per)
	commits := v.commits.Load() - before
	if info, _ := s.Volume("v"); info.NextOffset != 10+writers+total {
		t.Fatalf("NextOffset %d, want %d", info.NextOffset, 10+writers+total)
	}
	t.Logf("%d concurrent appends, %d commits", total, commits)
}

func TestStore_ReadDuringDeleteAndClose(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Config{BlockTiles: 4, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: n, Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if _, err := s.Append(ctx, n, Tile{Value: make([]byte, 100+i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := []string{"a", "b"}[r%2]
			for i := 0; ; i++ {
				_, err := s.Read(name, uint64(i%20))
				switch {
				case err == nil:
				case errors.Is(err, ErrNotFound), errors.Is(err, ErrClosed):
					select {
					case <-stop:
						return
					default:
					}
				default:
					t.Errorf("Read during delete/close: %v", err)
					return
				}
				if _, err := s.Append(ctx, name, Tile{Value: []byte("x")}); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
					t.Errorf("Append during delete/close: %v", err)
					return
				}
			}
		}()
	}
	// Let every reader get going, then pull the volumes away.
	for _, n := range []string{"a"} {
		if err := s.Wait(ctx, n, 25); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteVolume(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Wait(ctx, "b", 25); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
}

// TestStore_CrashInRolloverWindow stops a store (without Close) after an
// append wrote records into a full block and a new one but before its
// commit wrote any index entry: the window in which the sealed block's
// index is short of the next block's base.
func TestStore_CrashInRolloverWindow(t *testing.T) {
	t.Parallel()
	for _, tornTail := range []bool{false, true} {
		dir := t.TempDir()
		cfg := Config{BlockTiles: 4, Logger: slog.New(slog.DiscardHandler)}
		s, err := Open(dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "v", Shape: Shape{1, 1, 1}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if _, err := s.Append(ctx, "v", Tile{Value: testValue(i)}); err != nil {
				t.Fatal(err)
			}
		}
		v, _ := s.lookup("v")
		tiles := []Tile{{Value: testValue(3)}, {Value: testValue(4)}, {Value: testValue(5)}}
		sums := []uint32{Checksum(tiles[0].Value), Checksum(tiles[1].Value), Checksum(tiles[2].Value)}
		if _, _, _, err := v.write(tiles, sums); err != nil {
			t.Fatal(err)
		}
		if len(v.wblocks) != 2 {
			t.Fatalf("the write did not roll over: %d blocks", len(v.wblocks))
		}
		// The process dies here: nothing was committed, the page cache
		// keeps what was written. Release the directory lock only.
		s.lock.Close()
		want := 6
		if tornTail {
			// The record of tile 3 in block 0 is torn as well.
			p := filepath.Join(dir, "v", blockFileName(0, "data"))
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()-3); err != nil {
				t.Fatal(err)
			}
			want = 3
		}
		s2, err := Open(dir, cfg)
		if err != nil {
			t.Fatalf("Open after a crash in the rollover window (torn tail %v): %v", tornTail, err)
		}
		info, _ := s2.Volume("v")
		if info.NextOffset != uint64(want) {
			t.Fatalf("torn tail %v: %d tiles after recovery, want %d", tornTail, info.NextOffset, want)
		}
		for i := range want {
			if got, err := s2.Read("v", uint64(i)); err != nil || !bytes.Equal(got.Value, testValue(i)) {
				t.Fatalf("Read(%d): %v", i, err)
			}
		}
		if off, err := s2.Append(ctx, "v", Tile{Value: testValue(want)}); err != nil || off != uint64(want) {
			t.Fatalf("append after recovery at %d, %v", off, err)
		}
		s2.Close()
	}
}

// TestStore_ResumeAfterFailedStop covers an operation that stops a
// volume's writes and then fails (a delete or restore whose rename fails):
// an append whose records were written before the stop and whose commit
// was refused must never become visible when writes resume, or a retry
// would store its tiles twice. The next append repairs the volume: the
// refused records are cut and the new tile takes their offset.
func TestStore_ResumeAfterFailedStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ctx := context.Background()
	for _, name := range []string{"idle", "busy"} {
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: name, Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Append(ctx, name, Tile{Value: []byte("acknowledged")}); err != nil {
			t.Fatal(err)
		}
	}
	idle, busy := s.volumes()["idle"], s.volumes()["busy"]
	// An append to busy wrote its record; writes stop before its commit.
	refused := Tile{Value: []byte("refused, and longer than the retry")}
	if _, _, _, err := busy.write([]Tile{refused}, []uint32{Checksum(refused.Value)}); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("rename failed")
	for _, v := range []*volume{idle, busy} {
		v.stopWrites()
	}
	if err := busy.commitLocked(durableNow); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit while stopped: %v, want the stopped error", err)
	}
	for _, v := range []*volume{idle, busy} {
		v.resumeWrites(cause)
	}
	// With nothing queued, writes simply resume.
	if off, err := s.Append(ctx, "idle", Tile{Value: []byte("next")}); err != nil || off != 1 {
		t.Fatalf("append to the idle volume after resume: %d, %v", off, err)
	}
	// With a refused append queued, the next append cuts its record first:
	// the refused tile never becomes visible and the retry takes offset 1.
	if busy.failed.Load() == nil {
		t.Fatal("resume with a refused append queued did not mark the volume for repair")
	}
	if off, err := s.Append(ctx, "busy", Tile{Value: []byte("retry")}); err != nil || off != 1 {
		t.Fatalf("append to the busy volume after resume: %d, %v; want offset 1", off, err)
	}
	check := func(s *Store) {
		t.Helper()
		if info, err := s.Volume("busy"); err != nil || info.NextOffset != 2 {
			t.Fatalf("busy volume has %d tiles, %v; want 2", info.NextOffset, err)
		}
		if got, err := s.Read("busy", 1); err != nil || string(got.Value) != "retry" {
			t.Fatalf("Read(busy, 1) = %q, %v; want the retry", got.Value, err)
		}
	}
	check(s)
	// The refused record is gone from the data file too: a reopen (which
	// rebuilds whole records past the index) finds exactly the two tiles.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Config{Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	check(s)
}
