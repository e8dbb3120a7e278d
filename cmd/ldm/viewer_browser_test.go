package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/web"
)

// pageState is window.ldm.state() in the viewer.
type pageState struct {
	Volume    string `json:"volume"`
	Streaming bool   `json:"streaming"`
	Loaded    bool   `json:"loaded"` // everything the views need has arrived
	Sharp     bool   `json:"sharp"`  // every view shows its own level everywhere
	Idle      bool   `json:"idle"`
	Error     string `json:"error"`
	Stats     struct {
		ScriptAt          float64 `json:"scriptAt"`
		OpenedAt          float64 `json:"openedAt"`
		VolumeAt          float64 `json:"volumeAt"`
		RequestAt         float64 `json:"requestAt"`
		LastMove          float64 `json:"lastMove"`
		LastSharp         float64 `json:"lastSharp"`
		FirstSlices       float64 `json:"firstSlices"`
		FirstPicture      float64 `json:"firstPicture"`
		FirstPictureBytes float64 `json:"firstPictureBytes"`
		FullResolution    float64 `json:"fullResolution"`
		Bytes             float64 `json:"bytes"`
		Bricks            int     `json:"bricks"`
		StreamMs          float64 `json:"streamMs"`
		LiveTiles         int     `json:"liveTiles"`
		Streams           int     `json:"streams"`
		Cancelled         int     `json:"cancelled"`
		Retries           int     `json:"retries"`
		RequestedKeys     int     `json:"requestedKeys"`
		FirstBrick        float64 `json:"firstBrick"`
		ApplyMs           float64 `json:"applyMs"`
		DrawMs            float64 `json:"drawMs"`
		Draw3dMs          float64 `json:"draw3dMs"`
	} `json:"stats"`
	Cache struct {
		Budget   float64 `json:"budget"`
		Bytes    float64 `json:"bytes"`
		MaxBytes float64 `json:"maxBytes"`
		Entries  int     `json:"entries"`
		Pinned   int     `json:"pinned"`
	} `json:"cache"`
	Levels map[string]int        `json:"levels"` // the level each view draws ("x", "y", "z", "3d")
	Slices struct{ X, Y, Z int } `json:"slices"`
	Worker bool                  `json:"worker"`
}

func state(tb testing.TB, ctx context.Context) pageState {
	tb.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`window.ldm.state()`))
	if err != nil {
		tb.Fatalf("read the viewer's state: %v", err)
	}
	return s
}

// openVolume imports v with data through c, opens it in the page at base
// and waits until every brick has loaded.
func openVolume(tb testing.TB, ctx context.Context, c *clients, base string, v *ldmv1.Volume, data io.ReaderAt) pageState {
	tb.Helper()
	if err := importVolume(ctx, c, v, data, io.Discard, true); err != nil {
		tb.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+v.GetName())); err != nil {
		tb.Fatal(err)
	}
	return waitLoaded(tb, ctx, v.GetName(), time.Minute)
}

// waitLoaded waits until the viewer has every brick its views need of
// volume name and has drawn each view at its own level.
func waitLoaded(tb testing.TB, ctx context.Context, name string, timeout time.Duration) pageState {
	tb.Helper()
	expr := fmt.Sprintf(`(() => { const s = window.ldm && window.ldm.state(); return !!s && s.volume === %q && s.loaded && s.sharp && s.idle; })()`, name)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
		tb.Fatalf("volume %s did not finish loading within %s: %v; state %+v", name, timeout, err, state(tb, ctx))
	}
	return state(tb, ctx)
}

