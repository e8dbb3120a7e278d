package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/heapprofiler"
	"github.com/chromedp/cdproto/profiler"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkViewer_huge measures the viewer in headless Chromium (1280x800)
// against an in-process `ldm serve` over loopback on a procedural volume
// stored zstd. By default the volume is 1024x1024x512 uint8 (512 MiB of
// voxels); with LDM_BENCH_HUGE=1 it is 4096x4096x2048 uint8 (32 GiB of
// voxels, 36.6 GiB with its levels, about 100 MiB on disk: the phantom
// compresses well). The volume is written once per run, straight into the
// store (writeProceduralZstd: the pyramid Builder, zstd level 3 on every
// core, appends in batches), and kept for every iteration. It reports:
//
//   - s-write, GiB-voxels and GiB-disk: the time to write the volume, its
//     voxels with every level, and its size on disk;
//   - ms-first-picture and MiB-first-picture: every slice view covered and
//     the 3D view drawn, from navigation start, and the brick bytes fetched
//     for it (goal: 500 ms, 32 MiB);
//   - ms-screen-res: every view at the level that matches its pixels;
//   - ms-slice-move: from moving the three slices to new planes until every
//     view is at screen resolution again (goal: 300 ms);
//   - MiB-heap-max-scrub: the most JavaScript heap (performance.memory)
//     while the slices scrub through every plane along z, y and x, one frame
//     per plane, with the default 512 MiB cache (goal: 640 MiB), after a
//     garbage collection so that earlier pages do not count;
//     MiB-heap-buffers-max-scrub is the same read every 100 ms by DevTools
//     (Runtime.getHeapUsage: used heap plus array buffers' backing stores),
//     which is precise where performance.memory may be rounded. Neither
//     counts the streaming worker's own heap;
//     LDM_BENCH_SCRUB_STEP=N visits every Nth plane instead; s-scrub is
//     how long the scrub took. At the page's zoom the slices draw a coarse
//     level that the cache holds whole, so the same is measured again
//     zoomed in until every slice view draws level 0, where the scrub
//     needs far more bricks than the cache holds: ms-slice-move-zoomed,
//     MiB-heap-max-scrub-zoomed, MiB-heap-buffers-max-scrub-zoomed,
//     MiB-cache-max-scrub-zoomed (the cache's
//     most bytes since the page opened) and s-scrub-zoomed;
//   - MiB-rss-write and MiB-rss-serve: the benchmark process's peak
//     resident memory (VmHWM) while the volume is written and while the
//     server, which runs in it, serves the page (Chromium is another
//     process).
//
// The volume lives in the benchmark's temporary directory and is deleted
// with it. Run it without the race detector, watching the disk:
//
//	LDM_BENCH_HUGE=1 go test -run '^$' -bench BenchmarkViewer_huge -benchtime 3x -timeout 2h ./cmd/ldm
//
// With LDM_BENCH_PROFILE=1 the first load (the page opened from the
// server's page without a volume, so that it stays in one renderer) runs
// under the page's CPU profiler, and the log shows where the main thread's
// time went between the load's marks (first brick, first slices, first
// picture, screen resolution): idle, garbage collection, native work
// (rendering, WebGL, networking: "(program)") and the functions that took
// the most.
func BenchmarkViewer_huge(b *testing.B) {
	shape := storage.Shape{X: 1024, Y: 1024, Z: 512}
	if os.Getenv("LDM_BENCH_HUGE") == "1" {
		shape = storage.Shape{X: 4096, Y: 4096, Z: 2048}
	}
	step := 1
	if s := os.Getenv("LDM_BENCH_SCRUB_STEP"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("LDM_BENCH_SCRUB_STEP=%q: want a whole number of planes, 1 or more", s)
		}
		step = n
	}
	b.Run(fmt.Sprintf("%dx%dx%d_uint8_zstd", shape.X, shape.Y, shape.Z), func(b *testing.B) {
		benchViewerHuge(b, shape, step)
	})
}

