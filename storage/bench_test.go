package storage_test

// Benchmarks. Defaults are small so `go test -run '^$' -bench . ./storage/`
// finishes in a minute or two. LDM_BENCH_BIG=1 makes the read-heap
// benchmark serve a 4 GiB volume (it needs that much free disk) instead
// of 64 MiB.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

var benchSizes = []struct {
	name string
	n    int
}{{"256KiB", 256 << 10}, {"2MiB", 2 << 20}}

// baselineWrite writes count tiles of size bytes to a new file with one
// write and one fdatasync per tile (the same sync call the store uses),
// and returns the throughput in bytes/s.
func baselineWrite(tb testing.TB, dir string, size, count int) float64 {
	tb.Helper()
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("baseline-%d", rand.Uint64())))
	if err != nil {
		tb.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := ldmtest.Value(1, size)
	start := time.Now()
	for range count {
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			tb.Fatal(err)
		}
	}
	return float64(size*count) / time.Since(start).Seconds()
}

// BenchmarkAppend measures durable appends (SyncBatch) and reports
// x_baseline: the store's throughput divided by that of a plain sequential
// write+fdatasync per tile of the same size, measured in the same
// directory just before and just after the store's run.
func BenchmarkAppend(b *testing.B) {
	for _, sz := range benchSizes {
		for _, mode := range []struct {
			name    string
			writers int
			batch   int
		}{{"writers=1", 1, 1}, {"writers=4", 4, 1}, {"batch=8", 1, 8}} {
			b.Run(sz.name+"/"+mode.name, func(b *testing.B) {
				dir := b.TempDir()
				s := openStore(b, dir, storage.Config{})
				create(b, s, "v")
				tiles := make([]storage.Tile, mode.batch)
				for i := range tiles {
					tiles[i] = storage.Tile{Value: ldmtest.Value(uint64(i), sz.n)}
				}
				// The baseline runs before and after the store, in the same
				// directory, and the two rates are averaged, so drift in a
				// shared disk's speed hits both sides alike.
				baseBefore := baselineWrite(b, dir, sz.n, max(16, 32<<20/sz.n))
				b.SetBytes(int64(sz.n * mode.batch))
				b.ReportAllocs()
				var mu sync.Mutex
				var lat []time.Duration
				start := time.Now()
				n := 0
				if mode.writers == 1 {
					for b.Loop() {
						t0 := time.Now()
						if _, err := s.Append(context.Background(), "v", tiles...); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(t0))
						n++
					}
				} else {
					b.SetParallelism(mode.writers) // GOMAXPROCS*writers goroutines
					b.RunParallel(func(pb *testing.PB) {
						var mine []time.Duration
						for pb.Next() {
							t0 := time.Now()
							if _, err := s.Append(context.Background(), "v", tiles...); err != nil {
								b.Error(err)
								return
							}
							mine = append(mine, time.Since(t0))
						}
						mu.Lock()
						lat = append(lat, mine...)
						mu.Unlock()
					})
					n = len(lat)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				storeBps := float64(sz.n*mode.batch*n) / elapsed.Seconds()
				base := (baseBefore + baselineWrite(b, dir, sz.n, min(max(n*mode.batch, 16), 512))) / 2
				b.ReportMetric(storeBps/base, "x_baseline")
				b.ReportMetric(base/1e6, "baseline_MB/s")
				b.ReportMetric(float64(n*mode.batch)/elapsed.Seconds(), "tiles/s")
				reportPercentiles(b, lat)
			})
		}
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sortDurations(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_µs")
}

func sortDurations(d []time.Duration) {
	for i := 1; i < len(d); i++ {
		for j := i; j > 0 && d[j] < d[j-1]; j-- {
			d[j], d[j-1] = d[j-1], d[j]
		}
	}
}

// readVolume builds (SyncNone) a volume of count tiles of size bytes.
func readVolume(b *testing.B, count, size int) *storage.Store {
	b.Helper()
	s := openStore(b, b.TempDir(), storage.Config{Sync: storage.SyncNone})
	create(b, s, "v")
	val := ldmtest.Value(7, size)
	batch := make([]storage.Tile, 0, 16)
	for i := 0; i < count; i++ {
		batch = append(batch, storage.Tile{Value: val, HasKey: true, Key: storage.BrickKey{X: uint32(i)}})
		if len(batch) == cap(batch) || i == count-1 {
			appendTiles(b, s, "v", batch...)
			batch = batch[:0]
		}
	}
	return s
}

// BenchmarkRead measures random reads of 256 KiB tiles from the page
// cache: one pread into a new buffer plus the CRC check.
func BenchmarkRead(b *testing.B) {
	const size, count = 256 << 10, 256
	s := readVolume(b, count, size)
	rng := rand.New(rand.NewPCG(1, 2))
	b.SetBytes(size)
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := s.Read("v", uint64(rng.IntN(count))); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "tiles/s")
}

// BenchmarkReadInto is BenchmarkRead with a reused buffer (no allocation).
func BenchmarkReadInto(b *testing.B) {
	const size, count = 256 << 10, 256
	s := readVolume(b, count, size)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, size)
	b.SetBytes(size)
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		if _, err := s.ReadInto("v", uint64(rng.IntN(count)), buf); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "tiles/s")
}

