package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// levelPixel is one sampled pixel of a slice view: the LOD 0 voxel inside
// the level voxel sampled, the level, and the pixel's RGBA.
type levelPixel struct {
	P     voxel  `json:"p"`
	Level int    `json:"level"`
	RGBA  [4]int `json:"rgba"`
}

// sampleLevelPixels reads up to n pixels of slice view axis, each at the
// centre of the voxel of the level the view draws under a random pixel.
func sampleLevelPixels(tb testing.TB, ctx context.Context, axis string, n int, seed uint64) []levelPixel {
	tb.Helper()
	expr := fmt.Sprintf(`((axis, n, seed) => {
		let r = seed >>> 0;
		const rnd = (m) => { r = (Math.imul(r, 1664525) + 1013904223) >>> 0; return r %% m; };
		const s = window.ldm.state(), L = s.levels[axis], f = 2 ** L, o = window.ldm.orientation();
		const view = o.views[{z: "axial", y: "coronal", x: "sagittal"}[axis]];
		const shape = window.ldm.shape(), slices = s.slices;
		const uv = {z: ["x", "y"], y: ["x", "z"], x: ["y", "z"]}[view.depth];
		const c = window.ldm.canvasSize(axis);
		const out = [];
		for (let i = 0; i < 20 * n && out.length < n; i++) {
			const at = window.ldm.canvasToVoxel(axis, rnd(c.w), rnd(c.h));
			if (!at) continue;
			const q = {}; q[view.depth] = slices[view.depth];
			const a = {...q}, b = {...q};
			for (const k of uv) {
				const qi = at[k] >> L;
				a[k] = qi * f;
				b[k] = Math.min(shape[k] - 1, qi * f + f - 1);
				q[k] = Math.min(shape[k] - 1, qi * f + (f >> 1));
			}
			const pa = window.ldm.voxelToCanvas(axis, a), pb = window.ldm.voxelToCanvas(axis, b);
			const x = (pa.x + pb.x) / 2, y = (pa.y + pb.y) / 2;
			if (x < 2 || y < 2 || x > c.w - 2 || y > c.h - 2) continue;
			out.push({p: q, level: L, rgba: window.ldm.pixel(axis, x, y)});
		}
		return out;
	})(%q, %d, %d)`, axis, n, seed)
	px, err := chromedp.Run(ctx, chromedp.Evaluate[[]levelPixel](expr))
	if err != nil {
		tb.Fatalf("sample pixels of view %s: %v", axis, err)
	}
	return px
}

// checkLevelPixels compares sampled pixels with the procedural phantom at
// the level drawn (gray window 127.5/255: uint8 value v is gray v).
func checkLevelPixels(tb testing.TB, ph *pyramid.Procedural, axis string, px []levelPixel, min int) {
	tb.Helper()
	if len(px) < min {
		tb.Fatalf("view %s: only %d pixels inside the canvas, want %d", axis, len(px), min)
	}
	bad := 0
	for _, p := range px {
		l := uint32(p.Level)
		v, ok := ph.Value(l, p.P.X>>l, p.P.Y>>l, p.P.Z>>l)
		if !ok || !grayMatches(p.RGBA, int(v), 0) {
			bad++
			if bad <= 5 {
				tb.Errorf("view %s, LOD %d, voxel %v: pixel %v, want gray %v", axis, p.Level, p.P, p.RGBA, v)
			}
		}
	}
	if bad > 0 {
		tb.Fatalf("view %s: %d of %d pixels wrong", axis, bad, len(px))
	}
}

