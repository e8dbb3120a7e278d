package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// debianPython is the Python that `make python` gives numpy and zarr.
const debianPython = "/usr/bin/python3"

// pythonWith returns debianPython after checking it imports modules.
func pythonWith(tb testing.TB, modules ...string) string {
	tb.Helper()
	if out, err := exec.Command(debianPython, "-c", "import "+strings.Join(modules, ", ")).CombinedOutput(); err != nil {
		tb.Fatalf("%s cannot import %v (run `make python`, or apt-get install -y python3-numpy python3-zarr): %v\n%s", debianPython, modules, err, out)
	}
	return debianPython
}

// regionVoxels reads a whole level with `ldm region get` into a NRRD file
// and returns its voxels and header.
func regionVoxels(tb testing.TB, base, volume string, lod int) ([]byte, volfile.Header) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "level.nrrd")
	if _, errOut, err := ldmCmd(tb, "", "region", "get", volume, "--lod", fmt.Sprint(lod), "-o", out, "-q", "--server", base); err != nil {
		tb.Fatalf("region get: %v\n%s", err, errOut)
	}
	im, err := volfile.Open(out, volfile.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	vox, err := im.ReadVoxels()
	if err != nil {
		tb.Fatal(err)
	}
	return vox, im.Header
}

// TestExport_zarr exports volumes with `ldm export --format zarr` and reads
// every level back with zarr-python: voxel for voxel what ReadRegion
// returns for the level (edges, and bricks never written, included), and
// OME-NGFF 0.4 metadata whose scale and translation are the level's affine
// for an axis-aligned volume.
func TestExport_zarr(t *testing.T) {
	t.Parallel()
	py := pythonWith(t, "numpy", "zarr")
	base := startTestServer(t, "--demo")
	dir := t.TempDir()
	nrrd := filepath.Join(dir, "lps.nrrd")
	writeLPSNRRD(t, nrrd)
	if _, errOut, err := ldmCmd(t, "", "import", nrrd, "--name", "oblique", "--lods", "2", "-q", "--server", base); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	// A volume with one brick written: the others read as zeros.
	if _, errOut, err := ldmCmd(t, "", "volume", "create", "sparse", "--shape", "100x70x65", "--dtype", "uint16", "--lods", "2", "--spacing", "0.5,0.5,2", "--server", base); err != nil {
		t.Fatalf("volume create: %v\n%s", err, errOut)
	}
	brick := bytes.Repeat([]byte{7, 1}, 64*64*64)
	if _, errOut, err := ldmCmd(t, string(brick), "tile", "write", "sparse", "-", "--brick", "0,1,0,1", "--server", base); err != nil {
		t.Fatalf("tile write: %v\n%s", err, errOut)
	}

	script := `
import json, sys, zarr, numpy as np
g = zarr.open_group(sys.argv[1], mode="r")
ms = g.attrs["multiscales"][0]
for i, d in enumerate(ms["datasets"]):
    a = g[d["path"]]
    np.ascontiguousarray(a[:]).tofile(sys.argv[2] + "/" + d["path"] + ".raw")
    d["shape"], d["dtype"] = list(a.shape), a.dtype.str
print(json.dumps({"multiscales": ms, "go-ldm": g.attrs["go-ldm"]}))
`
	for _, c := range []struct {
		name    string
		levels  int
		aligned bool
	}{{"demo", 2, true}, {"oblique", 2, false}, {"sparse", 2, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), c.name+".zarr")
			stdout, errOut, err := ldmCmd(t, "", "export", c.name, out, "--format", "zarr", "--server", base)
			if err != nil {
				t.Fatalf("export: %v\n%s", err, errOut)
			}
			if !strings.Contains(stdout, "exported "+c.name) || !strings.Contains(errOut, "bricks") {
				t.Fatalf("export printed %q and %q", stdout, errOut)
			}
			raws := t.TempDir()
			pyOut, err := exec.Command(py, "-c", script, out, raws).CombinedOutput()
			if err != nil {
				t.Fatalf("zarr-python: %v\n%s", err, pyOut)
			}
			var got struct {
				Multiscales struct {
					Version string `json:"version"`
					Axes    []struct {
						Name string `json:"name"`
					} `json:"axes"`
					Datasets []struct {
						Path  string   `json:"path"`
						Shape []uint32 `json:"shape"`
						DType string   `json:"dtype"`
						CT    []struct {
							Type        string    `json:"type"`
							Scale       []float64 `json:"scale"`
							Translation []float64 `json:"translation"`
						} `json:"coordinateTransformations"`
					} `json:"datasets"`
				} `json:"multiscales"`
				LDM struct {
					Transform []float64 `json:"transform"`
					Expressed string    `json:"transformExpressed"`
				} `json:"go-ldm"`
			}
			if err := json.Unmarshal(pyOut, &got); err != nil {
				t.Fatalf("zarr-python printed %s: %v", pyOut, err)
			}
			ms := got.Multiscales
			if ms.Version != "0.4" || len(ms.Axes) != 3 || ms.Axes[0].Name != "z" || ms.Axes[2].Name != "x" || len(ms.Datasets) < c.levels {
				t.Fatalf("multiscales %+v", ms)
			}
			if (got.LDM.Expressed == "exact") != c.aligned || len(got.LDM.Transform) != 16 {
				t.Fatalf("go-ldm metadata %+v (aligned %v)", got.LDM, c.aligned)
			}
			for lod, d := range ms.Datasets {
				want, h := regionVoxels(t, base, c.name, lod)
				if fmt.Sprint(d.Shape) != fmt.Sprint([]uint32{h.Shape.Z, h.Shape.Y, h.Shape.X}) {
					t.Fatalf("level %d: zarr shape %v, the level is %v", lod, d.Shape, h.Shape)
				}
				raw, err := os.ReadFile(filepath.Join(raws, d.Path+".raw"))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(raw, want) {
					t.Fatalf("level %d: zarr-python reads other voxels than ReadRegion (%d and %d bytes)", lod, len(raw), len(want))
				}
				if c.aligned {
					// Axis-aligned: scale and translation are the level's
					// affine (h.Transform is the level's, from region get).
					a := h.Transform
					wantScale := []float64{a[10], a[5], a[0]}
					wantTrans := []float64{a[11], a[7], a[3]}
					if len(d.CT) != 2 || !near(d.CT[0].Scale, wantScale) || !near(d.CT[1].Translation, wantTrans) {
						t.Fatalf("level %d: transformations %+v, want scale %v translation %v", lod, d.CT, wantScale, wantTrans)
					}
				}
			}
			if c.name == "sparse" {
				// Brick (1,0,1) of LOD 0 holds 0x0107; voxel (70,5,70) is in it,
				// voxel (0,0,0) is in a brick never written.
				raw, _ := os.ReadFile(filepath.Join(raws, "0.raw"))
				at := func(x, y, z int) uint16 { i := ((z*70+y)*100 + x) * 2; return uint16(raw[i]) | uint16(raw[i+1])<<8 }
				if at(70, 5, 64) != 0x0107 || at(0, 0, 0) != 0 {
					t.Fatalf("sparse voxels %#x %#x", at(70, 5, 64), at(0, 0, 0))
				}
			}
		})
	}
	t.Run("refuses_a_full_directory", func(t *testing.T) {
		t.Parallel()
		full := t.TempDir()
		if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ldmCmd(t, "", "export", "demo", full, "--server", base); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatalf("export into a full directory: %v", err)
		}
		if _, _, err := ldmCmd(t, "", "export", "demo", t.TempDir(), "--format", "tiff", "--server", base); err == nil || exitCode(err) != 2 {
			t.Fatalf("--format tiff: %v", err)
		}
	})
}

