package storage_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openStore opens a store in dir and closes it at cleanup.
func openStore(tb testing.TB, dir string, cfg storage.Config) *storage.Store {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s, err := storage.Open(dir, cfg)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func create(tb testing.TB, l storage.LDM, name string) {
	tb.Helper()
	if _, err := l.CreateVolume(context.Background(), ldmtest.Meta(name)); err != nil {
		tb.Fatalf("CreateVolume(%q): %v", name, err)
	}
}

func appendTiles(tb testing.TB, l storage.LDM, vol string, tiles ...storage.Tile) uint64 {
	tb.Helper()
	first, err := l.Append(context.Background(), vol, tiles...)
	if err != nil {
		tb.Fatalf("Append(%q): %v", vol, err)
	}
	return first
}

// checkTile fails unless vol's tile at off holds ldmtest.Value(seed, n).
func checkTile(tb testing.TB, l storage.LDM, vol string, off, seed uint64, n int) {
	tb.Helper()
	got, err := l.Read(vol, off)
	if err != nil {
		tb.Fatalf("Read(%q, %d): %v", vol, off, err)
	}
	if !bytes.Equal(got.Value, ldmtest.Value(seed, n)) {
		tb.Fatalf("Read(%q, %d): %d bytes that differ from what was appended", vol, off, len(got.Value))
	}
}