// waitIdle waits until the viewer has drawn every change.
func waitIdle(tb testing.TB, ctx context.Context) {
	tb.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm.state().idle`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		tb.Fatalf("the viewer did not settle: %v", err)
	}
}

type voxel struct {
	X int `json:"x"`
	Y int `json:"y"`
	Z int `json:"z"`
}

// slicePixels reads the RGBA of the pixel at the centre of each voxel in a
// slice view (axis: the view's fixed axis, "x", "y" or "z").
func slicePixels(tb testing.TB, ctx context.Context, axis string, pts []voxel) [][4]int {
	tb.Helper()
	js, _ := json.Marshal(pts)
	expr := fmt.Sprintf(`((axis, pts) => pts.map(p => { const c = window.ldm.voxelToCanvas(axis, p); return window.ldm.pixel(axis, c.x, c.y); }))(%q, %s)`, axis, js)
	px, err := chromedp.Run(ctx, chromedp.Evaluate[[][4]int](expr))
	if err != nil {
		tb.Fatalf("read pixels of view %s: %v", axis, err)
	}
	return px
}

// pixels3D reads the RGBA where each voxel's centre projects in the 3D view.
func pixels3D(tb testing.TB, ctx context.Context, pts []voxel) [][4]int {
	tb.Helper()
	js, _ := json.Marshal(pts)
	expr := fmt.Sprintf(`(pts => pts.map(p => { const c = window.ldm.project3D(p); return window.ldm.pixel("3d", c.x, c.y); }))(%s)`, js)
	px, err := chromedp.Run(ctx, chromedp.Evaluate[[][4]int](expr))
	if err != nil {
		tb.Fatalf("read pixels of the 3D view: %v", err)
	}
	return px
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// grayMatches reports whether px is the gray level g, within tol.
func grayMatches(px [4]int, g, tol int) bool {
	return abs(px[0]-g) <= tol && abs(px[1]-g) <= tol && abs(px[2]-g) <= tol
}

// repoPath returns a path relative to the repository root (tests run in cmd/ldm).
func repoPath(p string) string { return filepath.Join("..", "..", p) }

// TestViewer_browser drives the viewer in headless Chromium against a real
// `ldm serve --demo`: it opens the demo volume, waits for streaming to
// finish, compares pixels of the three slice views with the phantom's
// voxels through the window and colormap, checks the 3D view shows the
// phantom's structures where they project, checks that a brick written
// while the page is open appears, and saves a screenshot.
func TestViewer_browser(t *testing.T) {
	base := startTestServer(t, "--demo")
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	sel := `#volumes button[data-volume="demo"]`
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/"), chromedp.WaitVisible(sel), chromedp.Click(sel)); err != nil {
		t.Fatalf("open the viewer and pick the demo volume: %v", err)
	}
	st := waitLoaded(t, ctx, "demo", 90*time.Second)
	t.Logf("demo: first picture %.0f ms after opening, full resolution %.0f ms, %d bricks, %.1f MB in %.0f ms of streaming",
		st.Stats.FirstPicture-st.Stats.OpenedAt, st.Stats.FullResolution-st.Stats.OpenedAt, st.Stats.Bricks, st.Stats.Bytes/1e6, st.Stats.StreamMs)
	if st.Stats.FirstPicture == 0 || st.Stats.FirstPicture > st.Stats.FullResolution {
		t.Fatalf("the coarse picture (%.0f ms) should come before full resolution (%.0f ms)", st.Stats.FirstPicture, st.Stats.FullResolution)
	}
	if st.Error != "" {
		t.Fatalf("the viewer shows an error: %s", st.Error)
	}
	if !st.Worker {
		t.Error("bricks were not streamed in the worker")
	}

	// A window of level 127.5, width 255 maps uint8 value v to gray v.
	if err := chromedp.Do(ctx,
		chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setColormap("gray"); window.ldm.setWindow(127.5, 255); window.ldm.setSlices({x: 176, y: 88, z: 128})`),
	); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ctx)

	t.Run("slices_match_phantom", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		planes := map[string]func(u, v int) voxel{
			"z": func(u, v int) voxel { return voxel{u, v, 128} },
			"y": func(u, v int) voxel { return voxel{u, 88, v} },
			"x": func(u, v int) voxel { return voxel{176, u, v} },
		}
		// Points in each structure, then random points.
		known := map[string][]voxel{
			"z": {{128, 128, 128}, {176, 128, 128}, {128, 40, 128}, {5, 5, 128}, {80, 80, 128}},
			"y": {{160, 88, 176}, {80, 88, 80}, {128, 88, 128}, {250, 88, 3}},
			"x": {{176, 128, 100}, {176, 128, 220}, {176, 60, 128}, {176, 128, 45}},
		}
		seen := map[uint8]bool{}
		for axis, at := range planes {
			pts := known[axis]
			for range 400 {
				pts = append(pts, at(rng.IntN(pyramid.PhantomSize), rng.IntN(pyramid.PhantomSize)))
			}
			px := slicePixels(t, ctx, axis, pts)
			bad := 0
			for i, p := range pts {
				want := pyramid.PhantomValue(p.X, p.Y, p.Z)
				seen[want] = true
				if !grayMatches(px[i], int(want), 1) {
					bad++
					if bad <= 5 {
						t.Errorf("view %s voxel %v: pixel %v, want gray %d", axis, p, px[i], want)
					}
				}
			}
			if bad > 0 {
				t.Errorf("view %s: %d of %d pixels differ from the phantom", axis, bad, len(pts))
			}
		}
		for _, v := range []uint8{pyramid.PhantomBackground, pyramid.PhantomBody, pyramid.PhantomCore, pyramid.PhantomRod, pyramid.PhantomCube, pyramid.PhantomBead} {
			if !seen[v] {
				t.Errorf("no sampled voxel had the phantom value %d", v)
			}
		}
	})

	t.Run("value_under_cursor", func(t *testing.T) {
		// A pointer over the core's centre in the axial view shows its voxel
		// coordinates and value.
		js := `(() => {
			const c = document.querySelector("#view-axial canvas");
			const p = window.ldm.voxelToCanvas("z", {x: 128, y: 128, z: 128});
			const r = c.getBoundingClientRect(), k = r.width / c.width;
			c.dispatchEvent(new PointerEvent("pointermove", {clientX: r.left + p.x * k, clientY: r.top + p.y * k, bubbles: true}));
			return document.getElementById("cursor").textContent;
		})()`
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(text, "voxel (128, 128, 128)") || !strings.Contains(text, fmt.Sprintf("value %d", pyramid.PhantomCore)) {
			t.Fatalf("cursor readout %q, want voxel (128, 128, 128) and value %d", text, pyramid.PhantomCore)
		}
	})

	t.Run("colormap_and_window", func(t *testing.T) {
		// A narrow window saturates: values >= level+width/2 are the top of
		// the map, values <= level-width/2 the bottom.
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setWindow(100, 40)`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		pts := []voxel{{128, 128, 128}, {128, 40, 128}, {5, 5, 128}}
		px := slicePixels(t, ctx, "z", pts)
		// core 200 -> 255, body 60 -> lo=80 -> 0, background 0 -> 0.
		for i, want := range []int{255, 0, 0} {
			if !grayMatches(px[i], want, 0) {
				t.Errorf("window 100/40, voxel %v: pixel %v, want gray %d", pts[i], px[i], want)
			}
		}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setColormap("hot"); window.ldm.setWindow(127.5, 255)`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		lut, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`window.ldm.lut()`))
		if err != nil {
			t.Fatal(err)
		}
		px = slicePixels(t, ctx, "z", []voxel{{176, 128, 128}})
		want := lut[4*int(pyramid.PhantomRod) : 4*int(pyramid.PhantomRod)+4]
		if px[0][0] != want[0] || px[0][1] != want[1] || px[0][2] != want[2] {
			t.Errorf("hot colormap, rod voxel: pixel %v, want %v", px[0], want)
		}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setColormap("gray")`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
	})

	t.Run("3d_shows_structures", func(t *testing.T) {
		// The default camera looks along +z: each pixel is the maximum of
		// its (x, y) column.
		mip := func(x, y int) int {
			m := 0
			for z := range pyramid.PhantomSize {
				m = max(m, int(pyramid.PhantomValue(x, y, z)))
			}
			return m
		}
		pts := []voxel{{80, 80, 128}, {128, 128, 128}, {176, 128, 128}, {160, 88, 128}, {128, 40, 128}, {10, 10, 128}, {200, 200, 128}}
		px := pixels3D(t, ctx, pts)
		for i, p := range pts {
			want := mip(p.X, p.Y)
			if !grayMatches(px[i], want, 6) {
				t.Errorf("3D view at the projection of (%d, %d): pixel %v, want gray %d (maximum along z)", p.X, p.Y, px[i], want)
			}
		}
	})

	t.Run("keyboard_moves_slice", func(t *testing.T) {
		before := state(t, ctx).Slices.Z
		if err := chromedp.Do(ctx, chromedp.Focus(`#view-axial canvas`), chromedp.KeyEvent(kb.ArrowUp), chromedp.KeyEvent(kb.ArrowUp), chromedp.KeyEvent(kb.PageUp)); err != nil {
			t.Fatal(err)
		}
		if after := state(t, ctx).Slices.Z; after != before+12 {
			t.Fatalf("axial slice %d after Up, Up, PageUp from %d; want %d", after, before, before+12)
		}
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setSlices({x: 176, y: 88, z: 128})`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
	})

	t.Run("screenshot", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(true); window.ldm.setSlices({x: 160, y: 88, z: 100}); window.ldm.rotate3D(0.6, -0.45)`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		saveArtifact(t, "viewer.png", png)
		if os.Getenv("LDM_UPDATE_DOCS") == "1" {
			if err := os.WriteFile(repoPath("docs/viewer.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("live_write_appears", func(t *testing.T) {
		// Brick (1, 1, 2) at LOD 0 covers x, y in [64, 128) and z in
		// [128, 192): the axial slice z=128 cuts it.
		const fill = 77
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setSlices({x: 176, y: 88, z: 128})`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		b := bytes.Repeat([]byte{fill}, pyramid.PhantomBrick*pyramid.PhantomBrick*pyramid.PhantomBrick)
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "demo", Tile: &ldmv1.Tile{Value: b, Key: &ldmv1.BrickKey{Lod: 0, X: 1, Y: 1, Z: 2}}}))
		if err != nil {
			t.Fatal(err)
		}
		expr := `(() => { const c = window.ldm.voxelToCanvas("z", {x: 100, y: 100, z: 128}); const p = window.ldm.pixel("z", c.x, c.y); return p[0] === 77 && p[1] === 77 && p[2] === 77; })()`
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("the written brick did not appear in the axial view: %v (state %+v)", err, state(t, ctx))
		}
		waitIdle(t, ctx)
		px := slicePixels(t, ctx, "z", []voxel{{100, 100, 128}, {127, 127, 128}, {130, 100, 128}, {100, 60, 128}})
		for i, want := range []int{fill, fill, int(pyramid.PhantomValue(130, 100, 128)), int(pyramid.PhantomValue(100, 60, 128))} {
			if !grayMatches(px[i], want, 1) {
				t.Errorf("after the live write, pixel %d = %v, want gray %d", i, px[i], want)
			}
		}
		if n := state(t, ctx).Stats.LiveTiles; n < 1 {
			t.Errorf("live tiles %d, want 1 or more", n)
		}
	})

	t.Run("phone_viewport", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		over, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
		if err != nil {
			t.Fatal(err)
		}
		if over > 0 {
			t.Errorf("at 390 px wide the page scrolls sideways by %d px", over)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		saveArtifact(t, "viewer-phone.png", png)
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("grpc_web", func(t *testing.T) {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?protocol=grpc-web&volume=demo")); err != nil {
			t.Fatal(err)
		}
		waitLoaded(t, ctx, "demo", time.Minute)
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setWindow(127.5, 255); window.ldm.setSlices({x: 176, y: 88, z: 128})`)); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, ctx)
		pts := []voxel{{128, 40, 128}, {176, 128, 128}, {5, 5, 128}, {100, 100, 128}}
		px := slicePixels(t, ctx, "z", pts)
		for i, want := range []int{int(pyramid.PhantomBody), int(pyramid.PhantomRod), 0, 77} { // (100,100,128) has the live-written brick
			if !grayMatches(px[i], want, 1) {
				t.Errorf("over gRPC-Web, voxel %v: pixel %v, want gray %d", pts[i], px[i], want)
			}
		}
		proto, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("protocol").value`))
		if err != nil || proto != "grpc-web" {
			t.Fatalf("protocol selector %q, %v", proto, err)
		}
	})

	t.Run("deleted_volume_is_reported", func(t *testing.T) {
		if _, err := c.volumes.DeleteVolume(ctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: "demo"})); err != nil {
			t.Fatal(err)
		}
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm.state().error.includes("deleted")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("no message about the deleted volume: %v (state %+v)", err, state(t, ctx))
		}
	})
}

// TestViewer_serverDown checks the message the viewer shows when the server
// that served it stops answering.
func TestViewer_serverDown(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(`#refresh`)); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if err := chromedp.Do(ctx, chromedp.Click(`#refresh`)); err != nil {
		t.Fatal(err)
	}
	msg, err := chromedp.Run(ctx, chromedp.Poll[string](`(() => { const e = window.ldm.state().error; return e.includes("not reachable") ? e : ""; })()`, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("no 'not reachable' message: %v (state %+v)", err, state(t, ctx))
	}
	if !strings.Contains(msg, "ldm serve") {
		t.Errorf("message %q does not say what to do", msg)
	}
}

// saveArtifact writes a file to test-artifacts/ at the repository root,
// which CI keeps.
func saveArtifact(tb testing.TB, name string, b []byte) {
	tb.Helper()
	dir := repoPath("test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("saved %s", p)
}

// viewerTypeCase is a voxel type with a value for every position and the
// window (level, width) that shows its range.
type viewerTypeCase struct {
	dt           storage.DataType
	value        func(x, y, z int) float64
	level, width float64
}

// viewerTypeCases are the voxel types the viewer tests open.
var viewerTypeCases = []viewerTypeCase{
	{storage.Uint8, func(x, y, z int) float64 { return float64((x*7 + y*3 + z) % 256) }, 127.5, 255},
	{storage.Uint16, func(x, y, z int) float64 { return float64(x*1000 + y*37 + z) }, 20000, 40000},
	{storage.Int16, func(x, y, z int) float64 { return float64(x*500 - y*300 + z - 4000) }, 0, 30000},
	{storage.Uint32, func(x, y, z int) float64 { return float64(uint32(x)*100000000 + uint32(y*1000+z)) }, 2e9, 4e9},
	{storage.Float32, func(x, y, z int) float64 { return float64(float32(x)*0.37 - float32(y)*1.5 + float32(z)*0.01) }, 0, 60},
}

// fill returns the case's voxels for shape, little-endian, x fastest.
func (tc viewerTypeCase) fill(shape storage.Shape) []byte {
	size := tc.dt.Size()
	buf := make([]byte, int(shape.X*shape.Y*shape.Z)*size)
	i := 0
	for z := range int(shape.Z) {
		for y := range int(shape.Y) {
			for x := range int(shape.X) {
				v := tc.value(x, y, z)
				switch tc.dt {
				case storage.Uint8:
					buf[i] = byte(v)
				case storage.Uint16:
					binary.LittleEndian.PutUint16(buf[i:], uint16(v))
				case storage.Int16:
					binary.LittleEndian.PutUint16(buf[i:], uint16(int16(v)))
				case storage.Uint32:
					binary.LittleEndian.PutUint32(buf[i:], uint32(v))
				case storage.Float32:
					binary.LittleEndian.PutUint32(buf[i:], math.Float32bits(float32(v)))
				}
				i += size
			}
		}
	}
	return buf
}

// TestViewer_dataTypes opens a small volume of every voxel type (with edge
// bricks clipped by the volume) and checks, at random voxels of the axial
// view, the value the viewer holds and the pixel it draws through the
// window: gray = round(clamp((v - (level - width/2)) / width) * 255).
func TestViewer_dataTypes(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	shape := storage.Shape{X: 40, Y: 30, Z: 20}
	for _, tc := range viewerTypeCases {
		t.Run(tc.dt.String(), func(t *testing.T) {
			name := "types-" + tc.dt.String()
			buf := tc.fill(shape)
			v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType(tc.dt), Shape: &ldmv1.Shape{X: shape.X, Y: shape.Y, Z: shape.Z},
				BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 2}
			if err := importVolume(ctx, c, v, bytes.NewReader(buf), io.Discard, true); err != nil {
				t.Fatal(err)
			}
			if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+name)); err != nil {
				t.Fatal(err)
			}
			waitLoaded(t, ctx, name, time.Minute)
			js := fmt.Sprintf(`window.ldm.setCrosshair(false); window.ldm.setWindow(%g, %g); window.ldm.setSlices({x: 20, y: 15, z: 13})`, tc.level, tc.width)
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, ctx)
			rng := rand.New(rand.NewPCG(3, uint64(tc.dt)))
			pts := []voxel{{0, 0, 13}, {39, 29, 13}, {33, 17, 13}}
			for range 150 {
				pts = append(pts, voxel{rng.IntN(int(shape.X)), rng.IntN(int(shape.Y)), 13})
			}
			ptsJS, _ := json.Marshal(pts)
			vals, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(`%s.map(p => window.ldm.value(p))`, ptsJS)))
			if err != nil {
				t.Fatal(err)
			}
			px := slicePixels(t, ctx, "z", pts)
			lo := tc.level - tc.width/2
			for i, p := range pts {
				want := tc.value(p.X, p.Y, p.Z)
				if vals[i] != want {
					t.Errorf("value at %v = %v, want %v", p, vals[i], want)
				}
				g := math.Min(1, math.Max(0, (want-lo)/tc.width))
				gray := int(math.Floor(g*255 + 0.5))
				if !grayMatches(px[i], gray, 0) {
					t.Errorf("pixel at %v = %v, want gray %d (value %v)", p, px[i], gray, want)
				}
			}
		})
	}
}

