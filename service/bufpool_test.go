package service_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// TestReadTile_PooledBuffersUnderConcurrency reads tiles of different
// sizes concurrently from the file store (whose reads use pooled buffers)
// and checks every byte: a buffer must not be reused before its response
// is written.
func TestReadTile_PooledBuffersUnderConcurrency(t *testing.T) {
	t.Parallel()
	store, err := storage.Open(t.TempDir(), storage.Config{Sync: storage.SyncNone})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sizes := []int{1, 4 << 10, 64 << 10, 300 << 10}
	var all []int
	for range 4 {
		all = append(all, sizes...)
	}
	seedVolume(t, store, all...)
	ts := startServer(t, serverOptions{store: store})
	for _, p := range protocols {
		c := ts.clients(t, p)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 12 {
					off := (g*7 + i) % len(all)
					res, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: uint64(off)}))
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(res.Msg.GetTile().GetValue(), tileBytes(all[off], byte(off))) {
						errs <- fmt.Errorf("%s: tile %d has the wrong bytes", p.name, off)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
}
