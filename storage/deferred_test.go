package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
)

// deferredRun appends tiles with AppendDeferred to two volumes (tile i
// carries Index i and plValue(i), alternating volumes), calls Sync every
// few tiles, and cuts the power at sync call cutAt (0: after the run). It
// returns the number of sync calls the run made.
func deferredRun(t *testing.T, seed uint64, cutAt int, torn bool) int {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	ffs.cutAt = cutAt
	if torn {
		ffs.torn = rand.New(rand.NewPCG(seed, 11))
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	ctx := context.Background()
	var synced uint64 // the last index a Sync acknowledged
	vols := []string{"a", "b"}
	created := map[string]bool{}
	s, err := Open(root, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: ffs})
	if err == nil {
		func() {
			for _, v := range vols {
				if _, err := s.CreateVolume(ctx, VolumeMeta{Name: v, Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
					return
				}
				created[v] = true
			}
			for i := uint64(1); i <= 120; i++ {
				v := vols[i%2]
				if _, err := s.AppendDeferred(ctx, v, Tile{Value: plValue(i), Index: i}); err != nil {
					return
				}
				if rng.IntN(8) == 0 {
					if err := s.Sync(i); err != nil {
						return
					}
					synced = i
				}
			}
		}()
		s.Close()
	} else if !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	n := ffs.syncCount()
	img := filepath.Join(t.TempDir(), "image")
	ffs.image(t, img)
	what := fmt.Sprintf("seed %d, cut at sync %d of %d, torn %v, synced through %d", seed, cutAt, n, torn, synced)

	s2, err := Open(img, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("%s: open: %v", what, err)
	}
	defer s2.Close()
	if d := s2.DurableIndex(); d < synced {
		t.Fatalf("%s: DurableIndex %d, want at least %d", what, d, synced)
	}
	if a, d := s2.AppliedIndex(), s2.DurableIndex(); a < d {
		t.Fatalf("%s: AppliedIndex %d below DurableIndex %d", what, a, d)
	}
	for k, v := range vols {
		info, err := s2.Volume(v)
		if err != nil {
			if created[v] && synced > 0 {
				t.Fatalf("%s: volume %s: %v", what, v, err)
			}
			continue
		}
		// Volume v holds the tiles of one parity in index order: a
		// prefix of them, which reaches at least the synced index.
		want := uint64(2)
		if k == 1 {
			want = 1
		}
		for off := range info.NextOffset {
			tl, err := s2.Read(v, off)
			if err != nil {
				t.Fatalf("%s: %s offset %d: %v", what, v, off, err)
			}
			if tl.Index != want || !bytes.Equal(tl.Value, plValue(want)) {
				t.Fatalf("%s: %s offset %d holds index %d (%d bytes), want index %d", what, v, off, tl.Index, len(tl.Value), want)
			}
			want += 2
		}
		if want <= synced {
			t.Fatalf("%s: volume %s ends before index %d, which Sync made durable", what, v, want)
		}
	}
	return n
}

// TestStore_AppendDeferred: tiles appended with AppendDeferred are made
// durable by Sync, which records its index as DurableIndex; after a power
// cut at any sync call (strict, or with torn unsynced tails) every tile up
// to the last acknowledged Sync reads back byte for byte, and each volume
// holds a prefix of its log.
func TestStore_AppendDeferred(t *testing.T) {
	t.Parallel()
	total := 0
	t.Run("reference", func(t *testing.T) { total = deferredRun(t, 1, 0, false) })
	if total < 20 {
		t.Fatalf("the reference run made only %d sync calls", total)
	}
	rng := rand.New(rand.NewPCG(2, 0))
	for i := range 24 {
		seed, cut := rng.Uint64(), 1+rng.IntN(total)
		t.Run(fmt.Sprintf("round_%d", i), func(t *testing.T) { deferredRun(t, seed, cut, i%2 == 1) })
	}
}

// TestStore_AppendDeferred_no_fsync: a deferred append fsyncs nothing
// until Sync (blocks large enough that none is sealed).
func TestStore_AppendDeferred_no_fsync(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	s, err := Open(root, Config{Logger: slog.New(slog.DiscardHandler), fs: ffs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "a", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		t.Fatal(err)
	}
	before := ffs.syncCount()
	for i := uint64(1); i <= 10; i++ {
		if _, err := s.AppendDeferred(ctx, "a", Tile{Value: plValue(i), Index: i}); err != nil {
			t.Fatal(err)
		}
	}
	if n := ffs.syncCount() - before; n != 0 {
		t.Fatalf("10 deferred appends made %d sync calls, want 0", n)
	}
	if err := s.Sync(10); err != nil {
		t.Fatal(err)
	}
	if n := ffs.syncCount() - before; n == 0 {
		t.Fatal("Sync made no sync call")
	}
	if s.DurableIndex() != 10 {
		t.Fatalf("DurableIndex %d, want 10", s.DurableIndex())
	}
}