// TestViewer_token checks that a server that wants credentials gets a
// clear message, and that the token typed into the page is sent as
// "Authorization: Bearer" on every call, the streaming ones included.
func TestViewer_token(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	token, _, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "alice", "--roles", "reader")
	if err != nil {
		t.Fatal(err)
	}
	base := startTestServer(t, "--demo", "--tokens", tokens)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm && window.ldm.state().error.includes("Authentication required")`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("no 'Authentication required' message without a token: %v (state %+v)", err, state(t, ctx))
	}
	sel := `#volumes button[data-volume="demo"]`
	if err := chromedp.Do(ctx,
		chromedp.SendKeys(`#token`, strings.TrimSpace(token)),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("token").dispatchEvent(new Event("change"))`),
		chromedp.WaitVisible(sel), chromedp.Click(sel),
	); err != nil {
		t.Fatalf("enter the token and pick the demo volume: %v", err)
	}
	st := waitLoaded(t, ctx, "demo", time.Minute)
	if st.Error != "" || st.Stats.Bricks == 0 {
		t.Fatalf("with a token: error %q, %d bricks", st.Error, st.Stats.Bricks)
	}
}

// gatedTiles passes every call to Tiles, but each Read takes one value from
// gate first (a closed channel lets every read through). Tests use it to
// hold a stream part-way, deterministically.
type gatedTiles struct {
	service.Tiles
	gate <-chan struct{}
	free uint32 // Brick lets levels from free up through (0: none)
}

// Read waits for the gate, except for an offset past the end (a follower
// looking for new tiles), which fails at once as usual.
func (g *gatedTiles) Read(volume string, offset uint64) (storage.Tile, error) {
	if info, err := g.Tiles.Volume(volume); err == nil && offset < info.NextOffset {
		<-g.gate
	}
	return g.Tiles.Read(volume, offset)
}

// Brick waits for the gate too (StreamBricks with keys reads bricks by
// key), except for bricks of level free and coarser.
func (g *gatedTiles) Brick(volume string, key storage.BrickKey) (storage.Tile, error) {
	if g.free == 0 || key.LOD < g.free {
		<-g.gate
	}
	return g.Tiles.Brick(volume, key)
}

// streamLog is a slog.Handler that records, from the server's access log,
// how many messages each finished StreamBricks call sent.
type streamLog struct {
	mu   sync.Mutex
	sent []int64
}

func (l *streamLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *streamLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *streamLog) WithGroup(string) slog.Handler            { return l }
func (l *streamLog) Handle(_ context.Context, r slog.Record) error {
	var proc string
	var sent int64 = -1
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "procedure":
			proc = a.Value.String()
		case "sent":
			sent = a.Value.Int64()
		}
		return true
	})
	if strings.HasSuffix(proc, "/StreamBricks") && sent >= 0 {
		l.mu.Lock()
		l.sent = append(l.sent, sent)
		l.mu.Unlock()
	}
	return nil
}

// ended returns the number of StreamBricks calls that ended and the
// messages they sent in all.
func (l *streamLog) ended() (calls int, sent int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.sent {
		sent += n
	}
	return len(l.sent), sent
}

// TestViewer_reprioritise holds the demo's bricks after its coarsest level
// (cache budget 24 MiB, so the page needs only the slices' planes at full
// resolution), moves the slices to a far corner, and checks that the
// viewer cancels a stream of bricks it no longer needs, that the server
// sees every stream end, and that the page then finishes with every voxel
// right.
func TestViewer_reprioritise(t *testing.T) {
	gate := make(chan struct{})
	logs := &streamLog{}
	base := startTestServerWith(t, func(c *server.Config) {
		c.Tiles = &gatedTiles{Tiles: openTestStore(t, c), gate: gate, free: 2} // the coarsest level passes
		c.Logger = slog.New(logs)
	}, "--demo")
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(base+"/?volume=demo&budget=24")); err != nil {
		t.Fatal(err)
	}
	// The coarsest level arrives and is drawn; the other streams wait.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const s = window.ldm.state(); return !!s.stats && s.stats.firstPicture > 0 && s.streaming && s.levels.z === 0; })()`, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatalf("first picture: %v (state %+v)", err, state(t, ctx))
	}
	before := state(t, ctx).Stats.Cancelled
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setSlices({x: 10, y: 20, z: 20})`)); err != nil {
		t.Fatal(err)
	}
	// The axial plane's stream (z = 128) carries mostly bricks the new planes
	// do not need: it is cancelled.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`window.ldm.state().stats.cancelled > %d`, before), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		r, _ := chromedp.Run(ctx, chromedp.Evaluate[any](`window.ldm.state().requests`))
		t.Fatalf("moving the slices did not cancel a stream: %v (state %+v) requests %v", err, state(t, ctx), r)
	}
	close(gate)
	st := waitLoaded(t, ctx, "demo", time.Minute)
	if st.Cache.MaxBytes > 24<<20 {
		t.Errorf("the cache held %.0f bytes, over its budget of 24 MiB", st.Cache.MaxBytes)
	}
	// Every call the page made, the cancelled one too, has ended on the
	// server. (How many bricks a cancelled call still sent depends on when
	// the browser closes its HTTP/1.1 connection: from none to all.)
	testutil.WaitFor(t, 10*time.Second, "the server to end every StreamBricks call", func() bool {
		n, _ := logs.ended()
		return n == state(t, ctx).Stats.Streams
	})
	st = state(t, ctx)
	n, sent := logs.ended()
	t.Logf("%d streams (%d cancelled), %d keys asked for, %d bricks sent", n, st.Stats.Cancelled, st.Stats.RequestedKeys, sent)
	// Every voxel ends up right: spot-check the corner and the centre.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setWindow(127.5, 255); window.ldm.setSlices({x: 128, y: 128, z: 128})`)); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, ctx, "demo", time.Minute)
	pts := []voxel{{128, 128, 128}, {176, 128, 128}, {5, 5, 128}, {80, 80, 128}}
	px := slicePixels(t, ctx, "z", pts)
	for i, p := range pts {
		if want := int(pyramid.PhantomValue(p.X, p.Y, p.Z)); !grayMatches(px[i], want, 1) {
			t.Errorf("voxel %v: pixel %v, want gray %d", p, px[i], want)
		}
	}
}

