package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/client"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// writeLPSNRRD writes a 70x50x40 uint16 NRRD file in LPS with an oblique,
// flipped set of axes, whose voxel (x, y, z) holds x + 3y + 7z.
func writeLPSNRRD(tb testing.TB, path string) []byte {
	tb.Helper()
	const nx, ny, nz = 70, 50, 40
	vox := make([]byte, nx*ny*nz*2)
	for z := 0; z < nz; z++ {
		for y := 0; y < ny; y++ {
			for x := 0; x < nx; x++ {
				binary.LittleEndian.PutUint16(vox[((z*ny+y)*nx+x)*2:], uint16(x+3*y+7*z))
			}
		}
	}
	hdr := "NRRD0004\ntype: uint16\ndimension: 3\nspace: left-posterior-superior\nsizes: 70 50 40\n" +
		"space directions: (0.6,0.1,0) (-0.1,0.6,0) (0,0,-1.25)\nkinds: domain domain domain\nendian: little\nencoding: raw\n" +
		"space origin: (-12.5,30.25,7)\n\n"
	if err := os.WriteFile(path, append([]byte(hdr), vox...), 0o644); err != nil {
		tb.Fatal(err)
	}
	return vox
}

// TestRegionGet_roundTrip imports NIfTI files written by nibabel and a NRRD
// file in LPS, reads each whole volume back with `ldm region get` as NIfTI
// and as NRRD: the same voxels and the same affine (exactly, but for a
// NRRD file's written as NIfTI, which holds float32). A box of a coarser
// level carries that level's affine moved to the box.
func TestRegionGet_roundTrip(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	dir := t.TempDir()
	nrrd := filepath.Join(dir, "lps.nrrd")
	writeLPSNRRD(t, nrrd)
	files := map[string]string{
		"ras":           repoPath("volfile/testdata/nibabel/ras.nii"),
		"lps-gz":        repoPath("volfile/testdata/nibabel/lps.nii.gz"),
		"oblique-sform": repoPath("volfile/testdata/nibabel/oblique_sform.nii"),
		"oblique-qform": repoPath("volfile/testdata/nibabel/oblique_qform.nii"),
		"nrrd-lps":      nrrd,
	}
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if out, errOut, err := ldmCmd(t, "", "import", path, "--name", name, "-q", "--server", base); err != nil {
				t.Fatalf("import: %v\n%s%s", err, out, errOut)
			}
			src, err := volfile.Open(path, volfile.Options{})
			if err != nil {
				t.Fatal(err)
			}
			vox, err := src.ReadVoxels()
			if err != nil {
				t.Fatal(err)
			}
			for _, ext := range []string{".nii", ".nrrd"} {
				out := filepath.Join(t.TempDir(), name+ext)
				if _, errOut, err := ldmCmd(t, "", "region", "get", name, "-o", out, "-q", "--server", base); err != nil {
					t.Fatalf("region get: %v\n%s", err, errOut)
				}
				got, err := volfile.Open(out, volfile.Options{})
				if err != nil {
					t.Fatal(err)
				}
				gotVox, err := got.ReadVoxels()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(gotVox, vox) {
					t.Fatalf("%s: the voxels differ from the imported file's", ext)
				}
				want, wantSpace := src.Transform, src.Space
				if ext == ".nii" && wantSpace == storage.SpaceLPS {
					for c := 0; c < 4; c++ {
						want[c], want[4+c] = -want[c], -want[4+c]
					}
					wantSpace = storage.SpaceRAS
				}
				// NIfTI keeps float32: a NRRD file's float64 affine written as
				// NIfTI comes back rounded to float32; every other way is exact.
				if ext == ".nii" && src.Format == volfile.FormatNRRD {
					for i, v := range want {
						want[i] = float64(float32(v))
					}
				}
				if got.Transform != want || got.Space != wantSpace || got.Shape != src.Shape {
					t.Fatalf("%s: %v %v %q, want %v %v %q", ext, got.Shape, got.Transform, got.Space, src.Shape, want, wantSpace)
				}
			}
		})
	}

	t.Run("box_of_a_coarser_level", func(t *testing.T) {
		t.Parallel()
		name := "nrrd-lps-2"
		if out, errOut, err := ldmCmd(t, "", "import", nrrd, "--name", name, "--lods", "2", "-q", "--server", base); err != nil {
			t.Fatalf("import: %v\n%s%s", err, out, errOut)
		}
		out := filepath.Join(t.TempDir(), "box.nrrd")
		stdout, errOut, err := ldmCmd(t, "", "region", "get", name, "--lod", "1", "--box", "3:20,5:25,2:100", "-o", out, "-q", "--server", base)
		if err != nil {
			t.Fatalf("region get: %v\n%s", err, errOut)
		}
		if !strings.Contains(stdout, "17x20x18 uint16") || !strings.Contains(stdout, "box 3:20,5:25,2:20") {
			t.Fatalf("region get printed %q", stdout)
		}
		src, err := volfile.Open(nrrd, volfile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := volfile.Open(out, volfile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		meta := storage.VolumeMeta{Shape: src.Shape, Transform: src.Transform[:], Space: src.Space}
		want := client.RegionAffine(meta, 1, [3]uint32{3, 5, 2})
		if got.Transform != want || got.Space != storage.SpaceLPS {
			t.Fatalf("transform %v %q, want %v LPS", got.Transform, got.Space, want)
		}
		// The world position of the box's voxel (0,0,0) is that of level
		// 1's voxel (3,5,2): LOD 0 voxels 6..7, 10..11, 4..5, whose centre
		// is LOD 0 voxel (6.5, 10.5, 4.5).
		w := got.Transform.Apply([3]float64{0, 0, 0})
		w0 := src.Transform.Apply([3]float64{6.5, 10.5, 4.5})
		for i := range w {
			if d := w[i] - w0[i]; d > 1e-9 || d < -1e-9 {
				t.Fatalf("box origin %v, want %v", w, w0)
			}
		}
	})

	t.Run("bad_input", func(t *testing.T) {
		t.Parallel()
		if out, errOut, err := ldmCmd(t, "", "import", nrrd, "--name", "bad-in", "-q", "--server", base); err != nil {
			t.Fatalf("import: %v\n%s%s", err, out, errOut)
		}
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"region", "get", "bad-in", "-o", filepath.Join(dir, "x.nii.gz")}, "name the file .nii"},
			{[]string{"region", "get", "bad-in"}, "-o FILE"},
			{[]string{"region", "get", "bad-in", "--box", "0:1,0:1", "-o", filepath.Join(dir, "x.nii")}, "x0:x1,y0:y1,z0:z1"},
			{[]string{"region", "get", "nope", "-o", filepath.Join(dir, "x.nii")}, "not found"},
			{[]string{"region", "get", "bad-in", "--lod", "9", "-o", filepath.Join(dir, "x.nii")}, "levels"},
		} {
			_, errOut, err := ldmCmd(t, "", append(c.args, "--server", base)...)
			if err == nil || !strings.Contains(err.Error()+errOut, c.want) {
				t.Errorf("ldm %v: %v %s, want an error mentioning %q", c.args, err, errOut, c.want)
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("files left behind: %v", fmt.Sprint(ents))
		}
	})
}

func FuzzParseBox(f *testing.F) {
	for _, s := range []string{"0:128,0:128,40:60", "1:2,3:4,5:6", " 0 : 1 , 0:1,0:1", "0:4294967295,0:1,0:1", "5:5,0:1,0:1", "0:1,0:1", ":,:,:", "-1:2,0:1,0:1", "0:1,0:1,0:1,0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseBox(s)
		if err != nil {
			if r != nil {
				t.Fatal("a region with an error")
			}
			return
		}
		if r.GetMin().GetX() >= r.GetMax().GetX() || r.GetMin().GetY() >= r.GetMax().GetY() || r.GetMin().GetZ() >= r.GetMax().GetZ() {
			t.Fatalf("%q parsed to an empty box %v", s, r)
		}
		back := fmt.Sprintf("%d:%d,%d:%d,%d:%d", r.GetMin().GetX(), r.GetMax().GetX(), r.GetMin().GetY(), r.GetMax().GetY(), r.GetMin().GetZ(), r.GetMax().GetZ())
		if r2, err := parseBox(back); err != nil || r2.String() != r.String() {
			t.Fatalf("%q -> %q does not parse back the same: %v", s, back, err)
		}
	})
}
