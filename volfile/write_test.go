package volfile

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// writeVolume writes voxels and h to path with a Writer, in two halves.
func writeVolume(tb testing.TB, path string, h Header, vox []byte) {
	tb.Helper()
	w, err := Create(path, h)
	if err != nil {
		tb.Fatalf("Create %s: %v", filepath.Base(path), err)
	}
	half := len(vox) / 2
	if _, err := w.WriteAt(vox[half:], int64(half)); err != nil {
		tb.Fatal(err)
	}
	if _, err := w.WriteAt(vox[:half], 0); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
}

// asRAS returns a's RAS form: an LPS affine has its x and y rows negated.
func asRAS(a storage.Affine, s storage.Space) storage.Affine {
	if s == storage.SpaceLPS {
		for c := 0; c < 4; c++ {
			a[c], a[4+c] = -a[c], -a[4+c]
		}
	}
	return a
}

// roundTripFiles are the files the round trip starts from: nibabel's
// (RAS, LPS, oblique sform and qform) and the whole files of the fuzz
// corpus (every voxel type, both byte orders, gzip, NRRD spaces).
func roundTripFiles(tb testing.TB) map[string]string {
	tb.Helper()
	files := map[string]string{}
	ents, err := os.ReadDir("testdata/nibabel")
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".nii") || strings.HasSuffix(e.Name(), ".nii.gz") {
			files["nibabel_"+e.Name()] = filepath.Join("testdata/nibabel", e.Name())
		}
	}
	dir := tb.TempDir()
	ents, err = os.ReadDir("testdata/fuzz/FuzzOpen")
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		raw, err := os.ReadFile(filepath.Join("testdata/fuzz/FuzzOpen", e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.SplitN(string(raw), "\n", 2)
		data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")"))
		if err != nil {
			tb.Fatal(err)
		}
		p := filepath.Join(dir, e.Name())
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			tb.Fatal(err)
		}
		files[e.Name()] = p
	}
	return files
}

// TestCreate_roundTrip opens real files, writes each as NIfTI-1 and as NRRD
// and reads them back: the same voxels, and the same affine (exactly; a
// NIfTI file holds it in RAS, so an LPS affine comes back with x and y
// negated) in the same space.
func TestCreate_roundTrip(t *testing.T) {
	t.Parallel()
	for name, path := range roundTripFiles(t) {
		t.Run(strings.ReplaceAll(name, ".", "_"), func(t *testing.T) {
			t.Parallel()
			src, vox := mustRead(t, path, Options{HasTimePoint: true, TimePoint: 0})
			for _, ext := range []string{".nii", ".nrrd"} {
				out := filepath.Join(t.TempDir(), "out"+ext)
				writeVolume(t, out, src.Header, vox)
				got, gotVox := mustRead(t, out, Options{})
				if !bytes.Equal(gotVox, vox) {
					t.Fatalf("%s: voxels differ", ext)
				}
				if got.Shape != src.Shape || got.DataType != src.DataType {
					t.Fatalf("%s: %v %v, want %v %v", ext, got.Shape, got.DataType, src.Shape, src.DataType)
				}
				wantA, wantS := src.Transform, src.Space
				if ext == ".nii" && wantS == storage.SpaceLPS {
					wantA, wantS = asRAS(wantA, wantS), storage.SpaceRAS
				}
				if ext == ".nii" && wantS == storage.SpaceScanner {
					wantS = storage.SpaceRAS // NIfTI's world is RAS whatever the code
				}
				if got.Transform != wantA || got.Space != wantS {
					t.Fatalf("%s: transform %v %q, want %v %q", ext, got.Transform, got.Space, wantA, wantS)
				}
				if ext == ".nii" && (got.ScaleSlope != src.ScaleSlope || got.ScaleInter != src.ScaleInter) {
					t.Fatalf("scl_slope/inter %v %v, want %v %v", got.ScaleSlope, got.ScaleInter, src.ScaleSlope, src.ScaleInter)
				}
			}
		})
	}
}

// TestCreate_qformAndSform checks the two NIfTI forms of one written
// affine: both codes set, the sform holding the affine, the qform the
// same rotation, scaling and translation.
func TestCreate_qformAndSform(t *testing.T) {
	t.Parallel()
	// An oblique LPS affine with a flipped axis: 30 degrees about z, spacing
	// 0.5, 0.75, 2, z pointing down.
	c, s := math.Cos(math.Pi/6), math.Sin(math.Pi/6)
	a := storage.Affine{
		0.5 * c, -0.75 * s, 0, -10,
		0.5 * s, 0.75 * c, 0, 20,
		0, 0, -2, 30,
		0, 0, 0, 1,
	}
	h := Header{Shape: storage.Shape{X: 4, Y: 3, Z: 2}, DataType: storage.Int16, Transform: a, Space: storage.SpaceLPS}
	p := filepath.Join(t.TempDir(), "o.nii")
	writeVolume(t, p, h, make([]byte, 4*3*2*2))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sform, err := ParseNIfTI1Header(b[:niftiHeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	// Read once more with the sform's code cleared: the qform alone.
	b[offSformCode], b[offSformCode+1] = 0, 0
	qform, err := ParseNIfTI1Header(b[:niftiHeaderSize])
	if err != nil {
		t.Fatal(err)
	}
	want := asRAS(a, storage.SpaceLPS)
	for i := range want {
		if math.Abs(sform.Transform[i]-want[i]) > 1e-5 || math.Abs(qform.Transform[i]-want[i]) > 1e-5 {
			t.Fatalf("element %d: sform %v qform %v, want %v", i, sform.Transform[i], qform.Transform[i], want[i])
		}
	}
}

func TestCreate_refuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ok := Header{Shape: storage.Shape{X: 2, Y: 2, Z: 2}, DataType: storage.Uint8, Spacing: [3]float64{1, 1, 1}}
	for _, c := range []struct {
		name string
		file string
		h    Header
		want error
	}{
		{"compressed", "x.nii.gz", ok, ErrUnsupported},
		{"detached_header", "x.nhdr", ok, ErrUnsupported},
		{"degenerate_transform", "x.nrrd", Header{Shape: ok.Shape, DataType: storage.Uint8, Transform: storage.Affine{15: 1}}, storage.ErrInvalidArgument},
		{"nifti_too_wide", "x.nii", Header{Shape: storage.Shape{X: 40000, Y: 1, Z: 1}, DataType: storage.Uint8, Spacing: [3]float64{1, 1, 1}}, ErrUnsupported},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Create(filepath.Join(dir, c.file), c.h); !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
		})
	}
	w, err := Create(filepath.Join(dir, "a.nrrd"), ok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte{1, 2}, 7); err == nil {
		t.Fatal("a write past the voxel data succeeded")
	}
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}