// TestViewer_floatNonFinite opens a float32 volume holding +Inf, -Inf and
// NaN among finite values: the automatic window must span the finite values
// only (an infinite width would make every pixel's colour undefined).
func TestViewer_floatNonFinite(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	shape := storage.Shape{X: 20, Y: 20, Z: 20}
	value := func(x, y, z int) float32 { return float32(x) + float32(y)*0.5 }
	buf := make([]byte, 0, 4*20*20*20)
	for z := range 20 {
		for y := range 20 {
			for x := range 20 {
				v := value(x, y, z)
				switch {
				case x == 1 && y == 1 && z == 1:
					v = float32(math.Inf(1))
				case x == 2 && y == 2 && z == 2:
					v = float32(math.Inf(-1))
				case x == 3 && y == 3 && z == 3:
					v = float32(math.NaN())
				}
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
			}
		}
	}
	const name = "nonfinite"
	v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType_DATA_TYPE_FLOAT32, Shape: &ldmv1.Shape{X: shape.X, Y: shape.Y, Z: shape.Z},
		BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 1}
	openVolume(t, ctx, c, base, v, bytes.NewReader(buf))
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setSlices({x: 10, y: 10, z: 13})`)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ctx)
	win, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => { const w = window.ldm.state().window; return [Number.isFinite(w.level) ? w.level : -1e300, Number.isFinite(w.width) ? w.width : -1e300]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := 0.0, 19+19*0.5
	if win[0] != (lo+hi)/2 || win[1] != hi-lo {
		t.Fatalf("automatic window level %v width %v, want %v and %v (the finite values)", win[0], win[1], (lo+hi)/2, hi-lo)
	}
	pts := []voxel{{0, 0, 13}, {19, 19, 13}, {10, 4, 13}}
	px := slicePixels(t, ctx, "z", pts)
	for i, p := range pts {
		g := (float64(value(p.X, p.Y, p.Z)) - lo) / (hi - lo)
		if gray := int(math.Floor(g*255 + 0.5)); !grayMatches(px[i], gray, 0) {
			t.Errorf("pixel at %v = %v, want gray %d", p, px[i], gray)
		}
	}
}

// waitFaults holds the errors for Wait to return, one per call, and tells
// the test on taken each time one is used.
type waitFaults struct {
	errs  chan error
	taken chan struct{}
}

// failingWaitTiles passes every call to Tiles, but Wait fails with the next
// queued error.
type failingWaitTiles struct {
	service.Tiles
	f *waitFaults
}

func (w *failingWaitTiles) Wait(ctx context.Context, volume string, offset uint64) error {
	select {
	case err := <-w.f.errs:
		w.f.taken <- struct{}{}
		return err
	default:
		return w.Tiles.Wait(ctx, volume, offset)
	}
}

// TestViewer_liveRecovers fails the viewer's live stream once with a
// transient error (Unavailable) and checks that live mode follows again: a
// brick written afterwards appears without a reload.
func TestViewer_liveRecovers(t *testing.T) {
	faults := &waitFaults{errs: make(chan error, 1), taken: make(chan struct{}, 1)}
	faults.errs <- fmt.Errorf("leader changing: %w", storage.ErrNotLeader)
	base := startTestServerWith(t, func(c *server.Config) {
		c.Tiles = &failingWaitTiles{Tiles: openTestStore(t, c), f: faults}
	})
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const name = "live-recovers"
	v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Shape: &ldmv1.Shape{X: 32, Y: 32, Z: 32},
		BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 1}
	openVolume(t, ctx, c, base, v, bytes.NewReader(make([]byte, 32*32*32)))
	select {
	case <-faults.taken:
	case <-ctx.Done():
		t.Fatal("the viewer never followed the volume")
	}
	b := bytes.Repeat([]byte{200}, 16*16*16)
	if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: name, Tile: &ldmv1.Tile{Value: b, Key: &ldmv1.BrickKey{Lod: 0, X: 1, Y: 1, Z: 1}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm.value({x: 20, y: 20, z: 20}) === 200 && window.ldm.state().stats.liveTiles >= 1`, chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("after a transient error the live stream did not resume: %v (state %+v)", err, state(t, ctx))
	}
	if st := state(t, ctx); st.Error != "" {
		t.Fatalf("after the live stream recovered the page still shows %q", st.Error)
	}
}

