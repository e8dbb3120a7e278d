package volfile

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// The files in testdata/nibabel were written by nibabel (see make.py there);
// expected.json holds the affine nibabel reads back from each.
func TestOpen_nibabelTransforms(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/nibabel/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Files map[string]struct {
			Affine    []float64 `json:"affine"`
			SformCode int       `json:"sform_code"`
			QformCode int       `json:"qform_code"`
			Marker    [3]int    `json:"marker"`
			Shape     [3]int    `json:"shape"`
		} `json:"files"`
	}
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	if len(exp.Files) < 4 {
		t.Fatalf("expected.json lists %d files", len(exp.Files))
	}
	for name, want := range exp.Files {
		t.Run(strings.ReplaceAll(name, ".", "_"), func(t *testing.T) {
			t.Parallel()
			im, vox := mustRead(t, filepath.Join("testdata/nibabel", name), Options{})
			if im.Space != storage.SpaceRAS {
				t.Fatalf("space %q, want RAS", im.Space)
			}
			// An sform is float32 in the file: the transform holds those
			// values exactly. A qform's matrix is computed from its
			// quaternion, by nibabel and here in float64.
			tol := 0.0
			if want.SformCode == 0 {
				tol = 1e-12
			}
			for i, w := range want.Affine {
				if math.Abs(im.Transform[i]-w) > tol {
					t.Fatalf("transform[%d] = %v, want %v (nibabel); transform %v", i, im.Transform[i], w, im.Transform)
				}
			}
			for c := 0; c < 3; c++ {
				if im.Spacing[c] != im.Transform.ColumnNorm(c) {
					t.Fatalf("spacing %v is not the column lengths of %v", im.Spacing, im.Transform)
				}
			}
			m := want.Marker
			if got := vox[m[0]+want.Shape[0]*(m[1]+want.Shape[1]*m[2])]; got != 200 {
				t.Fatalf("marker voxel %v = %d, want 200", m, got)
			}
		})
	}
}