// BenchmarkReadScaling compares one reader with two on the same volume and
// reports the speedup (two readers' throughput over one reader's), with
// Read (a new buffer per tile) and ReadInto (a buffer per reader).
func BenchmarkReadScaling(b *testing.B) {
	b.Run("Read", func(b *testing.B) { benchReadScaling(b, false) })
	b.Run("ReadInto", func(b *testing.B) { benchReadScaling(b, true) })
}

func benchReadScaling(b *testing.B, into bool) {
	const size, count, perRound = 256 << 10, 256, 400
	s := readVolume(b, count, size)
	run := func(readers int) time.Duration {
		var wg sync.WaitGroup
		start := time.Now()
		for r := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(r), 9))
				var buf []byte
				if into {
					buf = make([]byte, size)
				}
				for range perRound / readers {
					if _, err := s.ReadInto("v", uint64(rng.IntN(count)), buf); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	var one, two time.Duration
	b.SetBytes(2 * perRound * size)
	for b.Loop() {
		one += run(1)
		two += run(2)
	}
	b.ReportMetric(one.Seconds()/two.Seconds(), "speedup_2_readers")
	rounds := float64(b.N)
	b.ReportMetric(rounds*perRound*size/one.Seconds()/1e9, "GB/s_1_reader")
	b.ReportMetric(rounds*perRound*size/two.Seconds()/1e9, "GB/s_2_readers")
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func totalMappedHeap() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// BenchmarkReadHeap reads a volume randomly and reports the Go heap
// (runtime/metrics) at the end: live heap after a GC, the peak of heap
// objects seen while reading, and the volume size for comparison. The heap
// must not grow with the volume: set LDM_BENCH_BIG=1 for a 4 GiB volume.
func BenchmarkReadHeap(b *testing.B) {
	const size = 256 << 10
	count := 256 // 64 MiB
	if os.Getenv("LDM_BENCH_BIG") == "1" {
		count = 16384 // 4 GiB
	}
	s := readVolume(b, count, size)
	runtime.GC()
	rng := rand.New(rand.NewPCG(3, 4))
	var peak uint64
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Read("v", uint64(rng.IntN(count))); err != nil {
			b.Fatal(err)
		}
		if i++; i%64 == 0 {
			peak = max(peak, heapBytes())
		}
	}
	runtime.GC()
	b.ReportMetric(float64(count)*size/(1<<20), "volume_MiB")
	b.ReportMetric(float64(heapBytes())/(1<<20), "live_heap_MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak_heap_MiB")
	b.ReportMetric(float64(totalMappedHeap())/(1<<20), "runtime_total_MiB")
}

// BenchmarkOpen measures Open of a store holding one volume of 1,000,000
// tiles, each with its own brick key (the brick index's worst case), and
// reports the heap the open store holds per tile.
func BenchmarkOpen(b *testing.B) {
	const count = 1_000_000
	dir := b.TempDir()
	{
		s := openStore(b, dir, storage.Config{Sync: storage.SyncNone})
		create(b, s, "v")
		batch := make([]storage.Tile, 0, 1000)
		val := []byte("0123456789abcdef")
		for i := 0; i < count; i++ {
			batch = append(batch, storage.Tile{Value: val, HasKey: true, Key: storage.BrickKey{X: uint32(i % 1000), Y: uint32(i / 1000)}})
			if len(batch) == cap(batch) {
				appendTiles(b, s, "v", batch...)
				batch = batch[:0]
			}
		}
		s.Close()
	}
	// The first Open after the unsynced build also flushes ~110 MB of dirty
	// pages (it fsyncs the active block); it is reported on its own.
	t0 := time.Now()
	warm, err := storage.Open(dir, storage.Config{Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	warm.Close()
	firstOpen := time.Since(t0)
	var heapPerTile float64
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		before := heapBytes()
		c0 := cpuTime()
		b.StartTimer()
		s, err := storage.Open(dir, storage.Config{Logger: discardLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime() - c0
		runtime.GC()
		heapPerTile = float64(heapBytes()-before) / count
		if info, err := s.Volume("v"); err != nil || info.NextOffset != count {
			b.Fatalf("opened volume: %+v, %v", info, err)
		}
		runtime.KeepAlive(s)
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(firstOpen.Milliseconds()), "first_open_ms")
	b.ReportMetric(heapPerTile, "heap_B/tile")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/open")
	// CPU time is the steadier figure on a shared machine.
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu_ms/open")
}

// cpuTime returns the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWaitWake measures how long a follower blocked in Wait takes to
// wake after the append that it waits for returns.
func BenchmarkWaitWake(b *testing.B) {
	s := openStore(b, b.TempDir(), storage.Config{Sync: storage.SyncNone})
	create(b, s, "v")
	ctx := context.Background()
	var total time.Duration
	off := uint64(0)
	for b.Loop() {
		woke := make(chan time.Time, 1)
		go func(off uint64) {
			if err := s.Wait(ctx, "v", off); err != nil {
				b.Error(err)
			}
			woke <- time.Now()
		}(off)
		runtime.Gosched()
		appendTiles(b, s, "v", storage.Tile{Value: []byte("x")})
		appended := time.Now()
		total += max(0, (<-woke).Sub(appended))
		off++
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "wake_µs")
}
