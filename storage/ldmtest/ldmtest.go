// Package ldmtest is the conformance suite for storage.LDM. Every
// implementation (the file store, the memory store, a replicated node) runs
// the same tests through RunConformance.
package ldmtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
)

// MaxTileBytes is the tile limit the suite assumes: implementations under
// test must be created with storage's MaxTileBytes set to it.
const MaxTileBytes = 64 << 10

// NewFunc returns a fresh, empty LDM for one subtest. It should register
// cleanup with tb.Cleanup; the suite may Close the LDM itself, so a second
// Close must not fail the test.
type NewFunc func(tb testing.TB) storage.LDM

// RunConformance runs every conformance test against LDMs made by newLDM.
func RunConformance(t *testing.T, newLDM NewFunc) {
	tests := []struct {
		name string
		fn   func(*testing.T, storage.LDM)
	}{
		{"create_and_get", testCreateAndGet},
		{"create_exists", testCreateExists},
		{"invalid_names", testInvalidNames},
		{"invalid_meta", testInvalidMeta},
		{"list_sorted", testListSorted},
		{"append_read", testAppendRead},
		{"append_batch", testAppendBatch},
		{"append_rejects_whole_batch", testAppendRejectsBatch},
		{"read_errors", testReadErrors},
		{"bricks", testBricks},
		{"wait", testWait},
		{"wait_wakes_on_delete_and_close", testWaitWakes},
		{"delete", testDelete},
		{"close", testClose},
		{"ownership", testOwnership},
		{"concurrent", testConcurrent},
		{"iterate", testIterate},
		{"replication_index", testReplicationIndex},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newLDM(t))
		})
	}
}

// Meta returns valid metadata for a volume called name.
func Meta(name string) storage.VolumeMeta {
	return storage.VolumeMeta{Name: name, Shape: storage.Shape{X: 128, Y: 96, Z: 64}, DataType: storage.Uint16}
}

// Value returns deterministic tile bytes for seed, n bytes long.
func Value(seed uint64, n int) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

func mustCreate(tb testing.TB, l storage.LDM, name string) storage.VolumeInfo {
	tb.Helper()
	info, err := l.CreateVolume(context.Background(), Meta(name))
	if err != nil {
		tb.Fatalf("CreateVolume(%q): %v", name, err)
	}
	return info
}

func mustAppend(tb testing.TB, l storage.LDM, vol string, tiles ...storage.Tile) uint64 {
	tb.Helper()
	first, err := l.Append(context.Background(), vol, tiles...)
	if err != nil {
		tb.Fatalf("Append(%q): %v", vol, err)
	}
	return first
}

