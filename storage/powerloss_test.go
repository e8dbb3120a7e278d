package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// The power-loss tests run a store on faultFS (faultfs_test.go), cut the
// power at a chosen sync call, and open what a machine would have kept:
// each file as of its last fsync and each directory's entries as of its
// last fsync. In torn rounds a file may also keep any part of what was
// written to it after its last fsync (write-back got that far). After
// every cut, Open must succeed, every acknowledged tile must read back
// byte for byte, every visible tile must be whole and one that was really
// appended, and Verify must find nothing.
//
// By default a bounded number of cut points run (a few seconds);
// LDM_POWERLOSS_ROUNDS=N runs N ingest rounds (make soak).

const plBlock = 4 << 10 // small blocks: rollovers (and seals) all the time

// plValue is the value of the tile appended with seed (stored as its
// Index), so any tile found after a cut can be checked byte for byte.
func plValue(seed uint64) []byte {
	b := make([]byte, 1+seed*37%900)
	for i := range b {
		b[i] = byte(seed*131 + uint64(i)*29)
	}
	return b
}

// plRun records what an ingest run had acknowledged when the power went.
type plRun struct {
	mu        sync.Mutex
	created   bool              // volume "a" acknowledged
	acked     map[uint64]uint64 // offset in "a" -> seed
	seeds     uint64            // seeds handed out: 1..seeds
	vols      map[string]string // scratch volume -> created, deleting or deleted
	applied   uint64            // largest acknowledged SetAppliedIndex
	snap      []byte            // a snapshot stream taken during the run
	snapAcked map[uint64]uint64 // tiles acknowledged before it was taken
}

func (r *plRun) seed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seeds++
	return r.seeds
}

// ingest appends to volume "a" from two goroutines (single tiles and
// batches), creates, fills and deletes scratch volumes and sets the
// applied index from a third, and takes a snapshot part-way. Each
// goroutine stops at its first error (the power cut) or after a bounded
// number of operations.
func (r *plRun) ingest(t *testing.T, s *Store, rng uint64) {
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "a", Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
		return
	}
	r.created = true
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(rng, uint64(g)))
			for i := range 30 {
				if g == 0 && i == 10 {
					r.mu.Lock()
					before := make(map[uint64]uint64, len(r.acked))
					for k, v := range r.acked {
						before[k] = v
					}
					r.mu.Unlock()
					sn, err := s.Snapshot()
					if err != nil {
						t.Errorf("Snapshot: %v", err)
						return
					}
					var buf bytes.Buffer
					_, err = sn.WriteTo(&buf)
					sn.Release()
					if err != nil {
						t.Errorf("Snapshot.WriteTo: %v", err)
						return
					}
					r.mu.Lock()
					r.snap, r.snapAcked = buf.Bytes(), before
					r.mu.Unlock()
				}
				tiles := make([]Tile, 1+rnd.IntN(3))
				for k := range tiles {
					seed := r.seed()
					tiles[k] = Tile{Value: plValue(seed), Index: seed, HasKey: true, Key: BrickKey{X: uint32(seed)}}
				}
				off, err := s.Append(ctx, "a", tiles...)
				if err != nil {
					return
				}
				r.mu.Lock()
				for k := range tiles {
					r.acked[off+uint64(k)] = tiles[k].Index
				}
				r.mu.Unlock()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		set := func(name, state string) {
			r.mu.Lock()
			r.vols[name] = state
			r.mu.Unlock()
		}
		for i := range 4 {
			name := fmt.Sprintf("s%d", i)
			if _, err := s.CreateVolume(ctx, VolumeMeta{Name: name, Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
				return
			}
			set(name, "created")
			if _, err := s.Append(ctx, name, Tile{Value: []byte(name)}, Tile{Value: []byte(name)}); err != nil {
				return
			}
			idx := uint64(1000 + i)
			if err := s.SetAppliedIndex(idx); err != nil {
				return
			}
			r.mu.Lock()
			r.applied = idx
			r.mu.Unlock()
			if i%2 == 1 {
				continue // keep every other one
			}
			set(name, "deleting")
			if err := s.DeleteVolume(ctx, name); err != nil {
				return
			}
			set(name, "deleted")
		}
	}()
	wg.Wait()
}

