package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/web"
)

// zstdPageStats is the part of window.ldm.state().stats about codecs.
type zstdPageStats struct {
	Bytes      float64 `json:"bytes"`  // on the wire
	Voxels     float64 `json:"voxels"` // decoded
	Bricks     int     `json:"bricks"`
	ZstdBricks int     `json:"zstdBricks"`
	BadBricks  int     `json:"badBricks"`
}

// zstdView is what the page shows of one volume: values and pixels at the
// same voxels in every view, and what it received.
type zstdView struct {
	values           []float64
	z, y, x, view3d  [][4]int
	stats            zstdPageStats
	cacheBytes       float64
	progress, errMsg string
}

// TestViewer_zstd opens, for every voxel type, a volume stored raw and the
// same voxels stored as zstd frames (imported with the codec, so the Go
// client compresses each brick), and checks the viewer shows exactly the
// same values and pixels in the three slice views and the 3D view, that
// the zstd volume's bricks came as frames and were decoded in the page,
// with fewer bytes on the wire and the same decoded bytes in the cache.
// The volume's edges cut bricks, so padded edge bricks are decoded too.
func TestViewer_zstd(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	shape := storage.Shape{X: 40, Y: 30, Z: 20}
	for _, tc := range viewerTypeCases {
		t.Run(tc.dt.String(), func(t *testing.T) {
			buf := tc.fill(shape)
			rng := rand.New(rand.NewPCG(14, uint64(tc.dt)))
			pts := []voxel{{0, 0, 13}, {39, 29, 13}, {33, 17, 13}, {20, 15, 13}, {39, 15, 13}}
			for range 60 {
				pts = append(pts, voxel{rng.IntN(int(shape.X)), rng.IntN(int(shape.Y)), 13})
			}
			views := map[ldmv1.Codec]zstdView{}
			for _, codec := range []ldmv1.Codec{ldmv1.Codec_CODEC_RAW, ldmv1.Codec_CODEC_ZSTD} {
				name := fmt.Sprintf("zstd-%s-%s", tc.dt, map[ldmv1.Codec]string{ldmv1.Codec_CODEC_RAW: "raw", ldmv1.Codec_CODEC_ZSTD: "zstd"}[codec])
				v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType(tc.dt), Shape: &ldmv1.Shape{X: shape.X, Y: shape.Y, Z: shape.Z},
					BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 2, Codec: codec}
				if err := importVolume(ctx, c, v, bytes.NewReader(buf), io.Discard, true); err != nil {
					t.Fatal(err)
				}
				got, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name}))
				if err != nil {
					t.Fatal(err)
				}
				if got.Msg.GetVolume().GetCodec() != codec {
					t.Fatalf("volume %s has codec %v, want %v", name, got.Msg.GetVolume().GetCodec(), codec)
				}
				views[codec] = viewVolume(t, ctx, base, name, pts, tc.level, tc.width)
			}
			raw, zs := views[ldmv1.Codec_CODEC_RAW], views[ldmv1.Codec_CODEC_ZSTD]
			for i, p := range pts {
				if want := tc.value(p.X, p.Y, p.Z); raw.values[i] != want || zs.values[i] != want {
					t.Errorf("value at %v: raw volume %v, zstd volume %v, want %v", p, raw.values[i], zs.values[i], want)
				}
				for _, vw := range []struct {
					name string
					r, z [][4]int
				}{{"z", raw.z, zs.z}, {"y", raw.y, zs.y}, {"x", raw.x, zs.x}, {"3d", raw.view3d, zs.view3d}} {
					if vw.r[i] != vw.z[i] {
						t.Errorf("view %s at %v: raw volume %v, zstd volume %v", vw.name, p, vw.r[i], vw.z[i])
					}
				}
			}
			if raw.stats.ZstdBricks != 0 || zs.stats.ZstdBricks == 0 || zs.stats.ZstdBricks != zs.stats.Bricks {
				t.Errorf("zstd bricks: raw volume %d, zstd volume %d of %d; want 0 and all", raw.stats.ZstdBricks, zs.stats.ZstdBricks, zs.stats.Bricks)
			}
			if zs.stats.BadBricks != 0 || zs.errMsg != "" {
				t.Errorf("zstd volume: %d bricks not decoded, message %q", zs.stats.BadBricks, zs.errMsg)
			}
			if zs.stats.Voxels != raw.stats.Voxels || zs.stats.Voxels == 0 {
				t.Errorf("voxels decoded: raw volume %v, zstd volume %v", raw.stats.Voxels, zs.stats.Voxels)
			}
			if zs.cacheBytes != raw.cacheBytes || zs.cacheBytes < zs.stats.Voxels*float64(tc.dt.Size()) {
				t.Errorf("cache holds %v bytes for the zstd volume, %v for the raw one (%v voxels decoded): it must count decoded bytes", zs.cacheBytes, raw.cacheBytes, zs.stats.Voxels)
			}
			if zs.stats.Bytes >= raw.stats.Bytes {
				t.Errorf("bytes on the wire: zstd volume %v, raw volume %v", zs.stats.Bytes, raw.stats.Bytes)
			}
			for _, s := range []string{"on the wire", "voxels decoded"} {
				if !bytes.Contains([]byte(zs.progress), []byte(s)) {
					t.Errorf("the page's progress %q does not say %q", zs.progress, s)
				}
			}
		})
	}
}

