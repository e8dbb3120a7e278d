package service

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkViews_chunkVsGetBrick reads the same 64^3 uint16 bricks (512
// KiB) of a store on disk at 64 concurrent requests over one h2c
// connection pool: as Zarr chunks (GET /zarr/VOLUME/0/Z/Y/X) and through
// the API's GetBrick (Connect, binary), in the same run.
//
//	go test -run '^$' -bench BenchmarkViews_chunkVsGetBrick -benchtime 3s ./service/
func BenchmarkViews_chunkVsGetBrick(b *testing.B) {
	st, err := storage.Open(b.TempDir(), storage.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	m := storage.VolumeMeta{Name: "bench", Shape: storage.Shape{X: 256, Y: 256, Z: 256}, DataType: storage.Uint16}
	putVolume(b, st, m)
	vs := startViews(b, st, ViewConfig{})
	const brickBytes = 64 * 64 * 64 * 2
	const concurrency = 64
	par := max(1, concurrency/runtime.GOMAXPROCS(0))

	b.Run("zarr_chunk", func(b *testing.B) {
		var n atomic.Uint64
		b.SetBytes(brickBytes)
		b.SetParallelism(par)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, brickBytes+1)
			for pb.Next() {
				i := n.Add(1)
				req, _ := http.NewRequest(http.MethodGet, vs.url+chunkPath(i), nil)
				res, err := vs.c.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				k, _ := io.ReadFull(res.Body, buf)
				res.Body.Close()
				if res.StatusCode != 200 || k != brickBytes {
					b.Errorf("%d, %d bytes", res.StatusCode, k)
					return
				}
			}
		})
	})
	b.Run("GetBrick", func(b *testing.B) {
		c := ldmv1connect.NewVolumeServiceClient(vs.c, vs.url, connect.WithReadMaxBytes(1<<30))
		var n atomic.Uint64
		b.SetBytes(brickBytes)
		b.SetParallelism(par)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				res, err := c.GetBrick(context.Background(), connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "bench", Key: &ldmv1.BrickKey{X: uint32(i % 4), Y: uint32(i / 4 % 4), Z: uint32(i / 16 % 4)}}))
				if err != nil || len(res.Msg.GetTile().GetValue()) != brickBytes {
					b.Error(err)
					return
				}
			}
		})
	})
}

// chunkPath is the Zarr v2 path of brick i of the 4x4x4 grid.
func chunkPath(i uint64) string {
	return "/zarr/bench/0/" + itoa(i/16%4) + "/" + itoa(i/4%4) + "/" + itoa(i%4)
}

func itoa(n uint64) string { return string(rune('0' + n)) }