// The fuzz seed corpus holds the NIfTI and NRRD headers and files the other
// tests read; each opens with a usable transform, and the LPS NRRD seeds
// carry theirs.
func TestParse_corpusTransforms(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"FuzzParseNRRDHeader", "FuzzParseNIfTI1Header", "FuzzOpen"} {
		ents, err := os.ReadDir(filepath.Join("testdata/fuzz", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			raw, err := os.ReadFile(filepath.Join("testdata/fuzz", dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(string(raw), "\n", 2)
			lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")")
			data, err := strconv.Unquote(lit)
			if err != nil {
				t.Fatalf("%s/%s: %v", dir, e.Name(), err)
			}
			var h Header
			switch dir {
			case "FuzzParseNRRDHeader":
				h, _, err = ParseNRRDHeader(bufio.NewReader(strings.NewReader(data)))
			case "FuzzParseNIfTI1Header":
				h, err = ParseNIfTI1Header([]byte(data))
			default: // whole files, opened as ldm import opens them
				p := filepath.Join(t.TempDir(), e.Name())
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
				var im *Image
				if im, err = Open(p, Options{HasTimePoint: true}); err == nil {
					h = im.Header
				}
			}
			if err != nil {
				t.Fatalf("%s/%s: %v", dir, e.Name(), err)
			}
			if err := storage.CheckAffine("transform", h.Transform); err != nil {
				t.Fatalf("%s/%s: %v", dir, e.Name(), err)
			}
			for c := 0; c < 3; c++ {
				if h.Spacing[c] != h.Transform.ColumnNorm(c) {
					t.Fatalf("%s/%s: spacing %v, transform %v", dir, e.Name(), h.Spacing, h.Transform)
				}
			}
			if strings.Contains(data, "space: left-posterior-superior") && h.Space != storage.SpaceLPS {
				t.Fatalf("%s/%s: space %q, want LPS", dir, e.Name(), h.Space)
			}
			if strings.Contains(data, "space directions: (1,0,0) (0,2,0) (0,0,3)") && h.Transform != storage.DiagonalAffine([3]float64{1, 2, 3}) {
				t.Fatalf("%s/%s: transform %v, want diag(1,2,3)", dir, e.Name(), h.Transform)
			}
		}
	}
}

// niftiWith returns a little-endian 4x3x2 uint8 NIfTI-1 header with set
// applied to it.
func niftiWith(set func(b []byte)) []byte {
	b := niftiHeader(binary.LittleEndian, 2, 8, []int16{4, 3, 2}, [3]float32{0.5, 0.75, 2}, "n+1")
	set(b)
	return b
}

func putF32(b []byte, off int, v float32) {
	binary.LittleEndian.PutUint32(b[off:], math.Float32bits(v))
}
func putI16(b []byte, off int, v int16) { binary.LittleEndian.PutUint16(b[off:], uint16(v)) }

func setSform(b []byte, rows [12]float32) {
	putI16(b, offSformCode, 2)
	for i, v := range rows {
		putF32(b, offSrowX+4*i, v)
	}
}

func TestParseNIfTI1Header_transform(t *testing.T) {
	t.Parallel()
	sform := [12]float32{-0.4, 0.1, 0, 90.3, 0.1, 0.4, 0, -126.7, 0, 0, 2, -72.1}
	t.Run("sform_exact", func(t *testing.T) {
		h, err := ParseNIfTI1Header(niftiWith(func(b []byte) {
			setSform(b, sform)
			putI16(b, offQformCode, 1) // the sform wins
			putF32(b, offQuaternB+8, 1)
		}))
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range sform {
			if h.Transform[i] != float64(v) {
				t.Fatalf("transform[%d] = %v, want the file's %v exactly", i, h.Transform[i], float64(v))
			}
		}
		if h.Space != storage.SpaceRAS || h.Spacing[2] != 2 {
			t.Fatalf("space %q spacing %v", h.Space, h.Spacing)
		}
	})
	t.Run("qform_180_about_z_qfac_minus1", func(t *testing.T) {
		h, err := ParseNIfTI1Header(niftiWith(func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offQuaternB+8, 1) // d = 1: 180 degrees about z
			putF32(b, offQoffsetX, 10)
			putF32(b, offQoffsetX+4, -20)
			putF32(b, offQoffsetX+8, 30)
			putF32(b, offPixdim, -1)
		}))
		if err != nil {
			t.Fatal(err)
		}
		want := storage.Affine{-0.5, 0, 0, 10, 0, -0.75, 0, -20, 0, 0, -2, 30, 0, 0, 0, 1}
		if h.Transform != want || h.Space != storage.SpaceRAS {
			t.Fatalf("transform %v space %q, want %v RAS", h.Transform, h.Space, want)
		}
	})
	t.Run("qfac_other_than_minus1_is_1", func(t *testing.T) {
		h, err := ParseNIfTI1Header(niftiWith(func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offPixdim, 0)
		}))
		if err != nil {
			t.Fatal(err)
		}
		if want := storage.DiagonalAffine([3]float64{0.5, 0.75, 2}); h.Transform != want {
			t.Fatalf("transform %v, want %v", h.Transform, want)
		}
	})
	t.Run("no_codes_pixdim_only", func(t *testing.T) {
		h, err := ParseNIfTI1Header(niftiWith(func(b []byte) {}))
		if err != nil {
			t.Fatal(err)
		}
		if h.Space != storage.SpaceUnspecified || h.Transform != storage.DiagonalAffine([3]float64{0.5, 0.75, 2}) {
			t.Fatalf("space %q transform %v", h.Space, h.Transform)
		}
	})
	for _, tc := range []struct {
		name, field string
		set         func(b []byte)
	}{
		{"sform_nan", "srow_y[2]", func(b []byte) {
			s := sform
			s[6] = float32(math.NaN())
			setSform(b, s)
		}},
		{"sform_inf_offset", "srow_z[3]", func(b []byte) {
			s := sform
			s[11] = float32(math.Inf(-1))
			setSform(b, s)
		}},
		{"sform_zero_column", "srow_x[2], srow_y[2], srow_z[2]", func(b []byte) {
			s := sform
			s[2], s[6], s[10] = 0, 0, 0
			setSform(b, s)
		}},
		{"sform_singular", "srow_x, srow_y, srow_z", func(b []byte) {
			setSform(b, [12]float32{1, 2, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0})
		}},
		{"quaternion_not_unit", "quatern_b, quatern_c, quatern_d", func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offQuaternB, 0.8)
			putF32(b, offQuaternB+4, 0.7)
		}},
		{"quaternion_nan", "quatern_c", func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offQuaternB+4, float32(math.NaN()))
		}},
		{"qoffset_inf", "qoffset_y", func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offQoffsetX+4, float32(math.Inf(1)))
		}},
		{"qform_pixdim_nan", "pixdim[2]", func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offPixdim+8, float32(math.NaN()))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseNIfTI1Header(niftiWith(tc.set))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want a FieldError naming %q", err, tc.field)
			}
		})
	}
	t.Run("quaternion_rounding_tolerated", func(t *testing.T) {
		// b^2 slightly above 1 from float32 rounding: a 180 degree turn.
		h, err := ParseNIfTI1Header(niftiWith(func(b []byte) {
			putI16(b, offQformCode, 1)
			putF32(b, offQuaternB, math.Nextafter32(1, 2))
		}))
		if err != nil {
			t.Fatal(err)
		}
		if want := (storage.Affine{0.5, 0, 0, 0, 0, -0.75, 0, 0, 0, 0, -2, 0, 0, 0, 0, 1}); h.Transform != want {
			t.Fatalf("transform %v, want %v", h.Transform, want)
		}
	})
}

