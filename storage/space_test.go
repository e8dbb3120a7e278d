package storage

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

// legacyMeta builds a meta file the way stores wrote it before volumes had a
// transform: the same header around a JSON payload without transform and
// space.
func legacyMeta(payload string) []byte {
	b := make([]byte, metaHeaderLen+len(payload))
	copy(b, magicMeta[:])
	le.PutUint32(b[4:], formatVersion)
	le.PutUint32(b[8:], uint32(len(payload)))
	le.PutUint32(b[12:], Checksum([]byte(payload)))
	copy(b[metaHeaderLen:], payload)
	return b
}

func TestDecodeMeta_legacyReadsAsDiagonal(t *testing.T) {
	t.Parallel()
	b := legacyMeta(`{"name":"old","shape":[10,20,30],"data_type":2,"brick_shape":[8,8,8],"lod_count":3,"spacing":[0.5,0.75,2],"created_at":"2026-01-02T03:04:05Z","index":0}`)
	m, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Transform != nil || m.Space != SpaceUnspecified {
		t.Fatalf("legacy meta: transform %v space %q, want none", m.Transform, m.Space)
	}
	if got, want := m.Affine(), DiagonalAffine([3]float64{0.5, 0.75, 2}); got != want {
		t.Fatalf("Affine = %v, want %v", got, want)
	}
	// Without spacing either: identity.
	m, err = decodeMeta(legacyMeta(`{"name":"old","shape":[1,1,1],"data_type":1,"brick_shape":[8,8,8],"lod_count":1,"created_at":"2026-01-02T03:04:05Z","index":0}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Affine(), DiagonalAffine([3]float64{1, 1, 1}); got != want {
		t.Fatalf("Affine = %v, want identity", got)
	}
	// A meta without a transform is written exactly as before.
	enc, err := encodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if p := string(enc[metaHeaderLen:]); strings.Contains(p, "transform") || strings.Contains(p, "space") {
		t.Fatalf("meta without a transform encodes %s", p)
	}
}

func TestStore_transformPersists(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	// An oblique affine whose values have no short decimal form.
	tr := []float64{
		-0.9 * math.Cos(0.3), 0.9 * math.Sin(0.3), 0, 101.123456789,
		-0.9 * math.Sin(0.3), -0.9 * math.Cos(0.3), 0, -7.000000001,
		0, 0, 1.1, -33.3,
		0, 0, 0, 1,
	}
	ctx := context.Background()
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "lps", Shape: Shape{X: 4, Y: 4, Z: 4}, DataType: Uint8, Transform: tr, Space: SpaceLPS}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVolume(ctx, VolumeMeta{Name: "plain", Shape: Shape{X: 4, Y: 4, Z: 4}, DataType: Uint8, Spacing: []float64{2, 3, 4}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Volume("lps")
	if err != nil {
		t.Fatal(err)
	}
	if v.Space != SpaceLPS || Affine(v.Transform) != Affine(tr) {
		t.Fatalf("after reopen: space %q transform %v, want LPS %v exactly", v.Space, v.Transform, tr)
	}
	if math.Abs(v.Spacing[0]-0.9) > 1e-12 || math.Abs(v.Spacing[1]-0.9) > 1e-12 || v.Spacing[2] != 1.1 {
		t.Fatalf("spacing %v, want the column lengths", v.Spacing)
	}
	p, err := s.Volume("plain")
	if err != nil {
		t.Fatal(err)
	}
	if p.Transform != nil || p.Affine() != DiagonalAffine([3]float64{2, 3, 4}) {
		t.Fatalf("plain: transform %v affine %v", p.Transform, p.Affine())
	}
}

func TestVolumeMeta_Normalize_transform(t *testing.T) {
	t.Parallel()
	base := func() VolumeMeta {
		return VolumeMeta{Name: "v", Shape: Shape{X: 2, Y: 2, Z: 2}, DataType: Uint8}
	}
	id := []float64{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}
	with := func(i int, v float64) []float64 {
		c := append([]float64(nil), id...)
		c[i] = v
		return c
	}
	for _, tc := range []struct {
		name      string
		transform []float64
		spacing   []float64
		space     Space
		want      string // substring of the error; "" means valid
	}{
		{"identity", id, nil, SpaceRAS, ""},
		{"spacing_matches", with(5, -2), []float64{1, 2, 1}, SpaceLPS, ""},
		{"spacing_mismatch", with(5, -2), []float64{1, 1, 1}, SpaceLPS, "spacing[1]"},
		{"wrong_length", id[:12], nil, SpaceRAS, "16"},
		{"nan", with(3, math.NaN()), nil, SpaceRAS, "transform[3]"},
		{"inf", with(10, math.Inf(1)), nil, SpaceRAS, "transform[10]"},
		{"last_row", with(15, 2), nil, SpaceRAS, "last row"},
		{"zero_column", with(5, 0), nil, SpaceRAS, "column 1"},
		{"parallel_axes", []float64{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}, nil, SpaceRAS, "parallel"},
		{"bad_space", id, nil, Space("RAI"), "space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := base()
			m.Transform, m.Spacing, m.Space = tc.transform, tc.spacing, tc.space
			err := m.Normalize()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(m.Spacing) != 3 {
					t.Fatalf("spacing %v not filled from the transform", m.Spacing)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Normalize = %v, want ErrInvalidArgument naming %q", err, tc.want)
			}
		})
	}
}

func TestVolumeMeta_LODAffine(t *testing.T) {
	t.Parallel()
	m := VolumeMeta{Transform: []float64{0, 0, -2, 10, 0.5, 0, 0, -20, 0, 1, 0, 30, 0, 0, 0, 1}}
	for lod := uint32(0); lod < 5; lod++ {
		a := m.LODAffine(lod)
		f := float64(uint32(1) << lod)
		// Voxel i of level lod is the mean of LOD 0 voxels f*i .. f*i+f-1:
		// its centre is their mean position.
		for _, p := range [][3]float64{{0, 0, 0}, {1, 2, 3}, {7, 0, 5}} {
			var c [3]float64
			for k := range c {
				c[k] = f*p[k] + (f-1)/2
			}
			got, want := a.Apply(p), m.Affine().Apply(c)
			for k := range got {
				if math.Abs(got[k]-want[k]) > 1e-12 {
					t.Fatalf("lod %d voxel %v: world %v, want %v", lod, p, got, want)
				}
			}
		}
	}
}
