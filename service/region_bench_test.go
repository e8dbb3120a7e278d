package service_test

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkReadRegion compares ReadRegion of a 512^3 uint16 box with
// StreamBricks of the same 512 bricks (64^3, 512 KiB each), served from a
// file store over loopback h2c with the connect protocol, alternating the
// two in one run: it reports the MB/s of each and their ratio. It also
// reports the read budget the server held at most during ReadRegion (the
// memory a call holds: one brick row and one message) for boxes 512 voxels
// wide and 64 and 512 deep, and the process's peak heap during each.
func BenchmarkReadRegion(b *testing.B) {
	store, err := storage.Open(b.TempDir(), storage.Config{Sync: storage.SyncNone})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	shape, brick := storage.Shape{X: 512, Y: 512, Z: 512}, storage.Shape{X: 64, Y: 64, Z: 64}
	ctx := context.Background()
	if _, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: "big", Shape: shape, DataType: storage.Uint16, BrickShape: brick}); err != nil {
		b.Fatal(err)
	}
	v := make([]byte, 64*64*64*2)
	for i := range v {
		v[i] = byte(i * 7)
	}
	for z := range uint32(8) {
		for y := range uint32(8) {
			for x := range uint32(8) {
				if _, err := store.Append(ctx, "big", storage.Tile{Value: v, HasKey: true, Key: storage.BrickKey{X: x, Y: y, Z: z}}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	ts := startServer(b, serverOptions{store: store})
	c := ts.clients(b, protocols[0]).volumes
	const total = 512 * 512 * 512 * 2

	streamBricks := func() int64 {
		s, err := c.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "big"}))
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for s.Receive() {
			n += int64(len(s.Msg().GetTile().GetValue()))
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		s.Close()
		return n
	}
	readRegion := func(depth uint32) int64 {
		s, err := c.ReadRegion(ctx, connect.NewRequest(&ldmv1.ReadRegionRequest{Volume: "big", Box: box(0, 0, 0, 512, 512, depth)}))
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for s.Receive() {
			n += int64(len(s.Msg().GetData()))
		}
		if err := s.Err(); err != nil {
			b.Fatal(err)
		}
		s.Close()
		return n
	}
	// peak samples the read budget held and the heap while fn runs.
	peak := func(fn func()) (held, heap uint64) {
		var maxHeld, maxHeap atomic.Uint64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			var ms runtime.MemStats
			for i := 0; ; i++ {
				if h := uint64(service.ReadBytesHeld(ts.Server)); h > maxHeld.Load() {
					maxHeld.Store(h)
				}
				if i%20 == 0 {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > maxHeap.Load() {
						maxHeap.Store(ms.HeapInuse)
					}
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		fn()
		close(stop)
		wg.Wait()
		return maxHeld.Load(), maxHeap.Load()
	}

	var sbTime, rrTime time.Duration
	var sbHeap, rrHeap, rrHeld uint64
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		var n int64
		_, h := peak(func() { n = streamBricks() })
		sbTime += time.Since(start)
		sbHeap = max(sbHeap, h)
		if n != total {
			b.Fatalf("StreamBricks sent %d bytes", n)
		}
		start = time.Now()
		held, h := peak(func() { n = readRegion(512) })
		rrTime += time.Since(start)
		rrHeap, rrHeld = max(rrHeap, h), max(rrHeld, held)
		if n != total {
			b.Fatalf("ReadRegion sent %d bytes", n)
		}
	}
	shallowHeld, _ := peak(func() { readRegion(64) })
	mb := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mb(sbTime), "streambricks-MB/s")
	b.ReportMetric(mb(rrTime), "readregion-MB/s")
	b.ReportMetric(mb(rrTime)/mb(sbTime), "ratio")
	b.ReportMetric(float64(rrHeld)/(1<<20), "readregion-held-MiB-512deep")
	b.ReportMetric(float64(shallowHeld)/(1<<20), "readregion-held-MiB-64deep")
	b.ReportMetric(float64(sbHeap)/(1<<20), "streambricks-heap-MiB")
	b.ReportMetric(float64(rrHeap)/(1<<20), "readregion-heap-MiB")
}