// TestViewer_liveResumes turns live mode off, writes a brick, and turns it
// on again: the brick written while it was off appears too.
func TestViewer_liveResumes(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const name = "live-resumes"
	v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Shape: &ldmv1.Shape{X: 32, Y: 32, Z: 32},
		BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 1}
	openVolume(t, ctx, c, base, v, bytes.NewReader(make([]byte, 32*32*32)))
	toggle := func(on bool) {
		js := fmt.Sprintf(`(() => { const c = document.getElementById("live"); c.checked = %v; c.dispatchEvent(new Event("change")); })()`, on)
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatal(err)
		}
	}
	toggle(false)
	b := bytes.Repeat([]byte{90}, 16*16*16)
	if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: name, Tile: &ldmv1.Tile{Value: b, Key: &ldmv1.BrickKey{Lod: 0, X: 0, Y: 1, Z: 1}}})); err != nil {
		t.Fatal(err)
	}
	toggle(true)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.ldm.value({x: 5, y: 20, z: 20}) === 90`, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("the brick written while live mode was off did not appear when it was turned on: %v (state %+v)", err, state(t, ctx))
	}
}

// TestViewer_uint32Precision draws uint32 voxels above 2^24 (which float32
// cannot tell apart) through a one-unit window: 16777216 and 16777217 must
// come out black and white.
func TestViewer_uint32Precision(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const name = "uint32-precision"
	buf := make([]byte, 0, 4*16*16*16)
	for range 16 * 16 {
		for x := range 16 {
			buf = binary.LittleEndian.AppendUint32(buf, 1<<24+uint32(x%2))
		}
	}
	v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType_DATA_TYPE_UINT32, Shape: &ldmv1.Shape{X: 16, Y: 16, Z: 16},
		BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 1}
	openVolume(t, ctx, c, base, v, bytes.NewReader(buf))
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setCrosshair(false); window.ldm.setWindow(16777216.5, 1)`)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ctx)
	pts := []voxel{{4, 3, 8}, {5, 3, 8}, {10, 12, 8}, {11, 12, 8}}
	px := slicePixels(t, ctx, "z", pts)
	for i, p := range pts {
		if want := 255 * (p.X % 2); !grayMatches(px[i], want, 0) {
			t.Errorf("voxel %v (value %d): pixel %v, want gray %d", p, 1<<24+p.X%2, px[i], want)
		}
	}
}