// check opens the image of a cut and checks it against what was
// acknowledged.
func (r *plRun) check(t *testing.T, dir string, ffs *faultFS, what string) {
	t.Helper()
	var logs testutil.SyncBuffer
	if ffs == nil {
		ffs = newFaultFS(t, dir)
	}
	s, err := Open(dir, Config{BlockBytes: plBlock, Logger: slog.New(slog.NewTextHandler(&logs, nil)), fs: ffs})
	if err != nil {
		t.Fatalf("%s: Open after the power cut: %v", what, err)
	}
	defer s.Close()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s: %s\nrecovery log:\n%s", what, fmt.Sprintf(format, a...), logs.String())
	}
	ctx := context.Background()
	info, err := s.Volume("a")
	switch {
	case errors.Is(err, ErrNotFound) && !r.created:
		if len(r.acked) != 0 {
			fail("tiles acknowledged in a volume that was never created")
		}
	case err != nil:
		fail("volume a: %v", err)
	default:
		for off, seed := range r.acked {
			got, err := s.Read("a", off)
			if err != nil || got.Index != seed || !bytes.Equal(got.Value, plValue(seed)) {
				fail("acknowledged offset %d (seed %d): index %d, %d bytes, %v", off, seed, got.Index, len(got.Value), err)
			}
		}
		seen := map[uint64]uint64{}
		for off := range info.NextOffset {
			got, err := s.Read("a", off)
			if err != nil {
				fail("visible offset %d: %v", off, err)
			}
			if got.Index == 0 || got.Index > r.seeds || !bytes.Equal(got.Value, plValue(got.Index)) {
				fail("visible offset %d holds bytes that were never appended (index %d)", off, got.Index)
			}
			if prev, ok := seen[got.Index]; ok {
				fail("seed %d visible twice, at %d and %d", got.Index, prev, off)
			}
			seen[got.Index] = off
		}
		seed := r.seed()
		off, err := s.Append(ctx, "a", Tile{Value: plValue(seed), Index: seed})
		if err != nil || off != info.NextOffset {
			fail("append after the cut at %d, %v; want %d", off, err, info.NextOffset)
		}
		if got, err := s.Read("a", off); err != nil || !bytes.Equal(got.Value, plValue(seed)) {
			fail("read of the append after the cut: %v", err)
		}
	}
	for name, state := range r.vols {
		_, err := s.Volume(name)
		switch {
		case state == "created" && err != nil:
			fail("acknowledged volume %s lost: %v", name, err)
		case state == "deleted" && !errors.Is(err, ErrNotFound):
			fail("deleted volume %s came back: %v", name, err)
		}
	}
	vols, err := s.Volumes()
	if err != nil {
		fail("Volumes: %v", err)
	}
	for _, v := range vols {
		if v.Name == "a" {
			continue
		}
		for off := range v.NextOffset {
			if got, err := s.Read(v.Name, off); err != nil || string(got.Value) != v.Name {
				fail("volume %s tile %d: %q, %v", v.Name, off, got.Value, err)
			}
		}
	}
	if got := s.AppliedIndex(); got < r.applied {
		fail("AppliedIndex %d, %d was acknowledged", got, r.applied)
	}
	if d, err := s.Verify(ctx); err != nil || len(d) != 0 {
		fail("Verify: %v, %v", d, err)
	}
	if r.snap != nil {
		r.checkSnapshot(t, what)
	}
	// A second cut right now: whatever recovery made visible (and was
	// perhaps served) and the append just acknowledged must survive it.
	before := plFingerprint(t, s)
	ffs.cutNow()
	img := dir + "-again"
	ffs.image(t, img)
	s2, err := Open(img, Config{BlockBytes: plBlock, Logger: slog.New(slog.NewTextHandler(&logs, nil)), fs: newFaultFS(t, img)})
	if err != nil {
		fail("Open after a second power cut: %v", err)
	}
	defer s2.Close()
	if after := plFingerprint(t, s2); after != before {
		fail("a second power cut right after recovery changed the store\nbefore: %s\nafter:  %s", before, after)
	}
}

