package storage_test

import (
	"testing"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

func TestMemory_Conformance(t *testing.T) {
	ldmtest.RunConformance(t, func(tb testing.TB) storage.LDM {
		m := storage.NewMemory(ldmtest.MaxTileBytes)
		tb.Cleanup(func() { m.Close() })
		return m
	})
}

func TestStore_Conformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  storage.Config
	}{
		{"batch", storage.Config{}},
		{"always_tiny_blocks", storage.Config{Sync: storage.SyncAlways, BlockBytes: 4 << 10, BlockTiles: 8}},
		{"none_tiny_blocks", storage.Config{Sync: storage.SyncNone, BlockBytes: 1 << 10, BlockTiles: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ldmtest.RunConformance(t, func(tb testing.TB) storage.LDM {
				cfg := tc.cfg
				cfg.MaxTileBytes = ldmtest.MaxTileBytes
				cfg.Logger = discardLogger()
				s, err := storage.Open(tb.TempDir(), cfg)
				if err != nil {
					tb.Fatal(err)
				}
				tb.Cleanup(func() { s.Close() })
				return s
			})
		})
	}
}
