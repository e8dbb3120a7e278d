package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
)

// ngQuadrants is the pattern of the Neuroglancer test volume (uint8,
// 100x70x40): in the slices z = 19..21 each quadrant around (50, 35) has
// its own value; every other slice is ngOther.
var ngQuadrants = [2][2]byte{{250, 20}, {100, 180}} // [y >= 35][x >= 50]

const ngOther = 60

// ngTimeout bounds the wait for Neuroglancer to draw a slice.
const ngTimeout = 60 * time.Second

func ngValue(x, y, z int) byte {
	if z < 19 || z > 21 {
		return ngOther
	}
	return ngQuadrants[b2i(y >= 35)][b2i(x >= 50)]
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestServer_views_neuroglancer opens a volume in Neuroglancer (the npm
// package, bundled into a test page served from another origin) in
// headless Chromium through precomputed:// and through zarr:// (v2, v3 and
// detected), and checks the pixels of an xy slice against the volume.
func TestServer_views_neuroglancer(t *testing.T) {
	dir := formatsDir(t)
	page := t.TempDir()
	build := exec.Command("node", filepath.Join(dir, "build.mjs"), page)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("bundle Neuroglancer: %v\n%s", err, out)
	}
	pages := httptest.NewServer(http.FileServer(http.Dir(page)))
	t.Cleanup(pages.Close)

	s := servertest.Start(t, server.Config{})
	ctx := context.Background()
	hc := &http.Client{Transport: client.NewTransport(nil)}
	vc := ldmv1connect.NewVolumeServiceClient(hc, s.URL())
	tc := ldmv1connect.NewTileServiceClient(hc, s.URL())
	// "ng" is raw; "ngz" holds the same voxels as zstd frames, which the
	// Zarr views serve as stored and the precomputed view decodes.
	for _, vol := range []struct {
		name  string
		codec ldmv1.Codec
	}{{"ng", ldmv1.Codec_CODEC_RAW}, {"ngz", ldmv1.Codec_CODEC_ZSTD}} {
		if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: vol.name, Shape: &ldmv1.Shape{X: 100, Y: 70, Z: 40}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Spacing: []float64{0.5, 0.75, 2}, Codec: vol.codec,
		}})); err != nil {
			t.Fatal(err)
		}
		writeNgBricks(t, tc, vol.name)
	}

	const w, h = 800, 600
	bctx := testutil.NewBrowser(t, w, h)
	for _, src := range []struct{ name, source string }{
		{"precomputed", "precomputed://" + s.URL() + "/precomputed/ng"},
		{"zarr2", "zarr2://" + s.URL() + "/zarr/ng/"},
		{"zarr3", "zarr3://" + s.URL() + "/zarr3/ng/"},
		{"zarr_v2_detected", "zarr://" + s.URL() + "/zarr/ng/"},
		{"zarr_v3_detected", "zarr://" + s.URL() + "/zarr3/ng/"},
		{"zstd_precomputed", "precomputed://" + s.URL() + "/precomputed/ngz"},
		{"zstd_zarr2", "zarr2://" + s.URL() + "/zarr/ngz/"},
		{"zstd_zarr3", "zarr3://" + s.URL() + "/zarr3/ngz/"},
	} {
		ngCheckSource(t, bctx, pages.URL, src.name, src.source)
	}
}

// writeNgBricks writes the four bricks of the Neuroglancer test volume.
func writeNgBricks(t *testing.T, tc ldmv1connect.TileServiceClient, volume string) {
	t.Helper()
	ctx := context.Background()
	for by := range uint32(2) {
		for bx := range uint32(2) {
			brick := make([]byte, 64*64*64)
			for z := range 64 {
				for y := range 64 {
					for x := range 64 {
						brick[(z*64+y)*64+x] = ngValue(int(bx)*64+x, int(by)*64+y, z)
					}
				}
			}
			if _, err := tc.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: volume, Tile: &ldmv1.Tile{
				Value: brick, Key: &ldmv1.BrickKey{X: bx, Y: by},
			}})); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// ngCheckSource opens source in the Neuroglancer page at pagesURL and