// viewVolume opens volume name, sets the window and slices, and reads what
// the page shows at pts.
func viewVolume(t *testing.T, ctx context.Context, base, name string, pts []voxel, level, width float64) zstdView {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+name)); err != nil {
		t.Fatal(err)
	}
	waitLoaded(t, ctx, name, time.Minute)
	js := fmt.Sprintf(`window.ldm.setCrosshair(false); window.ldm.setWindow(%g, %g); window.ldm.setSlices({x: 20, y: 15, z: 13})`, level, width)
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, ctx)
	var v zstdView
	ptsJS, _ := json.Marshal(pts)
	vals, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](fmt.Sprintf(`%s.map(p => window.ldm.value(p))`, ptsJS)))
	if err != nil {
		t.Fatal(err)
	}
	v.values = vals
	// The y and x views show the voxels of their planes at the same x and z.
	atY, atX := make([]voxel, len(pts)), make([]voxel, len(pts))
	for i, p := range pts {
		atY[i] = voxel{p.X, 15, p.Z}
		atX[i] = voxel{20, p.Y, p.Z}
	}
	v.z, v.y, v.x = slicePixels(t, ctx, "z", pts), slicePixels(t, ctx, "y", atY), slicePixels(t, ctx, "x", atX)
	v.view3d = pixels3D(t, ctx, pts)
	st, err := chromedp.Run(ctx, chromedp.Evaluate[zstdPageStats](`window.ldm.state().stats`))
	if err != nil {
		t.Fatal(err)
	}
	v.stats = st
	v.cacheBytes = state(t, ctx).Cache.Bytes
	v.errMsg = state(t, ctx).Error
	if v.progress, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("progress").textContent`)); err != nil {
		t.Fatal(err)
	}
	return v
}

// pathLog is a reverse proxy in front of a server that records the path
// of every request it passes on.
type pathLog struct {
	mu    sync.Mutex
	paths []string
}

// proxy starts the proxy in front of base and returns its URL; it stops
// when tb ends.
func (l *pathLog) proxy(tb testing.TB, base string) string {
	tb.Helper()
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // bricks stream through as they come
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.paths = append(l.paths, r.URL.Path)
		l.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return srv.URL
}

// take returns the paths recorded since the last take.
func (l *pathLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.paths
	l.paths = nil
	return p
}

// TestViewer_zstdDecoderOnDemand checks that the zstd decoder (its own
// file, zstd_wasm.HASH.js) is fetched only by a page that opens a zstd
// volume: a raw volume's page, streamed to the end, never asks the server
// for it, and a zstd volume's page does and decodes its bricks. The raw
// volume is opened first, in a new browser profile: nothing is cached.
func TestViewer_zstdDecoderOnDemand(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	var log pathLog
	front := log.proxy(t, base)
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	dec, err := fs.Glob(web.FS(), "zstd_wasm.*.js")
	if err != nil || len(dec) != 1 {
		t.Fatalf("the viewer's files hold decoders %v (%v), want one", dec, err)
	}
	shape := storage.Shape{X: 40, Y: 30, Z: 20}
	buf := viewerTypeCases[0].fill(shape)
	fetched := func(paths []string) int {
		n := 0
		for _, p := range paths {
			if p == "/"+dec[0] {
				n++
			}
		}
		return n
	}
	for _, codec := range []ldmv1.Codec{ldmv1.Codec_CODEC_RAW, ldmv1.Codec_CODEC_ZSTD} {
		tag := map[ldmv1.Codec]string{ldmv1.Codec_CODEC_RAW: "raw", ldmv1.Codec_CODEC_ZSTD: "zstd"}[codec]
		name := "decoder-" + tag
		v := &ldmv1.Volume{Name: name, DataType: ldmv1.DataType(viewerTypeCases[0].dt), Shape: &ldmv1.Shape{X: shape.X, Y: shape.Y, Z: shape.Z},
			BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 2, Codec: codec}
		if err := importVolume(ctx, c, v, bytes.NewReader(buf), io.Discard, true); err != nil {
			t.Fatal(err)
		}
		log.take()
		if err := chromedp.Do(ctx, chromedp.Navigate(front+"/?volume="+name)); err != nil {
			t.Fatal(err)
		}
		st := waitLoaded(t, ctx, name, time.Minute)
		// Move through the volume so that the worker streams too.
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setSlices({x: 3, y: 27, z: 18})`)); err != nil {
			t.Fatal(err)
		}
		st = waitLoaded(t, ctx, name, time.Minute)
		zs, err := chromedp.Run(ctx, chromedp.Evaluate[zstdPageStats](`window.ldm.state().stats`))
		if err != nil {
			t.Fatal(err)
		}
		paths := log.take()
		n := fetched(paths)
		switch {
		case st.Error != "" || zs.BadBricks != 0:
			t.Errorf("%s volume: message %q, %d bricks not decoded", tag, st.Error, zs.BadBricks)
		case codec == ldmv1.Codec_CODEC_RAW && (n != 0 || zs.ZstdBricks != 0):
			t.Errorf("the raw volume's page fetched the zstd decoder %d times (%d zstd bricks); requests %v", n, zs.ZstdBricks, paths)
		case codec == ldmv1.Codec_CODEC_ZSTD && (n == 0 || zs.ZstdBricks != zs.Bricks || zs.Bricks == 0):
			t.Errorf("the zstd volume's page fetched the decoder %d times, %d of %d bricks came as zstd; requests %v", n, zs.ZstdBricks, zs.Bricks, paths)
		}
	}
}
