package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

func TestStore_Reopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := storage.Config{BlockBytes: 8 << 10, BlockTiles: 16}
	s := openStore(t, dir, cfg)
	create(t, s, "v")
	create(t, s, "w")
	const n = 300
	for i := range n {
		tile := storage.Tile{Value: ldmtest.Value(uint64(i), i%700), Index: uint64(i + 1)}
		if i%5 == 0 {
			tile.HasKey, tile.Key = true, storage.BrickKey{LOD: uint32(i % 2), X: uint32(i % 7)}
		}
		appendTiles(t, s, "v", tile)
	}
	appendTiles(t, s, "w", storage.Tile{Value: []byte("w0")})
	bricks0, _ := s.Bricks("v", 0)
	bricks1, _ := s.Bricks("v", 1)
	info, _ := s.Volume("v")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	blocks, _ := filepath.Glob(filepath.Join(dir, "v", "*.data"))
	if len(blocks) < 5 {
		t.Fatalf("%d blocks after %d tiles with 8 KiB blocks; rollover not exercised", len(blocks), n)
	}

	s2 := openStore(t, dir, cfg)
	info2, err := s2.Volume("v")
	if err != nil || info2.NextOffset != n || info2.SizeBytes != info.SizeBytes || !info2.CreatedAt.Equal(info.CreatedAt) {
		t.Fatalf("reopened Volume = %+v, %v; want %+v", info2, err, info)
	}
	for i := range n {
		checkTile(t, s2, "v", uint64(i), uint64(i), i%700)
	}
	for lod, want := range []map[storage.BrickKey]uint64{bricks0, bricks1} {
		got, err := s2.Bricks("v", uint32(lod))
		if err != nil || len(got) != len(want) || len(got) == 0 {
			t.Fatalf("Bricks(%d) after reopen = %v, want %v", lod, got, want)
		}
		for k, off := range want {
			if got[k] != off {
				t.Fatalf("Bricks(%d)[%+v] = %d, want %d", lod, k, got[k], off)
			}
		}
	}
	if got := s2.AppliedIndex(); got != n {
		t.Fatalf("AppliedIndex = %d, want %d", got, n)
	}
	if off := appendTiles(t, s2, "v", storage.Tile{Value: []byte("more")}); off != n {
		t.Fatalf("append after reopen at %d, want %d", off, n)
	}
	vols, _ := s2.Volumes()
	if len(vols) != 2 {
		t.Fatalf("%d volumes after reopen", len(vols))
	}
}

func TestStore_Locked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openStore(t, dir, storage.Config{})
	if _, err := storage.Open(dir, storage.Config{Logger: discardLogger()}); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestStore_ConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []storage.Config{{BlockBytes: -1}, {BlockTiles: -1}, {MaxTileBytes: -5}, {Sync: 7}} {
		if _, err := storage.Open(t.TempDir(), cfg); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Fatalf("Open(%+v) = %v, want ErrInvalidArgument", cfg, err)
		}
	}
	for _, name := range []string{"batch", "always", "none"} {
		p, err := storage.ParseSyncPolicy(name)
		if err != nil || p.String() != name {
			t.Fatalf("ParseSyncPolicy(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := storage.ParseSyncPolicy("sometimes"); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("ParseSyncPolicy(sometimes) = %v", err)
	}
}

func TestStore_DeleteRemovesOnlyItsFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, storage.Config{})
	create(t, s, "a")
	create(t, s, "b")
	appendTiles(t, s, "a", storage.Tile{Value: []byte("x")})
	if err := s.DeleteVolume(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, ","); got != ".lock,b" {
		t.Fatalf("store directory after delete holds %s", got)
	}
	// A crash between the trash rename and its removal leaves trash that
	// Open removes.
	if err := os.Mkdir(filepath.Join(dir, ".trash-b-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openStore(t, dir, storage.Config{})
	if _, err := os.Stat(filepath.Join(dir, ".trash-b-1")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("trash left after Open: %v", err)
	}
	if _, err := s2.Volume("a"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("deleted volume after reopen: %v", err)
	}
}

func TestStore_AppliedIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, storage.Config{})
	if s.AppliedIndex() != 0 {
		t.Fatal("fresh store has a non-zero applied index")
	}
	m := ldmtest.Meta("v")
	m.Index = 7
	if _, err := s.CreateVolume(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if got := s.AppliedIndex(); got != 7 {
		t.Fatalf("AppliedIndex after create at 7 = %d", got)
	}
	appendTiles(t, s, "v", storage.Tile{Value: []byte("a"), Index: 9})
	if got := s.AppliedIndex(); got != 9 {
		t.Fatalf("AppliedIndex after tile at 9 = %d", got)
	}
	if err := s.DeleteVolume(context.Background(), "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAppliedIndex(10); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAppliedIndex(4); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openStore(t, dir, storage.Config{})
	if got := s2.AppliedIndex(); got != 10 {
		t.Fatalf("AppliedIndex after reopen = %d, want 10", got)
	}
	s2.Close()
	if err := s2.SetAppliedIndex(11); !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("SetAppliedIndex after Close = %v", err)
	}
}

func TestStore_ReadInto(t *testing.T) {
	s := openStore(t, t.TempDir(), storage.Config{})
	create(t, s, "v")
	appendTiles(t, s, "v", storage.Tile{Value: ldmtest.Value(1, 1000)}, storage.Tile{Value: ldmtest.Value(2, 10)})
	buf := make([]byte, 0, 100)
	got, err := s.ReadInto("v", 1, buf)
	if err != nil || string(got.Value) != string(ldmtest.Value(2, 10)) || &got.Value[0] != &buf[:1][0] {
		t.Fatalf("ReadInto with a large enough buffer: %v, aliases buf: %v", err, err == nil && &got.Value[0] == &buf[:1][0])
	}
	got, err = s.ReadInto("v", 0, buf)
	if err != nil || string(got.Value) != string(ldmtest.Value(1, 1000)) {
		t.Fatalf("ReadInto with a small buffer: %v", err)
	}
	if _, err := s.ReadInto("v", 2, buf); !errors.Is(err, storage.ErrOutOfRange) {
		t.Fatalf("ReadInto past the end: %v", err)
	}
	reuse := make([]byte, 1000)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := s.ReadInto("v", 0, reuse); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("ReadInto with a reused buffer allocates %.1f times per read", n)
	}
}

func TestStore_MaxSizeTile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, storage.Config{Sync: storage.SyncNone, BlockBytes: 1 << 20})
	create(t, s, "big")
	buf := make([]byte, storage.DefaultMaxTileBytes+1)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = byte(i >> 12)
	}
	if _, err := s.Append(context.Background(), "big", storage.Tile{Value: buf}); !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("tile of DefaultMaxTileBytes+1 = %v, want ErrTooLarge", err)
	}
	max := buf[:storage.DefaultMaxTileBytes]
	appendTiles(t, s, "big", storage.Tile{Value: []byte("small")}, storage.Tile{Value: max}, storage.Tile{Value: []byte("after")})
	got, err := s.Read("big", 1)
	if err != nil || len(got.Value) != len(max) || got.CRC32C != storage.Checksum(max) {
		t.Fatalf("Read of a 256 MiB tile: %d bytes, %v", len(got.Value), err)
	}
	got = storage.Tile{}
	if after, err := s.Read("big", 2); err != nil || string(after.Value) != "after" {
		t.Fatalf("tile after the 256 MiB one: %q, %v", after.Value, err)
	}
}