// TestViewer_budget opens a procedural volume of 640x512x320 uint8 (200 MiB
// with its levels) with a brick cache of 16 MiB, so that it never fits:
// the views show coarser levels at first, zooming in on the axial view
// refines it to full resolution, zooming out coarsens it, scrubbing the
// slices keeps the cache within its budget, and at every step the pixels
// are the phantom's voxels at the level drawn.
func TestViewer_budget(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	shape := storage.Shape{X: 640, Y: 512, Z: 320}
	ph, err := pyramid.NewProcedural(shape, storage.Uint8)
	if err != nil {
		t.Fatal(err)
	}
	v := &ldmv1.Volume{
		Name: "big", DataType: ldmv1.DataType_DATA_TYPE_UINT8, Shape: &ldmv1.Shape{X: shape.X, Y: shape.Y, Z: shape.Z},
		BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: pyramid.LevelsToFit(shape, storage.Shape{X: 64, Y: 64, Z: 64}),
	}
	if err := importStream(context.Background(), c, v, ph.Reader(), io.Discard, true, false); err != nil {
		t.Fatal(err)
	}
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	const budget = 16 << 20
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(fmt.Sprintf("%s/?volume=big&budget=%d", base, budget>>20))); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, ctx, "big", time.Minute)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setColormap("gray"); window.ldm.setWindow(127.5, 255)`)); err != nil {
		t.Fatal(err)
	}
	st := waitLoaded(t, ctx, "big", time.Minute)
	within := func(st pageState, what string) {
		t.Helper()
		if st.Cache.Budget != budget || st.Cache.MaxBytes > budget {
			t.Fatalf("%s: the cache held up to %.0f bytes, over its budget of %.0f", what, st.Cache.MaxBytes, st.Cache.Budget)
		}
	}
	within(st, "opened")
	fit := st.Levels
	t.Logf("whole slices: levels %v, %d bricks, %.1f MiB fetched, cache %.1f MiB", fit, st.Stats.Bricks, st.Stats.Bytes/(1<<20), st.Cache.Bytes/(1<<20))
	if fit["z"] == 0 || fit["3d"] == 0 {
		t.Fatalf("levels %v: with a 16 MiB cache the whole slices and the 3D view cannot be at full resolution", fit)
	}
	for i, axis := range []string{"z", "y", "x"} {
		checkLevelPixels(t, ph, axis, sampleLevelPixels(t, ctx, axis, 150, uint64(i+1)), 50)
	}

	t.Run("zoomed_in", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.zoom("z", 10)`)); err != nil {
			t.Fatal(err)
		}
		st := waitLoaded(t, ctx, "big", time.Minute)
		within(st, "zoomed in")
		if st.Levels["z"] != 0 {
			t.Fatalf("zoomed in 10x the axial view draws LOD %d, want 0", st.Levels["z"])
		}
		checkLevelPixels(t, ph, "z", sampleLevelPixels(t, ctx, "z", 150, 7), 50)
	})

	t.Run("zoomed_out", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.zoom("z", 0.125)`)); err != nil {
			t.Fatal(err)
		}
		st := waitLoaded(t, ctx, "big", time.Minute)
		within(st, "zoomed out")
		if st.Levels["z"] <= fit["z"] {
			t.Fatalf("zoomed out the axial view draws LOD %d, want coarser than %d", st.Levels["z"], fit["z"])
		}
		// Voxels of the level drawn are under a pixel here: check the values
		// the page holds at that level instead.
		rng := rand.New(rand.NewPCG(3, 4))
		pts := make([]voxel, 300)
		for i := range pts {
			pts[i] = voxel{rng.IntN(int(shape.X)), rng.IntN(int(shape.Y)), st.Slices.Z}
		}
		js, _ := json.Marshal(pts)
		l := st.Levels["z"]
		vals, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(`%s.map(p => window.ldm.value(p, %d))`, js, l)))
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pts {
			want, _ := ph.Value(uint32(l), p.X>>l, p.Y>>l, p.Z>>l)
			if vals[i] != want {
				t.Fatalf("voxel %v at LOD %d: the page holds %v, want %v", p, l, vals[i], want)
			}
		}
	})

	t.Run("scrub_within_budget", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.zoom("z", 1)`)); err != nil {
			t.Fatal(err)
		}
		for i, p := range []voxel{{5, 5, 5}, {600, 500, 300}, {320, 20, 160}, {100, 400, 250}} {
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.ldm.setSlices({x: %d, y: %d, z: %d})`, p.X, p.Y, p.Z))); err != nil {
				t.Fatal(err)
			}
			st := waitLoaded(t, ctx, "big", time.Minute)
			within(st, fmt.Sprintf("slices at %v", p))
			for j, axis := range []string{"z", "y", "x"} {
				checkLevelPixels(t, ph, axis, sampleLevelPixels(t, ctx, axis, 60, uint64(10*i+j)), 20)
			}
		}
		st := state(t, ctx)
		t.Logf("after scrubbing: %d bricks, %.1f MiB fetched, cache held at most %.1f MiB of %.0f", st.Stats.Bricks, st.Stats.Bytes/(1<<20), st.Cache.MaxBytes/(1<<20), st.Cache.Budget/(1<<20))
		if st.Stats.Bytes <= budget {
			t.Fatalf("only %.0f bytes fetched: the test did not go past the cache's budget", st.Stats.Bytes)
		}
	})
}