func nrrdHeader(extra string) string {
	return "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n" + extra + "\n"
}

func TestParseNRRDHeader_space(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, extra string
		space       storage.Space
		want        storage.Affine
	}{
		{"lps", "space: left-posterior-superior\nspace directions: (0,-0.5,0) (0.75,0,0) (0,0,2)\nspace origin: (10.5,-3,7)\n",
			storage.SpaceLPS, storage.Affine{0, 0.75, 0, 10.5, -0.5, 0, 0, -3, 0, 0, 2, 7, 0, 0, 0, 1}},
		{"ras_short_name", "space: RAS\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (1,2,3)\n",
			storage.SpaceRAS, storage.Affine{1, 0, 0, 1, 0, 1, 0, 2, 0, 0, 1, 3, 0, 0, 0, 1}},
		{"las_to_ras", "space: left-anterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (5,6,7)\n",
			storage.SpaceRAS, storage.Affine{-1, 0, 0, -5, 0, 1, 0, 6, 0, 0, 1, 7, 0, 0, 0, 1}},
		{"scanner", "space: scanner-xyz\nspace directions: (2,0,0) (0,2,0) (0,0,2)\n",
			storage.SpaceScanner, storage.DiagonalAffine([3]float64{2, 2, 2})},
		{"space_dimension_only", "space dimension: 3\nspace directions: (2,0,0) (0,2,0) (0,0,2)\n",
			storage.SpaceScanner, storage.DiagonalAffine([3]float64{2, 2, 2})},
		{"no_space", "spacings: 2 3 4\n", storage.SpaceUnspecified, storage.DiagonalAffine([3]float64{2, 3, 4})},
		{"units_mm", "space: RAS\nspace units: \"mm\" \"mm\" \"mm\"\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n",
			storage.SpaceRAS, storage.DiagonalAffine([3]float64{1, 1, 1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, _, err := ParseNRRDHeader(bufio.NewReader(strings.NewReader(nrrdHeader(tc.extra))))
			if err != nil {
				t.Fatal(err)
			}
			if h.Space != tc.space || h.Transform != tc.want {
				t.Fatalf("space %q transform %v, want %q %v", h.Space, h.Transform, tc.space, tc.want)
			}
			for c := 0; c < 3; c++ {
				if h.Spacing[c] != h.Transform.ColumnNorm(c) {
					t.Fatalf("spacing %v", h.Spacing)
				}
			}
		})
	}
	for _, tc := range []struct {
		name, extra, field string
	}{
		{"zero_vector", "space: RAS\nspace directions: (1,0,0) (0,0,0) (0,0,1)\n", "space directions[1]"},
		{"none_on_spatial_axis", "space: LPS\nspace directions: (1,0,0) (0,1,0) none\n", "space directions[2]"},
		{"nan_vector", "space: LPS\nspace directions: (1,0,0) (0,nan,0) (0,0,1)\n", "space directions[1]"},
		{"inf_vector", "space: LPS\nspace directions: (inf,0,0) (0,1,0) (0,0,1)\n", "space directions[0]"},
		{"two_components", "space: LPS\nspace directions: (1,0) (0,1,0) (0,0,1)\n", "space directions[0]"},
		{"parallel", "space: LPS\nspace directions: (1,0,0) (2,0,0) (0,0,1)\n", "space directions"},
		{"origin_nan", "space: LPS\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (nan,0,0)\n", "space origin"},
		{"origin_short", "space: LPS\nspace origin: (1,2)\n", "space origin"},
		{"unknown_space", "space: right-anterior-superior-time\n", "space"},
		{"units_cm", "space: RAS\nspace units: \"cm\" \"cm\" \"cm\"\n", "space units"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := ParseNRRDHeader(bufio.NewReader(strings.NewReader(nrrdHeader(tc.extra))))
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("err = %v, want a FieldError naming %q", err, tc.field)
			}
		})
	}
}