// checkSnapshot restores the snapshot taken during the run into a new
// store: it holds every tile acknowledged before it was taken.
func (r *plRun) checkSnapshot(t *testing.T, what string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "restored")
	s, err := Open(dir, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: newFaultFS(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Restore(bytes.NewReader(r.snap)); err != nil {
		t.Fatalf("%s: restoring the snapshot taken during the run: %v", what, err)
	}
	for off, seed := range r.snapAcked {
		if got, err := s.Read("a", off); err != nil || !bytes.Equal(got.Value, plValue(seed)) {
			t.Fatalf("%s: snapshot lacks acknowledged offset %d: %v", what, off, err)
		}
	}
	if d, err := s.Verify(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("%s: Verify of the restored snapshot: %v, %v", what, d, err)
	}
}

// A cut is how a round ends: the power goes (strict: only what was
// fsynced survives; torn: unsynced writes may survive in part) or the
// process is killed and restarted on a machine that keeps running, and
// the power goes right after the restart's recovery (kill: what recovery
// found in the page cache and made visible must have been made durable).
type cutMode int

const (
	cutStrict cutMode = iota
	cutTorn
	cutKill
)

func (m cutMode) String() string { return [...]string{"strict", "torn", "kill"}[m] }

// powerLossIngest runs one ingest round, cut at sync call cutAt (0: after
// the run), and checks what survived. It returns the number of sync calls
// the run made.
func powerLossIngest(t *testing.T, seed uint64, cutAt int, mode cutMode) int {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	ffs := newFaultFS(t, root)
	ffs.cutAt = cutAt
	switch mode {
	case cutTorn:
		ffs.torn = rand.New(rand.NewPCG(seed, 7))
	case cutKill:
		ffs.killOnly = true
	}
	r := &plRun{acked: map[uint64]uint64{}, vols: map[string]string{}}
	s, err := Open(root, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: ffs})
	if err == nil {
		r.ingest(t, s, seed)
	} else if !errors.Is(err, syscall.EIO) {
		t.Fatal(err)
	}
	n := ffs.syncCount()
	what := fmt.Sprintf("seed %d, %s cut at sync %d of %d", seed, mode, cutAt, n)
	if mode == cutKill {
		// The process dies: its files stay as written, its lock goes.
		// (Its handles are closed when the round ends.)
		if s != nil {
			s.lock.Close()
			t.Cleanup(func() { s.Close() })
		}
		ffs.revive()
		r.check(t, root, ffs, what)
		return n
	}
	if s != nil {
		s.Close()
	}
	img := filepath.Join(t.TempDir(), "image")
	ffs.image(t, img)
	if seed%2 == 0 {
		// The power goes again during the recovery of the first cut.
		img = recoveryCut(t, img, 1+int(seed/2%8))
		what += fmt.Sprintf(", cut again at sync %d of the recovery", 1+seed/2%8)
	}
	r.check(t, img, nil, what)
	return n
}

// recoveryCut opens dir with the power cut at sync call cutAt of the
// recovery (Open may fail or succeed), and returns the image of what
// survived.
func recoveryCut(t *testing.T, dir string, cutAt int) string {
	t.Helper()
	ffs := newFaultFS(t, dir)
	ffs.cutAt = cutAt
	s, err := Open(dir, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: ffs})
	if err == nil {
		s.Close()
	} else if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Open with the power cut at sync %d of the recovery: %v", cutAt, err)
	}
	img := dir + "-recovery-cut"
	ffs.image(t, img)
	return img
}

func powerLossRounds(t *testing.T) (rounds int, budget time.Duration) {
	if v := os.Getenv("LDM_POWERLOSS_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LDM_POWERLOSS_ROUNDS=%q: want a positive number", v)
		}
		return n, 0
	}
	return 60, 3 * time.Second
}

// TestStore_PowerLossIngest cuts the power at random sync calls while two
// appenders write single tiles and batches into 4 KiB blocks (so group
// commits, rollovers and seals all run), a third creates, fills and
// deletes volumes and sets the applied index, and a snapshot is taken.
func TestStore_PowerLossIngest(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var total int
	t.Run("reference", func(t *testing.T) { total = powerLossIngest(t, rng.Uint64(), 0, cutStrict) })
	if total < 50 {
		t.Fatalf("the reference run made only %d sync calls", total)
	}
	rounds, budget := powerLossRounds(t)
	start := time.Now()
	done := 0
	for i := range rounds {
		if budget > 0 && i >= 10 && time.Since(start) > budget {
			break
		}
		seed, cut, mode := rng.Uint64(), 1+rng.IntN(total), cutMode(i%3)
		if !t.Run(fmt.Sprintf("round_%d", i), func(t *testing.T) { powerLossIngest(t, seed, cut, mode) }) {
			break
		}
		done++
	}
	t.Logf("%d cut points (of about %d sync calls per run) in %v", done, total, time.Since(start).Round(time.Millisecond))
}

// plFingerprint describes a store's whole content.
func plFingerprint(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	vols, err := s.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "applied %d;", s.AppliedIndex())
	for _, v := range vols {
		fmt.Fprintf(&b, " %s:", v.Name)
		for off := range v.NextOffset {
			got, err := s.Read(v.Name, off)
			if err != nil {
				t.Fatalf("volume %s offset %d: %v", v.Name, off, err)
			}
			fmt.Fprintf(&b, " %d/%08x", got.Index, Checksum(got.Value))
		}
	}
	return b.String()
}