func wantErr(tb testing.TB, what string, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func testCreateAndGet(t *testing.T, l storage.LDM) {
	m := Meta("ct-1")
	m.Spacing = []float64{0.5, 0.5, 1.25}
	m.Labels = map[string]string{"modality": "ct"}
	m.LODCount = 3
	info, err := l.CreateVolume(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if info.BrickShape != storage.DefaultBrickShape || info.LODCount != 3 || info.CreatedAt.IsZero() {
		t.Fatalf("created %+v: defaults not filled", info)
	}
	got, err := l.Volume("ct-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "ct-1" || got.Shape != m.Shape || got.DataType != storage.Uint16 || got.LODCount != 3 ||
		got.Index != info.Index || got.Labels["modality"] != "ct" || len(got.Spacing) != 3 || got.Spacing[2] != 1.25 ||
		!got.CreatedAt.Equal(info.CreatedAt) || got.NextOffset != 0 || got.SizeBytes != 0 {
		t.Fatalf("Volume = %+v, want the metadata of %+v", got, m)
	}
}

func testCreateExists(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "dup")
	_, err := l.CreateVolume(context.Background(), Meta("dup"))
	wantErr(t, "second CreateVolume", err, storage.ErrExists)
}

// BadNames are volume names every implementation must reject.
var BadNames = []string{"", strings.Repeat("a", 65), "..", ".", "a/b", "/abs", "Upper", "a\x00b", "-lead", ".hidden", "sp ace"}

func testInvalidNames(t *testing.T, l storage.LDM) {
	ctx := context.Background()
	for _, n := range BadNames {
		m := Meta(n)
		_, err := l.CreateVolume(ctx, m)
		wantErr(t, fmt.Sprintf("CreateVolume(%q)", n), err, storage.ErrInvalidName)
		_, err = l.Volume(n)
		wantErr(t, fmt.Sprintf("Volume(%q)", n), err, storage.ErrInvalidName)
		_, err = l.Append(ctx, n, storage.Tile{Value: []byte("x")})
		wantErr(t, fmt.Sprintf("Append(%q)", n), err, storage.ErrInvalidName)
		_, err = l.Read(n, 0)
		wantErr(t, fmt.Sprintf("Read(%q)", n), err, storage.ErrInvalidName)
		wantErr(t, fmt.Sprintf("DeleteVolume(%q)", n), l.DeleteVolume(ctx, n), storage.ErrInvalidName)
		wantErr(t, fmt.Sprintf("Wait(%q)", n), l.Wait(ctx, n, 0), storage.ErrInvalidName)
	}
	mustCreate(t, l, strings.Repeat("a", 64))
}

func testInvalidMeta(t *testing.T, l storage.LDM) {
	bad := []storage.VolumeMeta{
		{Name: "v", DataType: storage.Uint8},
		{Name: "v", Shape: storage.Shape{X: 1, Y: 1, Z: 1}},
		{Name: "v", Shape: storage.Shape{X: 1, Y: 1, Z: 1}, DataType: storage.Uint8, Spacing: []float64{1}},
		{Name: "v", Shape: storage.Shape{X: 1, Y: 1, Z: 1}, DataType: storage.Uint8, LODCount: 99},
	}
	for _, m := range bad {
		_, err := l.CreateVolume(context.Background(), m)
		wantErr(t, fmt.Sprintf("CreateVolume(%+v)", m), err, storage.ErrInvalidArgument)
	}
	vols, err := l.Volumes()
	if err != nil || len(vols) != 0 {
		t.Fatalf("Volumes after rejected creates = %v, %v", vols, err)
	}
}

func testListSorted(t *testing.T, l storage.LDM) {
	for _, n := range []string{"zeta", "alpha", "mid.1", "0num"} {
		mustCreate(t, l, n)
	}
	vols, err := l.Volumes()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range vols {
		names = append(names, v.Name)
	}
	if got := strings.Join(names, ","); got != "0num,alpha,mid.1,zeta" {
		t.Fatalf("Volumes = %s", got)
	}
}

func testAppendRead(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	var size uint64
	for i := range 20 {
		tile := storage.Tile{Value: Value(uint64(i), i*97)}
		if i%3 == 0 {
			tile.HasKey, tile.Key = true, storage.BrickKey{LOD: 1, X: uint32(i), Y: 2, Z: 3}
		}
		if i%2 == 0 {
			tile.CRC32C = storage.Checksum(tile.Value) // a correct CRC is accepted
		}
		if off := mustAppend(t, l, "v", tile); off != uint64(i) {
			t.Fatalf("Append #%d returned offset %d", i, off)
		}
		size += uint64(len(tile.Value))
	}
	for i := range 20 {
		got, err := l.Read("v", uint64(i))
		if err != nil {
			t.Fatalf("Read(%d): %v", i, err)
		}
		want := Value(uint64(i), i*97)
		if got.Offset != uint64(i) || !bytes.Equal(got.Value, want) || got.CRC32C != storage.Checksum(want) ||
			got.HasKey != (i%3 == 0) {
			t.Fatalf("Read(%d) = offset %d, %d bytes, crc %08x, haskey %v", i, got.Offset, len(got.Value), got.CRC32C, got.HasKey)
		}
		if got.HasKey && got.Key != (storage.BrickKey{LOD: 1, X: uint32(i), Y: 2, Z: 3}) {
			t.Fatalf("Read(%d) key %+v", i, got.Key)
		}
	}
	info, err := l.Volume("v")
	if err != nil || info.NextOffset != 20 || info.SizeBytes != size {
		t.Fatalf("Volume = %+v, %v; want next 20, size %d", info, err, size)
	}
}

func testAppendBatch(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	mustAppend(t, l, "v", storage.Tile{Value: []byte("first")})
	var batch []storage.Tile
	for i := range 50 {
		batch = append(batch, storage.Tile{Value: Value(uint64(i), 1000+i)})
	}
	if first := mustAppend(t, l, "v", batch...); first != 1 {
		t.Fatalf("batch first offset = %d, want 1", first)
	}
	if first := mustAppend(t, l, "v"); first != 51 {
		t.Fatalf("empty Append returned %d, want 51", first)
	}
	for i := range 50 {
		got, err := l.Read("v", uint64(1+i))
		if err != nil || !bytes.Equal(got.Value, batch[i].Value) {
			t.Fatalf("Read(%d): %v", 1+i, err)
		}
	}
}

func testAppendRejectsBatch(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	ok := storage.Tile{Value: []byte("ok")}
	_, err := l.Append(context.Background(), "v", ok, storage.Tile{Value: make([]byte, MaxTileBytes+1)})
	wantErr(t, "Append with an oversized tile", err, storage.ErrTooLarge)
	_, err = l.Append(context.Background(), "v", ok, storage.Tile{Value: []byte("x"), CRC32C: 1})
	wantErr(t, "Append with a wrong CRC", err, storage.ErrCorrupt)
	mustAppend(t, l, "v", storage.Tile{Value: make([]byte, MaxTileBytes)})
	if info, _ := l.Volume("v"); info.NextOffset != 1 {
		t.Fatalf("NextOffset = %d after rejected batches, want 1", info.NextOffset)
	}
	_, err = l.Append(context.Background(), "missing", ok)
	wantErr(t, "Append to a missing volume", err, storage.ErrNotFound)
}

func testReadErrors(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	_, err := l.Read("v", 0)
	wantErr(t, "Read of an empty volume", err, storage.ErrOutOfRange)
	mustAppend(t, l, "v", storage.Tile{Value: []byte("a")})
	_, err = l.Read("v", 1)
	wantErr(t, "Read past the end", err, storage.ErrOutOfRange)
	_, err = l.Read("v", ^uint64(0))
	wantErr(t, "Read at MaxUint64", err, storage.ErrOutOfRange)
	_, err = l.Read("nope", 0)
	wantErr(t, "Read of a missing volume", err, storage.ErrNotFound)
}

func testBricks(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	k0 := storage.BrickKey{LOD: 0, X: 1, Y: 2, Z: 3}
	k1 := storage.BrickKey{LOD: 1, X: 0, Y: 0, Z: 0}
	mustAppend(t, l, "v",
		storage.Tile{Value: []byte("old"), HasKey: true, Key: k0},
		storage.Tile{Value: []byte("nokey")},
		storage.Tile{Value: []byte("lod1"), HasKey: true, Key: k1})
	mustAppend(t, l, "v", storage.Tile{Value: []byte("new"), HasKey: true, Key: k0})
	// Keys far outside any small grid still work.
	wide := []storage.BrickKey{{LOD: 20, X: 1}, {LOD: 1, X: 1 << 30, Y: 5, Z: 1<<32 - 1}, {LOD: 15, X: 1<<20 - 1, Y: 1<<20 - 1, Z: 1<<20 - 1}}
	for i, k := range wide {
		off := mustAppend(t, l, "v", storage.Tile{Value: []byte{byte(i)}, HasKey: true, Key: k})
		got, err := l.Brick("v", k)
		if err != nil || got.Offset != off || got.Key != k {
			t.Fatalf("Brick(%+v) = offset %d key %+v, %v; want offset %d", k, got.Offset, got.Key, err, off)
		}
	}
	if m, err := l.Bricks("v", 20); err != nil || len(m) != 1 || m[wide[0]] != 4 {
		t.Fatalf("Bricks(lod 20) = %v, %v", m, err)
	}
	got, err := l.Brick("v", k0)
	if err != nil || string(got.Value) != "new" || got.Offset != 3 {
		t.Fatalf("Brick(k0) = %q at %d, %v; want the latest", got.Value, got.Offset, err)
	}
	_, err = l.Brick("v", storage.BrickKey{LOD: 5})
	wantErr(t, "Brick of a missing key", err, storage.ErrNotFound)
	m, err := l.Bricks("v", 1)
	if err != nil || len(m) != 2 || m[k1] != 2 || m[wide[1]] != 5 {
		t.Fatalf("Bricks(lod 1) = %v, %v", m, err)
	}
	m, err = l.Bricks("v", 0)
	if err != nil || len(m) != 1 || m[k0] != 3 {
		t.Fatalf("Bricks(lod 0) = %v, %v", m, err)
	}
	_, err = l.Bricks("nope", 0)
	wantErr(t, "Bricks of a missing volume", err, storage.ErrNotFound)
}

func testWait(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	mustAppend(t, l, "v", storage.Tile{Value: []byte("a")})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Wait(ctx, "v", 0); err != nil {
		t.Fatalf("Wait for an existing tile: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, "v", 3) }()
	mustAppend(t, l, "v", storage.Tile{Value: []byte("b")})
	select {
	case err := <-done:
		t.Fatalf("Wait(3) returned %v with only 2 tiles", err)
	default:
	}
	mustAppend(t, l, "v", storage.Tile{Value: []byte("c")}, storage.Tile{Value: []byte("d")})
	if err := <-done; err != nil {
		t.Fatalf("Wait(3): %v", err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	wantErr(t, "Wait with an expiring context", l.Wait(short, "v", 100), context.DeadlineExceeded)
	wantErr(t, "Wait on a missing volume", l.Wait(ctx, "nope", 0), storage.ErrNotFound)
}

func testWaitWakes(t *testing.T, l storage.LDM) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustCreate(t, l, "del")
	mustCreate(t, l, "keep")
	delDone := make(chan error, 1)
	go func() { delDone <- l.Wait(ctx, "del", 0) }()
	if err := l.DeleteVolume(ctx, "del"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Wait on a deleted volume", <-delDone, storage.ErrNotFound)
	closeDone := make(chan error, 1)
	go func() { closeDone <- l.Wait(ctx, "keep", 0) }()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "Wait across Close", <-closeDone, storage.ErrClosed)
}

func testDelete(t *testing.T, l storage.LDM) {
	ctx := context.Background()
	mustCreate(t, l, "gone")
	mustCreate(t, l, "other")
	mustAppend(t, l, "gone", storage.Tile{Value: []byte("a"), HasKey: true})
	mustAppend(t, l, "other", storage.Tile{Value: []byte("b")})
	if err := l.DeleteVolume(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	_, err := l.Volume("gone")
	wantErr(t, "Volume after delete", err, storage.ErrNotFound)
	_, err = l.Read("gone", 0)
	wantErr(t, "Read after delete", err, storage.ErrNotFound)
	_, err = l.Brick("gone", storage.BrickKey{})
	wantErr(t, "Brick after delete", err, storage.ErrNotFound)
	_, err = l.Append(ctx, "gone", storage.Tile{Value: []byte("x")})
	wantErr(t, "Append after delete", err, storage.ErrNotFound)
	wantErr(t, "second delete", l.DeleteVolume(ctx, "gone"), storage.ErrNotFound)
	if got, err := l.Read("other", 0); err != nil || string(got.Value) != "b" {
		t.Fatalf("other volume after delete: %q, %v", got.Value, err)
	}
	info := mustCreate(t, l, "gone")
	if info.NextOffset != 0 {
		t.Fatalf("recreated volume has NextOffset %d", info.NextOffset)
	}
	if off := mustAppend(t, l, "gone", storage.Tile{Value: []byte("again")}); off != 0 {
		t.Fatalf("recreated volume appended at %d", off)
	}
}

func testClose(t *testing.T, l storage.LDM) {
	ctx := context.Background()
	mustCreate(t, l, "v")
	mustAppend(t, l, "v", storage.Tile{Value: []byte("a")})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "second Close", l.Close(), storage.ErrClosed)
	_, err := l.CreateVolume(ctx, Meta("w"))
	wantErr(t, "CreateVolume after Close", err, storage.ErrClosed)
	_, err = l.Volume("v")
	wantErr(t, "Volume after Close", err, storage.ErrClosed)
	_, err = l.Volumes()
	wantErr(t, "Volumes after Close", err, storage.ErrClosed)
	_, err = l.Append(ctx, "v", storage.Tile{Value: []byte("b")})
	wantErr(t, "Append after Close", err, storage.ErrClosed)
	_, err = l.Read("v", 0)
	wantErr(t, "Read after Close", err, storage.ErrClosed)
	_, err = l.Brick("v", storage.BrickKey{})
	wantErr(t, "Brick after Close", err, storage.ErrClosed)
	_, err = l.Bricks("v", 0)
	wantErr(t, "Bricks after Close", err, storage.ErrClosed)
	wantErr(t, "Wait after Close", l.Wait(ctx, "v", 5), storage.ErrClosed)
	wantErr(t, "DeleteVolume after Close", l.DeleteVolume(ctx, "v"), storage.ErrClosed)
}

func testOwnership(t *testing.T, l storage.LDM) {
	m := Meta("v")
	m.Labels = map[string]string{"k": "v"}
	m.Spacing = []float64{1, 2, 3}
	if _, err := l.CreateVolume(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	m.Labels["k"] = "changed"
	m.Spacing[0] = 9
	info, _ := l.Volume("v")
	info.Labels["k"] = "changed too"
	info.Spacing[1] = 9
	if info, _ := l.Volume("v"); info.Labels["k"] != "v" || info.Spacing[0] != 1 || info.Spacing[1] != 2 {
		t.Fatalf("metadata aliased by a caller: %+v", info.VolumeMeta)
	}
	in := []byte("hello")
	mustAppend(t, l, "v", storage.Tile{Value: in})
	in[0] = 'J'
	got, _ := l.Read("v", 0)
	got.Value[1] = 'E'
	if again, _ := l.Read("v", 0); string(again.Value) != "hello" {
		t.Fatalf("stored tile aliased by a caller: %q", again.Value)
	}
}

func testConcurrent(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	const writers, per = 4, 40
	var wg sync.WaitGroup
	offsets := make([][]uint64, writers)
	errs := make(chan error, writers*2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				seed := uint64(w*1000 + i)
				off, err := l.Append(ctx, "v", storage.Tile{Value: seededValue(seed)})
				if err != nil {
					errs <- err
					return
				}
				offsets[w] = append(offsets[w], off)
			}
		}()
	}
	// A follower reads every tile as it appears.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for off := uint64(0); off < writers*per; off++ {
			if err := l.Wait(ctx, "v", off); err != nil {
				errs <- err
				return
			}
			tile, err := l.Read("v", off)
			if err != nil {
				errs <- fmt.Errorf("Read(%d): %w", off, err)
				return
			}
			if len(tile.Value) < 8 || !bytes.Equal(tile.Value, seededValue(binary.LittleEndian.Uint64(tile.Value))) {
				errs <- fmt.Errorf("Read(%d): wrong bytes", off)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for w := range writers {
		for i, off := range offsets[w] {
			if seen[off] {
				t.Fatalf("offset %d assigned twice", off)
			}
			seen[off] = true
			tile, err := l.Read("v", off)
			if err != nil || !bytes.Equal(tile.Value, seededValue(uint64(w*1000+i))) {
				t.Fatalf("Read(%d) = %d bytes, %v; want the tile of seed %d", off, len(tile.Value), err, w*1000+i)
			}
		}
	}
}

func testIterate(t *testing.T, l storage.LDM) {
	mustCreate(t, l, "v")
	for i := range 5 {
		mustAppend(t, l, "v", storage.Tile{Value: Value(uint64(i), 10)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []uint64
	if err := storage.Iterate(ctx, l, "v", 2, false, func(tile storage.Tile) error {
		got = append(got, tile.Offset)
		return nil
	}); err != nil || fmt.Sprint(got) != "[2 3 4]" {
		t.Fatalf("Iterate from 2 = %v, %v", got, err)
	}
	// Following: a writer adds three tiles; the follower stops after the
	// eighth tile.
	stop := errors.New("enough")
	done := make(chan error, 1)
	seen := make(chan uint64, 16)
	go func() {
		done <- storage.Iterate(ctx, l, "v", 4, true, func(tile storage.Tile) error {
			seen <- tile.Offset
			if tile.Offset == 7 {
				return stop
			}
			return nil
		})
	}()
	if off := <-seen; off != 4 {
		t.Fatalf("follow started at %d", off)
	}
	for i := 5; i < 8; i++ {
		mustAppend(t, l, "v", storage.Tile{Value: Value(uint64(i), 10)})
		if off := <-seen; off != uint64(i) {
			t.Fatalf("follow saw %d, want %d", off, i)
		}
	}
	if err := <-done; !errors.Is(err, stop) {
		t.Fatalf("follow returned %v", err)
	}
}

// seededValue returns tile bytes that name their seed in the first eight
// bytes (little-endian), so a reader can check a tile it did not write.
func seededValue(seed uint64) []byte {
	v := Value(seed, 100+int(seed%300))
	binary.LittleEndian.PutUint64(v, seed)
	return v
}

// testReplicationIndex checks the rule of storage.Tile.Index: callers
// leave it zero; an implementation reports 0 everywhere when nothing
// replicated the writes, or else the index of each write's command, the
// same for every tile of one Append, increasing from one Append to the
// next and above the index that created the volume. Read, Brick, Iterate
// and Volume agree.
func testReplicationIndex(t *testing.T, l storage.LDM) {
	info := mustCreate(t, l, "v")
	if got, err := l.Volume("v"); err != nil || got.Index != info.Index {
		t.Fatalf("Volume index %d, %v; CreateVolume returned %d", got.Index, err, info.Index)
	}
	key := func(i int) storage.BrickKey { return storage.BrickKey{X: uint32(i)} }
	var calls [][]int // offsets written by each Append
	next := 0
	for _, n := range []int{1, 3, 1, 2} {
		var tiles []storage.Tile
		var offs []int
		for range n {
			tiles = append(tiles, storage.Tile{Value: Value(uint64(next), 16), HasKey: true, Key: key(next)})
			offs = append(offs, next)
			next++
		}
		mustAppend(t, l, "v", tiles...)
		calls = append(calls, offs)
	}
	index := make([]uint64, next)
	for off := range next {
		tile, err := l.Read("v", uint64(off))
		if err != nil {
			t.Fatalf("Read(%d): %v", off, err)
		}
		index[off] = tile.Index
		brick, err := l.Brick("v", key(off))
		if err != nil || brick.Index != tile.Index {
			t.Fatalf("Brick(%d) index %d, %v; Read says %d", off, brick.Index, err, tile.Index)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := storage.Iterate(ctx, l, "v", 0, false, func(tile storage.Tile) error {
		if tile.Index != index[tile.Offset] {
			return fmt.Errorf("iterate: offset %d index %d; Read says %d", tile.Offset, tile.Index, index[tile.Offset])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	replicated := info.Index != 0
	prev := info.Index
	for _, offs := range calls {
		first := index[offs[0]]
		for _, off := range offs {
			if index[off] != first {
				t.Fatalf("one Append wrote indexes %d and %d (offsets %v)", first, index[off], offs)
			}
		}
		switch {
		case !replicated && first != 0:
			t.Fatalf("volume index 0 but offset %d has index %d: 0 means nothing replicated", offs[0], first)
		case replicated && first <= prev:
			t.Fatalf("offset %d has index %d, not above the previous command's %d", offs[0], first, prev)
		}
		prev = first
	}
}