func TestOrientation_Affine(t *testing.T) {
	t.Parallel()
	sp, o := [3]float64{0.5, 2, 3}, [3]float64{1, 2, 3}
	for _, tc := range []struct {
		code  string
		space storage.Space
		want  storage.Affine
		out   storage.Space
	}{
		{"", "", storage.Affine{0.5, 0, 0, 1, 0, 2, 0, 2, 0, 0, 3, 3, 0, 0, 0, 1}, storage.SpaceUnspecified},
		{"RAS", "", storage.Affine{0.5, 0, 0, 1, 0, 2, 0, 2, 0, 0, 3, 3, 0, 0, 0, 1}, storage.SpaceRAS},
		{"lps", storage.SpaceRAS, storage.Affine{-0.5, 0, 0, 1, 0, -2, 0, 2, 0, 0, 3, 3, 0, 0, 0, 1}, storage.SpaceRAS},
		{"LPS", storage.SpaceLPS, storage.Affine{0.5, 0, 0, 1, 0, 2, 0, 2, 0, 0, 3, 3, 0, 0, 0, 1}, storage.SpaceLPS},
		{"PIR", storage.SpaceRAS, storage.Affine{0, 0, 3, 1, -0.5, 0, 0, 2, 0, -2, 0, 3, 0, 0, 0, 1}, storage.SpaceRAS},
	} {
		a, s, err := OrientationAffine(tc.code, tc.space, sp, o)
		if err != nil || a != tc.want || s != tc.out {
			t.Fatalf("OrientationAffine(%q, %q) = %v %q %v, want %v %q", tc.code, tc.space, a, s, err, tc.want, tc.out)
		}
	}
	for _, bad := range []struct {
		code  string
		space storage.Space
	}{{"RA", ""}, {"RRS", ""}, {"RAX", ""}, {"RAS", storage.SpaceScanner}, {"", storage.SpaceLPS}} {
		if _, _, err := OrientationAffine(bad.code, bad.space, sp, o); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Fatalf("OrientationAffine(%q, %q) = %v, want ErrInvalidArgument", bad.code, bad.space, err)
		}
	}
}
