package storage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

// volumeImage is everything readable from one volume.
type volumeImage struct {
	info   storage.VolumeInfo
	tiles  []storage.Tile
	bricks map[storage.BrickKey]uint64
}

func imageOf(tb testing.TB, l storage.LDM, name string, upTo uint64) volumeImage {
	tb.Helper()
	info, err := l.Volume(name)
	if err != nil {
		tb.Fatalf("Volume(%q): %v", name, err)
	}
	img := volumeImage{info: info, bricks: map[storage.BrickKey]uint64{}}
	for off := range min(upTo, info.NextOffset) {
		tile, err := l.Read(name, off)
		if err != nil {
			tb.Fatalf("Read(%q, %d): %v", name, off, err)
		}
		img.tiles = append(img.tiles, tile)
	}
	for lod := range uint32(3) {
		m, err := l.Bricks(name, lod)
		if err != nil {
			tb.Fatal(err)
		}
		for k, off := range m {
			if off < upTo {
				img.bricks[k] = off
			}
		}
	}
	return img
}

func sameImage(tb testing.TB, name string, got, want volumeImage) {
	tb.Helper()
	g, w := got.info, want.info
	if g.Name != w.Name || g.Shape != w.Shape || g.DataType != w.DataType || g.LODCount != w.LODCount ||
		!g.CreatedAt.Equal(w.CreatedAt) || g.Index != w.Index || len(g.Labels) != len(w.Labels) {
		tb.Fatalf("volume %q metadata %+v, want %+v", name, g.VolumeMeta, w.VolumeMeta)
	}
	if len(got.tiles) != len(want.tiles) {
		tb.Fatalf("volume %q has %d tiles, want %d", name, len(got.tiles), len(want.tiles))
	}
	for i := range want.tiles {
		a, b := got.tiles[i], want.tiles[i]
		if !bytes.Equal(a.Value, b.Value) || a.Offset != b.Offset || a.CRC32C != b.CRC32C || a.Index != b.Index || a.HasKey != b.HasKey || a.Key != b.Key {
			tb.Fatalf("volume %q tile %d differs", name, i)
		}
	}
	if len(got.bricks) != len(want.bricks) {
		tb.Fatalf("volume %q has %d bricks, want %d", name, len(got.bricks), len(want.bricks))
	}
	for k, off := range want.bricks {
		if got.bricks[k] != off {
			tb.Fatalf("volume %q brick %+v at %d, want %d", name, k, got.bricks[k], off)
		}
	}
}

func fillVolume(tb testing.TB, s storage.LDM, name string, n int, index uint64) {
	tb.Helper()
	m := ldmtest.Meta(name)
	m.LODCount = 3
	m.Labels = map[string]string{"name": name}
	m.Index = index
	if _, err := s.CreateVolume(context.Background(), m); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		t := storage.Tile{Value: ldmtest.Value(uint64(i)+index, 10+i*37%900), Index: index + uint64(i) + 1}
		if i%3 != 0 {
			t.HasKey, t.Key = true, storage.BrickKey{LOD: uint32(i % 3), X: uint32(i % 5)}
		}
		appendTiles(tb, s, name, t)
	}
}

func TestStore_SnapshotRestore(t *testing.T) {
	t.Parallel()
	cfg := storage.Config{BlockBytes: 4 << 10, BlockTiles: 7}
	src := openStore(t, t.TempDir(), cfg)
	fillVolume(t, src, "alpha", 60, 1000)
	fillVolume(t, src, "beta", 3, 2000)
	fillVolume(t, src, "empty", 0, 3000)
	fillVolume(t, src, "doomed", 20, 4000)
	if err := src.SetAppliedIndex(5000); err != nil {
		t.Fatal(err)
	}
	want := map[string]volumeImage{}
	for _, n := range []string{"alpha", "beta", "empty", "doomed"} {
		want[n] = imageOf(t, src, n, ^uint64(0))
	}
	sn, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	if sn.AppliedIndex() != 5000 {
		t.Fatalf("snapshot applied index %d", sn.AppliedIndex())
	}
	// Appends (sealing more blocks) and a delete race with WriteTo; the
	// snapshot must not change.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 40 {
			appendTiles(t, src, "alpha", storage.Tile{Value: ldmtest.Value(uint64(i), 500), Index: 6000 + uint64(i)})
		}
		if err := src.DeleteVolume(context.Background(), "doomed"); err != nil {
			t.Error(err)
		}
	}()
	var stream bytes.Buffer
	n, err := sn.WriteTo(&stream)
	wg.Wait()
	if err != nil || n != int64(stream.Len()) {
		t.Fatalf("WriteTo = %d, %v (buffer holds %d)", n, err, stream.Len())
	}
	// A second WriteTo produces the same bytes, after the delete.
	var again bytes.Buffer
	if _, err := sn.WriteTo(&again); err != nil || !bytes.Equal(again.Bytes(), stream.Bytes()) {
		t.Fatalf("second WriteTo differs: %v", err)
	}

	dstDir := t.TempDir()
	dst := openStore(t, dstDir, cfg)
	fillVolume(t, dst, "stale", 5, 1) // replaced by the restore
	if err := dst.Restore(bytes.NewReader(stream.Bytes())); err != nil {
		t.Fatal(err)
	}
	check := func(s *storage.Store) {
		t.Helper()
		for name, w := range want {
			sameImage(t, name, imageOf(t, s, name, ^uint64(0)), w)
		}
		if _, err := s.Volume("stale"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("volume absent from the snapshot survived the restore: %v", err)
		}
		if got := s.AppliedIndex(); got != 5000 {
			t.Fatalf("AppliedIndex after restore = %d, want 5000", got)
		}
	}
	check(dst)
	dst.Close()
	dst = openStore(t, dstDir, cfg)
	check(dst)
	if off := appendTiles(t, dst, "alpha", storage.Tile{Value: []byte("next")}); off != 60 {
		t.Fatalf("append after restore at %d, want 60", off)
	}
	if d, err := dst.Verify(context.Background()); err != nil || len(d) != 0 {
		t.Fatalf("Verify after restore: %v, %v", d, err)
	}
	sn.Release()
	if _, err := sn.WriteTo(&again); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("WriteTo after Release = %v", err)
	}
}