// checks the pixels of an xy slice against the volume.
func ngCheckSource(t *testing.T, bctx context.Context, pagesURL, name, source string) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		state := map[string]any{
			"dimensions": map[string]any{"x": []any{5e-4, "m"}, "y": []any{7.5e-4, "m"}, "z": []any{2e-3, "m"}},
			"position":   []float64{50, 35, 20.5},
			// Four screen pixels per voxel.
			"crossSectionScale":           0.25,
			"layout":                      "xy",
			"showAxisLines":               false,
			"showScaleBar":                false,
			"showDefaultAnnotations":      false,
			"crossSectionBackgroundColor": "#000000",
			"layers": []any{map[string]any{
				"type":   "image",
				"name":   "ng",
				"source": source,
				"shader": "void main() { emitGrayscale(float(toRaw(getDataValue())) / 255.0); }",
			}},
		}
		js, err := json.Marshal(state)
		if err != nil {
			t.Fatal(err)
		}
		u := pagesURL + "/index.html#!" + url.PathEscape(string(js))
		// A fresh page for each source (a new hash alone would keep the
		// previous layer's pixels on screen).
		if err := chromedp.Do(bctx, chromedp.Navigate("about:blank"), chromedp.Navigate(u)); err != nil {
			t.Fatal(err)
		}
		// The slice panel's centre is the position (50, 35), four
		// pixels a voxel.
		var last string
		var shot []byte
		deadline := time.Now().Add(ngTimeout)
		poll := time.NewTicker(100 * time.Millisecond)
		defer poll.Stop()
		for {
			rect, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`(() => {
					const p = document.querySelector('.neuroglancer-rendered-data-panel');
					if (!p) return [];
					const r = p.getBoundingClientRect();
					return [r.left, r.top, r.width, r.height];
				})()`))
			if err != nil {
				t.Fatal(err)
			}
			if shot, err = chromedp.Run(bctx, chromedp.CaptureScreenshot()); err != nil {
				t.Fatal(err)
			}
			if len(rect) == 4 {
				img, err := png.Decode(bytes.NewReader(shot))
				if err != nil {
					t.Fatal(err)
				}
				cx, cy := rect[0]+rect[2]/2, rect[1]+rect[3]/2
				ok := true
				last = ""
				// 10 and 30 voxels from the centre in x (x = 20, 40, 60
				// and 80: the last in the edge brick x 64..100), 10 in y.
				for qy := range 2 {
					for qx := range 2 {
						for _, dx := range []int{40, 120} {
							px := int(cx) + (2*qx-1)*dx
							py := int(cy) + (2*qy-1)*40
							got := gray(img, px, py)
							want := ngQuadrants[qy][qx]
							last += fmt.Sprintf(" (%d,%d)=%d want %d", px, py, got, want)
							if d := int(got) - int(want); d < -2 || d > 2 {
								ok = false
							}
						}
					}
				}
				if ok {
					return
				}
			}
			if time.Now().After(deadline) {
				saveViewArtifact(t, "neuroglancer-"+name+".png", shot)
				text, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`JSON.stringify(window.viewer.layerManager.managedLayers.map(l => (l.layer?.dataSources ?? []).map(d => String(d.loadState?.error ?? d.loadState?.constructor?.name))))`))
				t.Fatalf("%s: the slice's pixels do not match the volume after %v:%s\npage text: %s", name, ngTimeout, last, text)
			}
			<-poll.C
		}
	})
}

// gray returns the red channel of the pixel at x, y (the slice is
// grayscale).
func gray(img image.Image, x, y int) byte {
	r, _, _, _ := img.At(x, y).RGBA()
	return byte(r >> 8)
}

// saveViewArtifact writes a failing test's screenshot to test-artifacts/.
func saveViewArtifact(t *testing.T, name string, b []byte) {
	dir := filepath.Join("..", "test-artifacts")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		t.Logf("screenshot: %s", filepath.Join(dir, name))
	}
}
