package client_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// startFileServer serves a file store in a temporary directory on
// 127.0.0.1 until the benchmark ends.
func startFileServer(tb testing.TB) string {
	tb.Helper()
	st, err := storage.Open(tb.TempDir(), storage.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := service.New(service.Config{Store: st, Logger: quietLogger(), AdvertiseAddr: ln.Addr().String()})
	if err != nil {
		tb.Fatal(err)
	}
	srv := service.NewHTTPServer(svc.Handler(), nil, quietLogger())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
		st.Close()
	})
	return "http://" + ln.Addr().String()
}

// heapPeak samples the heap until stop is called and returns the largest
// heap in use (live and not yet collected objects) and the largest live
// heap (as of the last collection).
func heapPeak() (stop func() (heap, live uint64)) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var peak, live uint64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64()+sample[1].Value.Uint64())
			live = max(live, sample[2].Value.Uint64())
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	return func() (uint64, uint64) {
		close(quit)
		wg.Wait()
		return peak, live
	}
}

// BenchmarkImport imports procedural 2048x2048 uint8 volumes (64^3 bricks,
// every level of detail) into a file store served on loopback, and in the
// same iteration sends the same number of bricks of the same size with a
// plain WriteTileStream loop (the store's append rate through the API,
// with no source to read and no pyramid to build). It reports both rates,
// their ratio, and the peak heap of the process (client and server). With
// LDM_BENCH_SERVER=http://host:port it uses that server instead (an `ldm
// serve` process), and the peak heap is the client's alone;
// LDM_BENCH_DEPTHS=1024,4096 sets the depths (4 and 16 GiB).
func BenchmarkImport(b *testing.B) {
	depths := []uint32{64, 256}
	if v := os.Getenv("LDM_BENCH_DEPTHS"); v != "" { // e.g. 1024,4096 for 4 and 16 GiB
		depths = nil
		for _, f := range strings.Split(v, ",") {
			d, err := strconv.ParseUint(f, 10, 32)
			if err != nil {
				b.Fatalf("LDM_BENCH_DEPTHS=%s: %v", v, err)
			}
			depths = append(depths, uint32(d))
		}
	}
	for _, z := range depths {
		b.Run(fmt.Sprintf("2048x2048x%d", z), func(b *testing.B) {
			base := os.Getenv("LDM_BENCH_SERVER")
			if base == "" {
				base = startFileServer(b)
			}
			s := &single{base: base}
			im := s.importer(b)
			ctx := context.Background()
			shape := storage.Shape{X: 2048, Y: 2048, Z: z}
			p, err := pyramid.NewProcedural(shape, storage.Uint8)
			if err != nil {
				b.Fatal(err)
			}
			meta := pyramid.ProceduralMeta("bench", shape, storage.Uint8)
			if err := meta.Normalize(); err != nil {
				b.Fatal(err)
			}
			count := pyramid.BrickCount(meta)
			brick := make([]byte, 64*64*64)
			for i := range brick {
				brick[i] = byte(i * 7)
			}
			total := int64(count) * int64(len(brick))
			var impTime, appTime, impCPU, appCPU time.Duration
			var peak, live uint64
			i := 0
			for b.Loop() {
				i++
				// The baseline: the same bricks, already cut. The two runs
				// alternate which goes first.
				baseline := func() {
					name := fmt.Sprintf("append-%d", i)
					if _, err := im.Volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: apiconv.MetaToAPI(withName(meta, name))})); err != nil {
						b.Fatal(err)
					}
					t0, c0 := time.Now(), cpuTime()
					appendBricks(b, im, name, meta, brick)
					appTime += time.Since(t0)
					appCPU += cpuTime() - c0
					deleteVolume(b, im, name)
				}
				imported := func() {
					name := fmt.Sprintf("import-%d", i)
					stop := heapPeak()
					t0, c0 := time.Now(), cpuTime()
					if _, err := im.ImportReader(ctx, p.Reader(), apiconv.MetaToAPI(withName(meta, name)), client.ImportOptions{}); err != nil {
						b.Fatal(err)
					}
					impTime += time.Since(t0)
					impCPU += cpuTime() - c0
					h, l := stop()
					peak, live = max(peak, h), max(live, l)
					deleteVolume(b, im, name)
				}
				if i%2 == 1 {
					baseline()
					imported()
				} else {
					imported()
					baseline()
				}
			}
			imp := float64(total) * float64(i) / impTime.Seconds() / 1e6
			app := float64(total) * float64(i) / appTime.Seconds() / 1e6
			b.ReportMetric(imp, "import-MB/s")
			b.ReportMetric(app, "append-MB/s")
			b.ReportMetric(imp/app, "x_append")
			gb := float64(total) * float64(i) / 1e9
			b.ReportMetric(impCPU.Seconds()/gb, "import-cpu-s/GB")
			b.ReportMetric(appCPU.Seconds()/gb, "append-cpu-s/GB")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(live)/(1<<20), "peak-live-MiB")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime returns the CPU time the process has used (with an in-process
// server, the server's too).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func withName(m storage.VolumeMeta, name string) storage.VolumeMeta {
	m.Name = name
	return m
}

func deleteVolume(tb testing.TB, im client.Importer, name string) {
	tb.Helper()
	if _, err := im.Volumes.DeleteVolume(context.Background(), connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: name})); err != nil {
		tb.Fatal(err)
	}
}

// appendBricks sends every brick key of meta with value v through one
// WriteTileStream and waits for every acknowledgement.
func appendBricks(tb testing.TB, im client.Importer, name string, meta storage.VolumeMeta, v []byte) {
	tb.Helper()
	stream := im.Tiles.WriteTileStream(context.Background())
	count := pyramid.BrickCount(meta)
	errc := make(chan error, 1)
	go func() {
		for range count {
			if _, err := stream.Receive(); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	first := true
	crc := storage.Checksum(v)
	for lod := range meta.LODCount {
		g := meta.BrickGrid(lod)
		for z := range g.Z {
			for y := range g.Y {
				for x := range g.X {
					req := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: v, Crc32C: crc, Key: &ldmv1.BrickKey{Lod: lod, X: x, Y: y, Z: z}}, RequestId: client.NewRequestID()}
					if first {
						req.Volume, first = name, false
					}
					if err := stream.Send(req); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
	}
	if err := stream.CloseRequest(); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	_ = stream.CloseResponse()
}