func near(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-9*math.Max(1, math.Abs(b[i])) {
			return false
		}
	}
	return true
}

// TestREADME_python_read_region runs the README's Python snippet (numpy,
// the Connect protocol over urllib) against a server: the array it reads
// is the box `ldm region get` writes.
func TestREADME_python_read_region(t *testing.T) {
	t.Parallel()
	py := pythonWith(t, "numpy")
	readme, err := os.ReadFile(repoPath("README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- python-read-region -->\n```python\n")
	code, _, ok2 := strings.Cut(rest, "```\n")
	if !ok || !ok2 {
		t.Fatal("README.md has no python-read-region snippet")
	}
	base := startTestServer(t, "--demo")
	if !strings.Contains(code, `"http://127.0.0.1:8080"`) {
		t.Fatal("the snippet does not read from http://127.0.0.1:8080")
	}
	code = strings.ReplaceAll(code, `"http://127.0.0.1:8080"`, `"`+base+`"`)
	out := filepath.Join(t.TempDir(), "box.raw")
	code += fmt.Sprintf("\nb = read_region(%q, \"demo\", ((3, 100), (5, 90), (60, 70)), lod=0)\nassert b.shape == (10, 85, 97), b.shape\nb.tofile(%q)\n", base, out)
	code += fmt.Sprintf("try:\n    read_region(%q, \"nope\", ((0, 1), (0, 1), (0, 1)))\n    raise SystemExit('no error for an unknown volume')\nexcept RuntimeError as e:\n    assert e.args[0]['code'] == 'not_found', e\n", base)
	stdout, err := exec.Command(py, "-c", code).CombinedOutput()
	if err != nil {
		t.Fatalf("the README snippet: %v\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), "(10, 128, 128) uint8") {
		t.Fatalf("the snippet printed %q", stdout)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	box := filepath.Join(t.TempDir(), "box.nrrd")
	if _, errOut, err := ldmCmd(t, "", "region", "get", "demo", "--box", "3:100,5:90,60:70", "-o", box, "-q", "--server", base); err != nil {
		t.Fatalf("region get: %v\n%s", err, errOut)
	}
	im, err := volfile.Open(box, volfile.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := im.ReadVoxels()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || im.DataType != storage.Uint8 {
		t.Fatalf("the snippet read %d bytes, region get %d (%v); they differ", len(got), len(want), im.DataType)
	}
}
