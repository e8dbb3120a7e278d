package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/volfile"
)

// TestClient_ImportFile_transform imports NIfTI files written by nibabel
// (RAS, LPS, oblique by qform and by sform) and NRRD files written here (LPS,
// RAS, oblique), and checks that GetVolume returns the file's affine and
// space exactly.
func TestClient_ImportFile_transform(t *testing.T) {
	t.Parallel()
	s := startSingle(t, 0)
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Seeds: []string{s.base}, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	type file struct {
		path  string
		space ldmv1.Space
		want  []float64 // the affine the file states
	}
	var files []file
	raw, err := os.ReadFile("../volfile/testdata/nibabel/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var exp struct {
		Files map[string]struct {
			Affine    []float64 `json:"affine"`
			SformCode int       `json:"sform_code"`
		} `json:"files"`
	}
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatal(err)
	}
	for name, e := range exp.Files {
		if e.SformCode > 0 { // an sform is stated in the file; a qform is computed
			files = append(files, file{filepath.Join("../volfile/testdata/nibabel", name), ldmv1.Space_SPACE_RAS, e.Affine})
		}
	}
	dir := t.TempDir()
	nrrd := func(name, space, dirs, origin string) string {
		p := filepath.Join(dir, name)
		hdr := "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 3 2\nencoding: raw\nspace: " + space +
			"\nspace directions: " + dirs + "\nspace origin: " + origin + "\n\n"
		if err := os.WriteFile(p, append([]byte(hdr), make([]byte, 24)...), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	files = append(files,
		file{nrrd("lps.nrrd", "left-posterior-superior", "(0.5,0,0) (0,0.5,0) (0,0,1.25)", "(-120.5,-99.75,33.125)"), ldmv1.Space_SPACE_LPS,
			[]float64{0.5, 0, 0, -120.5, 0, 0.5, 0, -99.75, 0, 0, 1.25, 33.125, 0, 0, 0, 1}},
		file{nrrd("ras.nrrd", "right-anterior-superior", "(-1,0,0) (0,-1,0) (0,0,2)", "(10,20,30)"), ldmv1.Space_SPACE_RAS,
			[]float64{-1, 0, 0, 10, 0, -1, 0, 20, 0, 0, 2, 30, 0, 0, 0, 1}},
		file{nrrd("oblique.nrrd", "LPS", "(0.8660254037844386,0.5,0) (-0.5,0.8660254037844386,0) (0,0.1,3)", "(1.0000001,2,3)"), ldmv1.Space_SPACE_LPS,
			[]float64{0.8660254037844386, -0.5, 0, 1.0000001, 0.5, 0.8660254037844386, 0.1, 2, 0, 0, 3, 3, 0, 0, 0, 1}},
	)
	for i, f := range files {
		name := "t" + string(rune('a'+i))
		if _, err := c.ImportFile(ctx, f.path, &ldmv1.Volume{Name: name}, client.ImportOptions{}); err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		res, err := c.GetVolume(ctx, &ldmv1.GetVolumeRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		v := res.GetVolume()
		if v.GetSpace() != f.space || len(v.GetTransform()) != 16 {
			t.Fatalf("%s: space %v transform %v, want %v", f.path, v.GetSpace(), v.GetTransform(), f.space)
		}
		for k, w := range f.want {
			if v.GetTransform()[k] != w {
				t.Fatalf("%s: transform[%d] = %v, want %v exactly; transform %v", f.path, k, v.GetTransform()[k], w, v.GetTransform())
			}
		}
	}

	t.Run("spacing_from_base_keeps_directions", func(t *testing.T) {
		im, err := volfile.Open(files[len(files)-1].path, volfile.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v := client.VolumeFromFile(im, &ldmv1.Volume{Name: "x", Spacing: []float64{2, 2, 2}})
		tr := v.GetTransform()
		if math.Abs(tr[0]-2*0.8660254037844386) > 1e-12 || math.Abs(tr[4]-1) > 1e-12 || tr[3] != 1.0000001 {
			t.Fatalf("transform %v, want the file's directions scaled to spacing 2", tr)
		}
	})

	t.Run("degenerate_header_refused", func(t *testing.T) {
		p := nrrd("zero.nrrd", "LPS", "(1,0,0) (0,0,0) (0,0,1)", "(0,0,0)")
		_, err := c.ImportFile(ctx, p, &ldmv1.Volume{Name: "zero"}, client.ImportOptions{})
		var fe *volfile.FieldError
		if !errors.As(err, &fe) || fe.Field != "space directions[1]" {
			t.Fatalf("ImportFile = %v, want an error naming space directions[1]", err)
		}
		if _, err := c.GetVolume(ctx, &ldmv1.GetVolumeRequest{Name: "zero"}); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetVolume(zero) = %v, want NotFound", err)
		}
	})

	t.Run("create_refuses_bad_transform", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			tr   []float64
			want string
		}{
			{"short", []float64{1, 0, 0}, "16"},
			{"zero_column", []float64{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, "column 1"},
			{"last_row", []float64{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1}, "last row"},
		} {
			_, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{Name: "bad-" + strings.ReplaceAll(tc.name, "_", "-"),
				Shape: &ldmv1.Shape{X: 2, Y: 2, Z: 2}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, Transform: tc.tr, Space: ldmv1.Space_SPACE_RAS}})
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "transform") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: CreateVolume = %v, want InvalidArgument naming the transform (%s)", tc.name, err, tc.want)
			}
		}
	})
}