// readFaults holds the errors for Read to return, one per call.
type readFaults struct{ errs chan error }

// failingReadTiles passes every call to Tiles, but Read of an existing tile
// fails with the next queued error.
type failingReadTiles struct {
	service.Tiles
	f *readFaults
}

func (r *failingReadTiles) Read(volume string, offset uint64) (storage.Tile, error) {
	if info, err := r.Tiles.Volume(volume); err != nil || offset >= info.NextOffset {
		return r.Tiles.Read(volume, offset) // a follower at the end of the log
	}
	select {
	case err := <-r.f.errs:
		return storage.Tile{}, err
	default:
		return r.Tiles.Read(volume, offset)
	}
}

// Brick fails with the next queued error too (StreamBricks with keys reads bricks by key).
func (r *failingReadTiles) Brick(volume string, key storage.BrickKey) (storage.Tile, error) {
	select {
	case err := <-r.f.errs:
		return storage.Tile{}, err
	default:
		return r.Tiles.Brick(volume, key)
	}
}

// TestViewer_streamRecovers fails the first brick read with a transient
// error (Unavailable): the viewer streams again and loads the whole volume,
// without the user moving a slice or reopening it.
func TestViewer_streamRecovers(t *testing.T) {
	faults := &readFaults{errs: make(chan error, 1)}
	base := startTestServerWith(t, func(c *server.Config) {
		c.Tiles = &failingReadTiles{Tiles: openTestStore(t, c), f: faults}
	}, "--demo")
	faults.errs <- fmt.Errorf("leader changing: %w", storage.ErrNotLeader) // armed once the demo is written
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume=demo")); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, ctx, "demo", time.Minute)
	if len(faults.errs) != 0 {
		t.Fatal("the injected failure was not hit")
	}
	// The failed stream may be the coarse cover's, which the views no
	// longer need once their own levels are in: it is streamed again after
	// the retry delay all the same, and the page settles with no error.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const s = window.ldm.state(); return s.stats.retries >= 1 && s.loaded && s.sharp && s.idle; })()`, chromedp.WithPollingTimeout(time.Minute))); err != nil {
		t.Fatalf("the failed stream was not streamed again: %v; state %+v", err, state(t, ctx))
	}
	if st := state(t, ctx); st.Error != "" {
		t.Fatalf("after the stream recovered the page still shows %q", st.Error)
	}
}