func TestStore_RestoreCorrupt(t *testing.T) {
	t.Parallel()
	cfg := storage.Config{BlockBytes: 2 << 10}
	src := openStore(t, t.TempDir(), cfg)
	fillVolume(t, src, "a", 30, 10)
	fillVolume(t, src, "b", 2, 100)
	good := storage.SnapshotBytes(t, src)

	dstDir := t.TempDir()
	dst := openStore(t, dstDir, cfg)
	fillVolume(t, dst, "keep", 4, 7)
	before := imageOf(t, dst, "keep", ^uint64(0))
	damaged := map[string][]byte{
		"empty":     nil,
		"truncated": good[:len(good)/2],
		"no_end":    good[:len(good)-40],
	}
	for _, at := range []int{3, 40, 60, len(good) / 3, len(good) / 2, len(good) - 30, len(good) - 2} {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		damaged["flip_"+string(rune('a'+len(damaged)))] = b
	}
	for name, b := range damaged {
		err := dst.Restore(bytes.NewReader(b))
		if !errors.Is(err, storage.ErrCorrupt) {
			t.Fatalf("%s: Restore = %v, want ErrCorrupt", name, err)
		}
		sameImage(t, "keep", imageOf(t, dst, "keep", ^uint64(0)), before)
		if _, err := dst.Volume("a"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("%s: a damaged restore made volume a visible", name)
		}
		ents, _ := os.ReadDir(dstDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".tmp") || strings.HasPrefix(e.Name(), ".restore") {
				t.Fatalf("%s: leftover %s", name, e.Name())
			}
		}
	}
	if got := dst.AppliedIndex(); got != before.info.Index+4 {
		t.Fatalf("AppliedIndex changed by failed restores: %d", got)
	}
}

func TestStore_RestoreLive(t *testing.T) {
	t.Parallel()
	src := openStore(t, t.TempDir(), storage.Config{})
	fillVolume(t, src, "x", 10, 0)
	snap := storage.SnapshotBytes(t, src)

	dst := openStore(t, t.TempDir(), storage.Config{})
	fillVolume(t, dst, "x", 3, 0)
	fillVolume(t, dst, "gone", 1, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	waitX := make(chan error, 1)
	waitGone := make(chan error, 1)
	go func() { waitX <- dst.Wait(ctx, "x", 8) }()
	go func() { waitGone <- dst.Wait(ctx, "gone", 5) }()
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		// Tiles 0..2 have the same content before and after the restore.
		for i := 0; ; i++ {
			select {
			case <-stop:
				readErr <- nil
				return
			default:
			}
			off := uint64(i % 3)
			got, err := dst.Read("x", off)
			if err != nil || !bytes.Equal(got.Value, ldmtest.Value(off, 10+int(off)*37%900)) {
				readErr <- err
				return
			}
		}
	}()
	if err := dst.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := <-readErr; err != nil {
		t.Fatalf("read during restore: %v", err)
	}
	if err := <-waitX; err != nil {
		t.Fatalf("waiter on a restored volume: %v", err)
	}
	if err := <-waitGone; !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("waiter on a volume the restore removed: %v", err)
	}
	if off := appendTiles(t, dst, "x", storage.Tile{Value: []byte("z")}); off != 10 {
		t.Fatalf("append after live restore at %d", off)
	}
}

func TestStore_SnapshotSurvivesRestore(t *testing.T) {
	t.Parallel()
	a := openStore(t, t.TempDir(), storage.Config{BlockTiles: 3})
	fillVolume(t, a, "x", 10, 0)
	want := imageOf(t, a, "x", ^uint64(0))
	sn, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	// Replace a's contents with an empty store's while the snapshot is held:
	// its files are gone from the directory, the snapshot's handles are not.
	empty := openStore(t, t.TempDir(), storage.Config{})
	esn, err := empty.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var ebuf bytes.Buffer
	if _, err := esn.WriteTo(&ebuf); err != nil {
		t.Fatal(err)
	}
	esn.Release()
	if err := a.Restore(&ebuf); err != nil {
		t.Fatal(err)
	}
	if vols, _ := a.Volumes(); len(vols) != 0 {
		t.Fatalf("after restoring an empty snapshot: %d volumes", len(vols))
	}
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatalf("WriteTo after the store was replaced: %v", err)
	}
	b := openStore(t, t.TempDir(), storage.Config{})
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	sameImage(t, "x", imageOf(t, b, "x", ^uint64(0)), want)
}