// plStore builds a store in dir with the given volumes (name -> seeds) and
// applied index, and returns its fingerprint.
func plStore(t *testing.T, dir string, vols map[string][]uint64, applied uint64) string {
	t.Helper()
	s, err := Open(dir, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: newFaultFS(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range vols {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		if _, err := s.CreateVolume(ctx, VolumeMeta{Name: n, Shape: Shape{8, 8, 8}, DataType: Uint8}); err != nil {
			t.Fatal(err)
		}
		for _, seed := range vols[n] {
			if _, err := s.Append(ctx, n, Tile{Value: plValue(seed), Index: seed}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.SetAppliedIndex(applied); err != nil {
		t.Fatal(err)
	}
	return plFingerprint(t, s)
}

// TestStore_PowerLossRestore cuts the power at every sync call of a
// Restore (and after it): the store that opens is either the old one or
// the restored one, exactly, never a mix.
func TestStore_PowerLossRestore(t *testing.T) {
	t.Parallel()
	seeds := func(from, n uint64) []uint64 {
		out := make([]uint64, n)
		for i := range out {
			out[i] = from + uint64(i)
		}
		return out
	}
	// The snapshot to restore: "a" longer than before (several blocks),
	// "b" new; "old" is not in it.
	src := filepath.Join(t.TempDir(), "src")
	want := plStore(t, src, map[string][]uint64{"a": seeds(100, 14), "b": seeds(200, 3)}, 5000)
	s, err := Open(src, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: newFaultFS(t, src)})
	if err != nil {
		t.Fatal(err)
	}
	snap := SnapshotBytes(t, s)
	s.Close()

	round := func(t *testing.T, cutAfter int, torn bool) (syncs int, restored bool) {
		t.Helper()
		root := filepath.Join(t.TempDir(), "store")
		old := plStore(t, root, map[string][]uint64{"a": seeds(1, 6), "old": seeds(50, 2)}, 4000)
		ffs := newFaultFS(t, root)
		s, err := Open(root, Config{BlockBytes: plBlock, Logger: slog.New(slog.DiscardHandler), fs: ffs})
		if err != nil {
			t.Fatal(err)
		}
		base := ffs.syncCount()
		if cutAfter > 0 {
			ffs.cutAt = base + cutAfter
		}
		if torn {
			ffs.torn = rand.New(rand.NewPCG(uint64(cutAfter), 3))
		}
		rerr := s.Restore(bytes.NewReader(snap))
		s.Close()
		syncs = ffs.syncCount() - base
		img := filepath.Join(t.TempDir(), "image")
		ffs.image(t, img)
		var logs testutil.SyncBuffer
		s2, err := Open(img, Config{BlockBytes: plBlock, Logger: slog.New(slog.NewTextHandler(&logs, nil)), fs: newFaultFS(t, img)})
		if err != nil {
			t.Fatalf("cut at restore sync %d: Open: %v", cutAfter, err)
		}
		defer s2.Close()
		got := plFingerprint(t, s2)
		switch {
		case got == want:
			restored = true
		case got == old && rerr != nil:
		default:
			t.Fatalf("cut at restore sync %d (torn %v, Restore: %v): the store is neither the old one nor the restored one\ngot:      %s\nold:      %s\nrestored: %s\nlog:\n%s",
				cutAfter, torn, rerr, got, old, want, logs.String())
		}
		if d, err := s2.Verify(context.Background()); err != nil || len(d) != 0 {
			t.Fatalf("cut at restore sync %d: Verify: %v, %v", cutAfter, d, err)
		}
		return syncs, restored
	}
	var total int
	var restored bool
	t.Run("reference", func(t *testing.T) { total, restored = round(t, 0, false) })
	if !restored || total < 10 {
		t.Fatalf("the reference restore made %d sync calls, restored %v", total, restored)
	}
	// Every cut point runs once, strict or torn in turn; with
	// LDM_POWERLOSS_ROUNDS set, each runs both ways.
	both := os.Getenv("LDM_POWERLOSS_ROUNDS") != ""
	sawOld, sawNew := false, false
	for k := 1; k <= total; k++ {
		for _, torn := range []bool{false, true} {
			if !both && torn != (k%2 == 0) {
				continue
			}
			t.Run(fmt.Sprintf("cut_%d_torn_%v", k, torn), func(t *testing.T) {
				_, r := round(t, k, torn)
				sawOld = sawOld || !r
				sawNew = sawNew || r
			})
		}
	}
	if !sawOld || !sawNew {
		t.Fatalf("over %d cut points the store was never the old one (%v) or never the restored one (%v)", total, !sawOld, !sawNew)
	}
}
