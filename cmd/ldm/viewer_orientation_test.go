package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// orientFile is a volume file with one bright marker voxel (200) in a
// background of 10, and the affine its header states.
type orientFile struct {
	name   string
	path   string
	shape  [3]int
	marker [3]int
	affine []float64 // row-major 4x4, world in space
	space  string    // "RAS" or "LPS"
}

// worldOf maps voxel p (voxel centres) through a row-major 4x4 affine.
func worldOf(a []float64, p [3]float64) [3]float64 {
	var w [3]float64
	for r := 0; r < 3; r++ {
		w[r] = a[4*r]*p[0] + a[4*r+1]*p[1] + a[4*r+2]*p[2] + a[4*r+3]
	}
	return w
}

// orientFiles returns the NIfTI files written by nibabel (RAS, LPS and two
// oblique ones; volfile/testdata/nibabel) and a NRRD file written here whose
// voxel axes are permuted against the patient's (x inferior, y left, z
// anterior, in LPS).
func orientFiles(t *testing.T) []orientFile {
	t.Helper()
	b, err := os.ReadFile(repoPath("volfile/testdata/nibabel/expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Files map[string]struct {
			Affine []float64 `json:"affine"`
			Marker [3]int    `json:"marker"`
			Shape  [3]int    `json:"shape"`
		} `json:"files"`
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	var out []orientFile
	for _, n := range []string{"ras.nii", "lps.nii.gz", "oblique_qform.nii", "oblique_sform.nii"} {
		e, ok := exp.Files[n]
		if !ok {
			t.Fatalf("expected.json has no %s", n)
		}
		name := strings.ReplaceAll(strings.TrimSuffix(strings.TrimSuffix(n, ".gz"), ".nii"), "_", "-")
		out = append(out, orientFile{name: name, path: repoPath("volfile/testdata/nibabel/" + n), shape: e.Shape, marker: e.Marker, affine: e.Affine, space: "RAS"})
	}
	shape, marker := [3]int{10, 8, 6}, [3]int{7, 1, 4}
	vox := make([]byte, shape[0]*shape[1]*shape[2])
	for i := range vox {
		vox[i] = 10
	}
	vox[marker[0]+shape[0]*(marker[1]+shape[1]*marker[2])] = 200
	hdr := "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 10 8 6\nencoding: raw\nspace: left-posterior-superior\n" +
		"space directions: (0,0,-2) (1.5,0,0) (0,-1,0)\nspace origin: (-30,12.5,80)\n\n"
	p := filepath.Join(t.TempDir(), "permuted.nrrd")
	if err := os.WriteFile(p, append([]byte(hdr), vox...), 0o644); err != nil {
		t.Fatal(err)
	}
	out = append(out, orientFile{name: "permuted-lps", path: p, shape: shape, marker: marker, space: "LPS",
		affine: []float64{0, 1.5, 0, -30, 0, 0, -1, 12.5, -2, 0, 0, 80, 0, 0, 0, 1}})
	return out
}

// markerSpot is where the bright marker shows in one view's canvas.
type markerSpot struct {
	CX, CY, W, H float64 // centroid of the marker's pixels; canvas size
	N            int     // marker pixels
	ClientX      float64 // the centroid in client (CSS) pixels
	ClientY      float64
}

// findMarker returns the centroid of the white pixels of the view's canvas.
func findMarker(t *testing.T, ctx context.Context, view string) markerSpot {
	t.Helper()
	js := fmt.Sprintf(`(() => {
		const c = document.querySelector("#view-%s canvas");
		const t = document.createElement("canvas");
		t.width = c.width; t.height = c.height;
		const g = t.getContext("2d");
		g.drawImage(c, 0, 0);
		const d = g.getImageData(0, 0, c.width, c.height).data;
		let n = 0, sx = 0, sy = 0;
		for (let i = 0; i < d.length; i += 4) {
			if (d[i] > 200 && d[i + 1] > 200 && d[i + 2] > 200) {
				const p = i / 4;
				n++; sx += p %% c.width; sy += Math.floor(p / c.width);
			}
		}
		const r = c.getBoundingClientRect(), k = r.width / c.width;
		const cx = n ? sx / n + 0.5 : 0, cy = n ? sy / n + 0.5 : 0;
		return {CX: cx, CY: cy, W: c.width, H: c.height, N: n, ClientX: r.left + cx * k, ClientY: r.top + cy * k};
	})()`, view)
	s, err := chromedp.Run(ctx, chromedp.Evaluate[markerSpot](js))
	if err != nil {
		t.Fatalf("find the marker in the %s view: %v", view, err)
	}
	if s.N == 0 {
		t.Fatalf("the %s view shows no marker pixel", view)
	}
	return s
}

// side returns -1, 0 or 1 for a position left of (above), at or right of
// (below) the middle of a length.
func side(pos, length float64) int {
	switch d := pos - length/2; {
	case d > 0.5:
		return 1
	case d < -0.5:
		return -1
	}
	return 0
}

func sign(v float64) int {
	switch {
	case v > 1e-9:
		return 1
	case v < -1e-9:
		return -1
	}
	return 0
}

type orientReport struct {
	Space      string `json:"space"`
	Convention string `json:"convention"`
	Oblique    bool   `json:"oblique"`
	Known      bool   `json:"known"`
	Note       string `json:"note"`
	Views      map[string]struct {
		Depth  string `json:"depth"`
		Left   string `json:"left"`
		Right  string `json:"right"`
		Top    string `json:"top"`
		Bottom string `json:"bottom"`
	} `json:"views"`
}

// TestViewer_orientation imports NIfTI files written by nibabel (RAS, LPS,
// oblique by qform and by sform) and a NRRD file with permuted axes, all with
// one bright marker voxel, and checks in Chromium that every view shows the
// marker on the side of the patient where the file's affine puts it
// (radiological: the patient's left on the screen's right in the axial and
// coronal views; anterior up in axial; superior up in coronal and sagittal;
// anterior on the left in sagittal), that the neurological switch mirrors
// the axial and coronal views, that every view is labelled, that oblique
// volumes say so, and that the cursor readout shows the marker's world
// coordinates.
func TestViewer_orientation(t *testing.T) {
	base := startTestServer(t)
	files := orientFiles(t)
	for _, f := range files {
		if err := run(context.Background(), []string{"import", f.path, "--server", base, "--name", f.name, "-q"}); err != nil {
			t.Fatalf("import %s: %v", f.path, err)
		}
	}
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}
	worldRE := regexp.MustCompile(`world \(([-0-9.]+), ([-0-9.]+), ([-0-9.]+)\) mm (RAS|LPS)`)
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			if err := chromedp.Do(ctx, chromedp.Navigate(base+"/?volume="+f.name)); err != nil {
				t.Fatal(err)
			}
			waitLoaded(t, ctx, f.name, time.Minute)
			m := f.marker
			js := fmt.Sprintf(`window.ldm.setCrosshair(false); window.ldm.setConvention("radiological"); window.ldm.setSlices({x: %d, y: %d, z: %d})`, m[0], m[1], m[2])
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, ctx)

			// Where the marker is in the patient, relative to the volume's
			// centre, in LPS: d[0] > 0 left, d[1] > 0 posterior, d[2] > 0
			// superior.
			mw := worldOf(f.affine, [3]float64{float64(m[0]), float64(m[1]), float64(m[2])})
			cw := worldOf(f.affine, [3]float64{float64(f.shape[0]-1) / 2, float64(f.shape[1]-1) / 2, float64(f.shape[2]-1) / 2})
			var d [3]float64
			for i := range d {
				d[i] = mw[i] - cw[i]
			}
			if f.space == "RAS" {
				d[0], d[1] = -d[0], -d[1]
			}
			for i, v := range d {
				if math.Abs(v) < 0.01 {
					t.Fatalf("test data: the marker is level with the centre along patient axis %d (%v)", i, d)
				}
			}
			// view -> (patient offset shown left-right, shown top-bottom).
			want := map[string][2]int{
				"axial":    {sign(d[0]), sign(d[1])},  // left on the right, posterior down
				"coronal":  {sign(d[0]), -sign(d[2])}, // left on the right, superior up
				"sagittal": {sign(d[1]), -sign(d[2])}, // posterior on the right, superior up
			}
			spots := map[string]markerSpot{}
			for view, w := range want {
				s := findMarker(t, ctx, view)
				spots[view] = s
				if got := [2]int{side(s.CX, s.W), side(s.CY, s.H)}; got != w {
					t.Errorf("%s view: marker at (%.0f, %.0f) of %.0fx%.0f, side %v, want %v (patient offset LPS %v)", view, s.CX, s.CY, s.W, s.H, got, w, d)
				}
			}

			rep, err := chromedp.Run(ctx, chromedp.Evaluate[orientReport](`window.ldm.orientation()`))
			if err != nil {
				t.Fatal(err)
			}
			labels := map[string]string{"axial": "RLAP", "coronal": "RLSI", "sagittal": "APSI"}
			for view, l := range labels {
				v := rep.Views[view]
				if got := v.Left + v.Right + v.Top + v.Bottom; got != l {
					t.Errorf("%s view labels (left right top bottom) %q, want %q", view, got, l)
				}
			}
			oblique := strings.HasPrefix(f.name, "oblique")
			if rep.Oblique != oblique || (rep.Note != "") != oblique || (oblique && !strings.Contains(rep.Note, "nearest anatomical orientation")) {
				t.Errorf("oblique %v, note %q; want oblique %v with a note saying so", rep.Oblique, rep.Note, oblique)
			}
			if rep.Space != f.space {
				t.Errorf("space %q, want %q", rep.Space, f.space)
			}

			png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatal(err)
			}
			saveArtifact(t, "viewer-orientation-"+f.name+".png", png)

			// The readout under the pointer: the marker's voxel and world
			// position.
			ax := spots["axial"]
			text, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => {
				const c = document.querySelector("#view-axial canvas");
				c.dispatchEvent(new PointerEvent("pointermove", {clientX: %g, clientY: %g, bubbles: true}));
				return document.getElementById("cursor").textContent;
			})()`, ax.ClientX, ax.ClientY)))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(text, fmt.Sprintf("voxel (%d, %d, %d)", m[0], m[1], m[2])) || !strings.Contains(text, "value 200") {
				t.Fatalf("readout %q, want voxel %v with value 200", text, m)
			}
			g := worldRE.FindStringSubmatch(text)
			if g == nil || g[4] != f.space {
				t.Fatalf("readout %q has no world position in %s", text, f.space)
			}
			for i := 0; i < 3; i++ {
				v, _ := strconv.ParseFloat(g[i+1], 64)
				if math.Abs(v-mw[i]) > 0.0051 {
					t.Errorf("readout world %s, want %.3f, %.3f, %.3f", g[0], mw[0], mw[1], mw[2])
					break
				}
			}

			// Neurological: the patient's left on the screen's left in the
			// axial and coronal views; sagittal unchanged.
			if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.ldm.setConvention("neurological")`)); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, ctx)
			for view, w := range want {
				if view != "sagittal" {
					w[0] = -w[0]
				}
				s := findMarker(t, ctx, view)
				if got := [2]int{side(s.CX, s.W), side(s.CY, s.H)}; got != w {
					t.Errorf("neurological %s view: marker side %v, want %v", view, got, w)
				}
			}
			rep, err = chromedp.Run(ctx, chromedp.Evaluate[orientReport](`window.ldm.orientation()`))
			if err != nil {
				t.Fatal(err)
			}
			if v := rep.Views["axial"]; v.Left+v.Right != "LR" {
				t.Errorf("neurological axial labels %q, want L on the left", v.Left+v.Right)
			}
		})
	}
}