func benchViewerHuge(b *testing.B, shape storage.Shape, step int) {
	name := fmt.Sprintf("proc-%dx%dx%d", shape.X, shape.Y, shape.Z)
	dir := b.TempDir()
	meta := pyramid.ProceduralMeta(name, shape, storage.Uint8)
	meta.Codec = storage.Codec{Kind: storage.CodecZstd}
	resetPeakRSS()
	ws, err := writeProceduralZstd(dir, meta, runtime.GOMAXPROCS(0))
	if err != nil {
		b.Fatal(err)
	}
	rssWrite := peakRSS()
	disk, err := diskUsage(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %s: %d bricks, %.2f GiB of voxels as %.2f GiB of zstd frames (%.0fx), %.2f GiB on disk, in %s (%.0f MB/s of voxels); peak RSS %.0f MiB",
		name, ws.bricks, float64(ws.raw)/(1<<30), float64(ws.stored)/(1<<30), float64(ws.raw)/float64(max(ws.stored, 1)),
		float64(disk)/(1<<30), ws.took.Round(time.Millisecond), float64(ws.raw)/1e6/ws.took.Seconds(), float64(rssWrite)/(1<<20))
	// What the writer held is not the server's: give it back before the
	// server's peak is measured.
	debug.FreeOSMemory()
	resetPeakRSS()

	base := startTestServerWith(b, func(c *server.Config) { c.DataDir = dir })
	ctx := testutil.NewBrowser(b, 1280, 800)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		b.Fatal(err)
	}
	sum := map[string]float64{}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		var prof func(marks ...float64)
		if i == 0 && os.Getenv("LDM_BENCH_PROFILE") == "1" {
			prof = startPageProfile(b, ctx, base)
		}
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+name)); err != nil {
			b.Fatal(err)
		}
		st := waitLoaded(b, ctx, name, 3*time.Minute)
		s := st.Stats
		if prof != nil {
			prof(s.FirstBrick, s.FirstSlices, s.FirstPicture, s.FullResolution)
		}
		// Move the three slices to new planes (a different brick layer
		// each time) and wait for screen resolution again.
		f := 0.2 + 0.15*float64(i%4)
		p := voxel{int(f * float64(shape.X)), int(f * float64(shape.Y)), int(f * float64(shape.Z))}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.ldm.setSlices({x: %d, y: %d, z: %d})`, p.X, p.Y, p.Z))); err != nil {
			b.Fatal(err)
		}
		ms := waitLoaded(b, ctx, name, 3*time.Minute)
		mv := ms.Stats
		move := mv.LastSharp - mv.LastMove
		b.Logf("script %.0f, volume %.0f, request %.0f, first brick %.0f, first slices %.0f, first picture %.0f ms (%.1f MiB, %d bricks), screen resolution %.0f ms (levels %v); slice move %.0f ms (%.1f MiB, %d bricks in all, %d streams, %d cancelled); slices %.0f, 3D %.0f, apply %.0f ms",
			s.ScriptAt, s.VolumeAt, s.RequestAt, s.FirstBrick, s.FirstSlices, s.FirstPicture, s.FirstPictureBytes/(1<<20), s.Bricks, s.FullResolution, st.Levels,
			move, (mv.Bytes-s.Bytes)/(1<<20), mv.Bricks, mv.Streams, mv.Cancelled, mv.DrawMs, mv.Draw3dMs, mv.ApplyMs)
		sum["ms-first-brick"] += s.FirstBrick
		sum["ms-first-picture"] += s.FirstPicture
		sum["MiB-first-picture"] += s.FirstPictureBytes / (1 << 20)
		sum["ms-screen-res"] += s.FullResolution
		sum["ms-slice-move"] += move

		sc := scrub(b, ctx, step, "")
		sum["MiB-heap-max-scrub"] += sc.Heap / (1 << 20)
		sum["MiB-heap-buffers-max-scrub"] += sc.heapWithBuffers / (1 << 20)
		sum["s-scrub"] += sc.took.Seconds()

		// Zoomed in so that every slice view draws level 0: what the
		// scrub needs is then far more than the cache holds.
		zoom := map[string]float64{}
		for _, a := range []string{"x", "y", "z"} {
			zoom[a] = float64(int(1) << ms.Levels[a])
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.ldm.zoom(%q, %g)`, a, zoom[a]))); err != nil {
				b.Fatal(err)
			}
		}
		zs := waitLoaded(b, ctx, name, 3*time.Minute)
		q := voxel{p.X + 200, p.Y + 200, p.Z + 100}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.ldm.setSlices({x: %d, y: %d, z: %d})`, q.X, q.Y, q.Z))); err != nil {
			b.Fatal(err)
		}
		zm := waitLoaded(b, ctx, name, 3*time.Minute)
		zmove := zm.Stats.LastSharp - zm.Stats.LastMove
		b.Logf("zoomed in %v: levels %v; slice move %.0f ms (%.1f MiB, %d bricks)", zoom, zm.Levels, zmove,
			(zm.Stats.Bytes-zs.Stats.Bytes)/(1<<20), zm.Stats.Bricks-zs.Stats.Bricks)
		sum["ms-slice-move-zoomed"] += zmove
		zsc := scrub(b, ctx, step, "zoomed in, ")
		sum["MiB-heap-max-scrub-zoomed"] += zsc.Heap / (1 << 20)
		sum["MiB-heap-buffers-max-scrub-zoomed"] += zsc.heapWithBuffers / (1 << 20)
		sum["MiB-cache-max-scrub-zoomed"] += zsc.cacheMax / (1 << 20)
		sum["s-scrub-zoomed"] += zsc.took.Seconds()
		i++
	}
	n := float64(b.N)
	for k, v := range sum {
		b.ReportMetric(v/n, k)
	}
	rssServe := peakRSS()
	b.Logf("peak RSS of the process serving the page (server in-process): %.0f MiB", float64(rssServe)/(1<<20))
	b.ReportMetric(ws.took.Seconds(), "s-write")
	b.ReportMetric(float64(ws.raw)/(1<<30), "GiB-voxels")
	b.ReportMetric(float64(disk)/(1<<30), "GiB-disk")
	b.ReportMetric(float64(rssWrite)/(1<<20), "MiB-rss-write")
	b.ReportMetric(float64(rssServe)/(1<<20), "MiB-rss-serve")
	b.ReportMetric(0, "ns/op") // the figures above are what matters
}

// startPageProfile opens the viewer's page without a volume, starts the
// page's CPU profiler, and returns a function that stops it and logs where
// the main thread's time went in each span between marks (ms from the
// start, which is the next navigation's start to within a few ms).
func startPageProfile(b *testing.B, ctx context.Context, base string) func(marks ...float64) {
	b.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		b.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, profiler.Enable, cdp.Empty{}); err != nil {
		b.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, profiler.SetSamplingInterval, profiler.SetSamplingIntervalParams{Interval: 200}); err != nil {
		b.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, profiler.Start, cdp.Empty{}); err != nil {
		b.Fatal(err)
	}
	return func(marks ...float64) {
		res, err := chromedp.Call(ctx, profiler.Stop, cdp.Empty{})
		if err != nil || res.Profile == nil {
			b.Fatalf("stop the page's profiler: %v", err)
		}
		logProfile(b, res.Profile, marks)
	}
}

// logProfile logs, for each span between marks (ms from the profile's
// start), the main thread's self time by function, most first.
func logProfile(b *testing.B, p *profiler.Profile, marks []float64) {
	names := map[int64]string{}
	for _, n := range p.Nodes {
		f := n.CallFrame
		name := f.FunctionName
		if name == "" {
			name = "(anonymous)"
		}
		if f.URL != "" {
			u := f.URL
			if len(u) > 40 {
				u = "…" + u[len(u)-40:]
			}
			name += fmt.Sprintf(" %s:%d", u, f.LineNumber+1)
		}
		names[n.ID] = name
	}
	spans := make([]map[string]float64, len(marks)+1)
	for i := range spans {
		spans[i] = map[string]float64{}
	}
	t := 0.0
	for i, id := range p.Samples {
		d := float64(p.TimeDeltas[i]) / 1000
		t += d
		k := 0
		for k < len(marks) && t > marks[k] {
			k++
		}
		spans[k][names[id]] += d
	}
	from := 0.0
	for k, sp := range spans {
		to := "end"
		if k < len(marks) {
			to = fmt.Sprintf("%.0f", marks[k])
		}
		type fn struct {
			name string
			ms   float64
		}
		var fs []fn
		total := 0.0
		for n, ms := range sp {
			fs = append(fs, fn{n, ms})
			total += ms
		}
		sort.Slice(fs, func(i, j int) bool { return fs[i].ms > fs[j].ms })
		var sb strings.Builder
		for i, f := range fs {
			if i == 12 {
				break
			}
			fmt.Fprintf(&sb, "\n\t%6.1f ms  %s", f.ms, f.name)
		}
		b.Logf("main thread %.0f-%s ms (%.0f ms sampled):%s", from, to, total, sb.String())
		if k < len(marks) {
			from = marks[k]
		}
	}
}

// scrubResult is what the scrub script returns, and how long it took.
type scrubResult struct {
	Heap      float64 `json:"heap"`
	Frames    int     `json:"frames"`
	Bytes     float64 `json:"bytes"`
	Bricks    int     `json:"bricks"`
	Cancelled int     `json:"cancelled"`
	took      time.Duration
	cacheMax  float64
	// The most heap Runtime.getHeapUsage gave: used, and used plus the
	// backing stores of array buffers.
	heapUsed, heapWithBuffers float64
}

// scrub moves the slices through every step-th plane along z, y and x,
// one frame per plane, and returns the most JavaScript heap seen.
func scrub(b *testing.B, ctx context.Context, step int, what string) scrubResult {
	b.Helper()
	// What earlier pages left in the renderer is not this scrub's.
	if _, err := chromedp.Call(ctx, heapprofiler.CollectGarbage, cdp.Empty{}); err != nil {
		b.Fatal(err)
	}
	// The isolate's heap as DevTools reads it, every 100 ms: precise,
	// where performance.memory may be rounded and cached.
	done := make(chan struct{})
	sampled := make(chan [2]float64, 1)
	go func() {
		var m [2]float64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if u, err := chromedp.Call(ctx, cdpruntime.GetHeapUsage, cdp.Empty{}); err == nil {
				m[0] = max(m[0], u.UsedSize)
				m[1] = max(m[1], u.UsedSize+u.BackingStorageSize)
			}
			select {
			case <-done:
				sampled <- m
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	sc, err := chromedp.Run(ctx, chromedp.Evaluate[scrubResult](fmt.Sprintf(`(async (step) => {
		const mem = () => (performance.memory ? performance.memory.usedJSHeapSize : 0);
		let max = mem(), frames = 0;
		const shape = window.ldm.shape(), c = window.ldm.state().slices;
		for (const a of ["z", "y", "x"]) {
			for (let p = 0; p < shape[a]; p += step) {
				const q = {...c}; q[a] = p;
				window.ldm.setSlices(q);
				await new Promise((r) => requestAnimationFrame(r));
				max = Math.max(max, mem());
				frames++;
			}
		}
		const s = window.ldm.state();
		return {heap: max, frames, bytes: s.stats.bytes, bricks: s.stats.bricks, cancelled: s.stats.cancelled};
	})(%d)`, step), chromedp.EvalAwaitPromise))
	if err != nil {
		b.Fatal(err)
	}
	sc.took = time.Since(start)
	close(done)
	m := <-sampled
	sc.heapUsed, sc.heapWithBuffers = m[0], m[1]
	cs := state(b, ctx).Cache
	sc.cacheMax = cs.MaxBytes
	b.Logf("%sscrub of every %s plane along z, y and x: %d frames in %s (%.1f ms a frame), JS heap at most %.0f MiB (DevTools: %.0f MiB used, %.0f MiB with array buffers), cache at most %.0f MiB of %.0f; %.0f MiB and %d bricks fetched since the page opened, %d requests cancelled",
		what, ordinal(step), sc.Frames, sc.took.Round(time.Millisecond), float64(sc.took.Milliseconds())/float64(max(sc.Frames, 1)), sc.Heap/(1<<20),
		sc.heapUsed/(1<<20), sc.heapWithBuffers/(1<<20),
		cs.MaxBytes/(1<<20), cs.Budget/(1<<20), sc.Bytes/(1<<20), sc.Bricks, sc.Cancelled)
	return sc
}

func ordinal(n int) string {
	if n == 1 {
		return "single"
	}
	return fmt.Sprintf("%dth", n)
}

// writeStats is what writeProceduralZstd wrote.
type writeStats struct {
	bricks      int
	raw, stored int64 // brick bytes before and after compression
	took        time.Duration
}

// writeProceduralZstd writes the procedural phantom of meta (whose codec
// must be zstd) into a new store in dir, as `ldm import --demo --codec
// zstd` would through the API, then closes it: the pyramid Builder cuts
// the bricks of every level, workers goroutines compress them, and one
// appends them in batches.
func writeProceduralZstd(dir string, meta storage.VolumeMeta, workers int) (writeStats, error) {
	start := time.Now()
	var ws writeStats
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		return ws, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := st.CreateVolume(ctx, meta); err != nil {
		st.Close()
		return ws, err
	}
	ph, err := pyramid.NewProcedural(meta.Shape, meta.DataType)
	if err != nil {
		st.Close()
		return ws, err
	}
	bl, err := pyramid.NewBuilder(meta, pyramid.BuildOptions{})
	if err != nil {
		st.Close()
		return ws, err
	}
	level := bl.Meta().Codec.Level
	bricks := make(chan pyramid.Brick, 2*workers)
	frames := make(chan storage.Tile, 256)
	var cwg sync.WaitGroup
	for range workers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for br := range bricks {
				t := storage.Tile{HasKey: true, Key: br.Key, Value: zstdcodec.Encode(nil, br.Value, level)}
				bl.Recycle(br.Value)
				select {
				case frames <- t:
				case <-ctx.Done():
				}
			}
		}()
	}
	go func() {
		cwg.Wait()
		close(frames)
	}()
	appended := make(chan error, 1)
	go func() {
		var err error
		batch := make([]storage.Tile, 0, 256)
		flush := func() {
			if len(batch) > 0 && err == nil {
				_, err = st.Append(ctx, meta.Name, batch...)
				if err != nil {
					cancel()
				}
			}
			batch = batch[:0]
		}
		for t := range frames {
			ws.bricks++
			ws.stored += int64(len(t.Value))
			batch = append(batch, t)
			if len(batch) == cap(batch) {
				flush()
			}
		}
		flush()
		appended <- err
	}()
	brickBytes := int64(bl.BrickBytes())
	var raw int64
	err = bl.Build(ph.Reader(), func(br pyramid.Brick) error {
		raw += brickBytes
		select {
		case bricks <- br:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("write %s: the store failed, see its error", meta.Name)
		}
	})
	close(bricks)
	if aerr := <-appended; aerr != nil {
		err = aerr
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	ws.raw = raw
	ws.took = time.Since(start)
	return ws, err
}

// diskUsage returns the bytes the files under dir take on disk.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if s, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += s.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// resetPeakRSS resets the process's peak resident memory (VmHWM) to its
// current resident memory (Linux; elsewhere it does nothing).
func resetPeakRSS() {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// peakRSS returns the process's peak resident memory in bytes (VmHWM), or
// the Go runtime's memory from the system where /proc is not there.
func peakRSS() int64 {
	if f, err := os.ReadFile("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(f))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err == nil {
					return kb << 10
				}
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.Sys)
}
