package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkViewer_load measures the viewer in headless Chromium (1280x800)
// against `ldm serve` over loopback, from navigation start:
//
//   - ms-first-brick, and where the time before it goes: ms-script (the
//     page's script starts), ms-volume (the volume's metadata arrives),
//     ms-request (the first StreamBricks call starts);
//   - ms-first-picture: every slice view covered and the 3D view drawn (at
//     any level), and MiB-first-picture, the brick bytes fetched for it;
//   - ms-screen-res: every view at the level matching its pixels (for the
//     small volumes, full resolution);
//   - ms-slice-move: from moving the three slices to new planes until every
//     view is at screen resolution again;
//   - for the large volumes, MiB-heap-max-scrub: the most JavaScript heap
//     (performance.memory) while the slices scrub through the volume, every
//     8th plane along each axis, one frame per plane, with the default
//     512 MiB cache.
//
// The small volumes (256^3 uint8, 512^3 uint16) are imported like `ldm
// import`; the 2048x2048x1024 uint8 procedural volume (4 GiB, 4.6 GiB with
// its levels) is written into the store directly by the benchmark, and with
// LDM_BENCH_HUGE=1 also a 4096x4096x2048 uint8 one (32 GiB). They live in
// the benchmark's temporary directory and are deleted with it. Run it
// without the race detector:
//
//	go test -run '^$' -bench BenchmarkViewer_load -benchtime 5x ./cmd/ldm
func BenchmarkViewer_load(b *testing.B) {
	type bench struct {
		name  string
		shape storage.Shape
		dt    storage.DataType
		large bool
	}
	cases := []bench{
		{"256cubed_uint8", storage.Shape{X: 256, Y: 256, Z: 256}, storage.Uint8, false},
		{"512cubed_uint16", storage.Shape{X: 512, Y: 512, Z: 512}, storage.Uint16, false},
		{"2048x2048x1024_uint8", storage.Shape{X: 2048, Y: 2048, Z: 1024}, storage.Uint8, true},
	}
	if os.Getenv("LDM_BENCH_HUGE") == "1" {
		cases = append(cases, bench{"4096x4096x2048_uint8", storage.Shape{X: 4096, Y: 4096, Z: 2048}, storage.Uint8, true})
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			name := strings.ReplaceAll(strings.ToLower(tc.name), "_", "-")
			var base string
			if tc.large {
				dir := b.TempDir()
				start := time.Now()
				if err := writeProcedural(dir, pyramid.ProceduralMeta(name, tc.shape, tc.dt)); err != nil {
					b.Fatal(err)
				}
				b.Logf("wrote %s into the store in %s", name, time.Since(start).Round(time.Millisecond))
				base = startTestServerWith(b, func(c *server.Config) { c.DataDir = dir })
			} else {
				base = startTestServer(b)
				c := testClients(b, base)
				n := tc.shape.X
				v := &ldmv1.Volume{
					Name: name, DataType: ldmv1.DataType(tc.dt), Shape: &ldmv1.Shape{X: n, Y: n, Z: n},
					BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: pyramid.LevelsToFit(tc.shape, storage.Shape{X: 64, Y: 64, Z: 64}),
				}
				if err := importVolume(context.Background(), c, v, benchVolume(n, tc.dt), io.Discard, true); err != nil {
					b.Fatal(err)
				}
			}
			ctx := testutil.NewBrowser(b, 1280, 800)
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
				b.Fatal(err)
			}
			sum := map[string]float64{}
			b.ResetTimer()
			i := 0
			for b.Loop() {
				if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+name)); err != nil {
					b.Fatal(err)
				}
				st := waitLoaded(b, ctx, name, 3*time.Minute)
				s := st.Stats
				// Move the three slices to new planes (a different brick
				// layer each time) and wait for screen resolution again.
				f := 0.2 + 0.15*float64(i%4)
				p := voxel{int(f * float64(tc.shape.X)), int(f * float64(tc.shape.Y)), int(f * float64(tc.shape.Z))}
				if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.ldm.setSlices({x: %d, y: %d, z: %d})`, p.X, p.Y, p.Z))); err != nil {
					b.Fatal(err)
				}
				mv := waitLoaded(b, ctx, name, 3*time.Minute).Stats
				move := mv.LastSharp - mv.LastMove
				b.Logf("script %.0f, volume %.0f, request %.0f, first brick %.0f, first slices %.0f, first picture %.0f ms (%.1f MiB), screen resolution %.0f ms (%.1f MiB, levels %v); slice move %.0f ms; slices %.0f, 3D %.0f ms",
					s.ScriptAt, s.VolumeAt, s.RequestAt, s.FirstBrick, s.FirstSlices, s.FirstPicture, s.FirstPictureBytes/(1<<20), s.FullResolution, s.Bytes/(1<<20), st.Levels, move, s.DrawMs, s.Draw3dMs)
				sum["ms-script"] += s.ScriptAt
				sum["ms-volume"] += s.VolumeAt
				sum["ms-request"] += s.RequestAt
				sum["ms-first-brick"] += s.FirstBrick
				sum["ms-first-picture"] += s.FirstPicture
				sum["MiB-first-picture"] += s.FirstPictureBytes / (1 << 20)
				sum["ms-screen-res"] += s.FullResolution
				sum["ms-slice-move"] += move
				if tc.large {
					heap, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`(async () => {
						const mem = () => (performance.memory ? performance.memory.usedJSHeapSize : 0);
						let max = mem();
						const shape = window.ldm.shape(), c = window.ldm.state().slices;
						for (const a of ["z", "y", "x"]) {
							for (let p = 0; p < shape[a]; p += 8) {
								const q = {...c}; q[a] = p;
								window.ldm.setSlices(q);
								await new Promise((r) => requestAnimationFrame(r));
								max = Math.max(max, mem());
							}
						}
						return max;
					})()`, chromedp.EvalAwaitPromise))
					if err != nil {
						b.Fatal(err)
					}
					cs := state(b, ctx).Cache
					b.Logf("scrub: JS heap at most %.0f MiB, cache at most %.0f MiB of %.0f", heap/(1<<20), cs.MaxBytes/(1<<20), cs.Budget/(1<<20))
					sum["MiB-heap-max-scrub"] += heap / (1 << 20)
				}
				i++
			}
			for k, v := range sum {
				b.ReportMetric(v/float64(b.N), k)
			}
			b.ReportMetric(0, "ns/op") // the figures above are what matters
		})
	}
	// zstd against raw over a throttled link (viewer_zstd_bench_test.go).
	b.Run("throttled_512cubed_uint16_ct", benchViewerThrottled)
}

// writeProcedural writes the procedural phantom of meta into a new store
// in dir, as `ldm import --demo` would through the API, then closes it.
func writeProcedural(dir string, meta storage.VolumeMeta) error {
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if _, err := st.CreateVolume(ctx, meta); err != nil {
		st.Close()
		return err
	}
	ph, err := pyramid.NewProcedural(meta.Shape, meta.DataType)
	if err != nil {
		st.Close()
		return err
	}
	bl, err := pyramid.NewBuilder(meta, pyramid.BuildOptions{})
	if err != nil {
		st.Close()
		return err
	}
	var batch []storage.Tile
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := st.Append(ctx, meta.Name, batch...)
		batch = batch[:0]
		return err
	}
	err = bl.Build(ph.Reader(), func(br pyramid.Brick) error {
		batch = append(batch, storage.Tile{Value: br.Value, HasKey: true, Key: br.Key})
		if len(batch) == 64 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}

// benchVolume returns an n^3 volume of type dt: the demo phantom's
// structures scaled to n, with a gradient, as little-endian voxels.
func benchVolume(n uint32, dt storage.DataType) io.ReaderAt {
	size := dt.Size()
	buf := make([]byte, int(n)*int(n)*int(n)*size)
	s := float64(pyramid.PhantomSize) / float64(n)
	i := 0
	for z := range int(n) {
		for y := range int(n) {
			for x := range int(n) {
				v := uint32(pyramid.PhantomValue(int(float64(x)*s), int(float64(y)*s), int(float64(z)*s)))
				switch size {
				case 1:
					buf[i] = byte(v)
				case 2:
					binary.LittleEndian.PutUint16(buf[i:], uint16(v*200+uint32(x)))
				case 4:
					binary.LittleEndian.PutUint32(buf[i:], v*70000+uint32(x))
				}
				i += size
			}
		}
	}
	return bytes.NewReader(buf)
}
