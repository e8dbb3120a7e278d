package service

import (
	"fmt"
	"math"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/storage"
)

// viewTransform is a volume's voxel-to-world transform in the terms the
// open formats have: a scale and a translation per axis and level.
//
// OME-NGFF 0.4/0.5 and Neuroglancer precomputed place an array with a
// scale and a translation per axis; they have no rotation and no
// anatomical space. When the volume's affine is a positive diagonal plus a
// translation (axis-aligned, no flip), the formats express it exactly.
// Otherwise (rotated, oblique, permuted or flipped axes) the views use the
// voxel grid scaled by the spacing with its origin at the centre of voxel
// (0, 0, 0) of level 0, and say so in their metadata ("go-ldm"), which
// also carries the full affine and the space.
type viewTransform struct {
	spacing [3]float64 // x, y, z: level 0 voxel size in mm
	origin  [3]float64 // x, y, z: world position (mm) of the centre of voxel (0,0,0) of level 0; zero unless exact
	exact   bool       // scale and translation express the affine fully
}

func transformOf(info storage.VolumeInfo) viewTransform {
	a := info.Affine()
	var t viewTransform
	t.exact = true
	for c := range 3 {
		t.spacing[c] = a.ColumnNorm(c)
		for r := range 3 {
			if r != c && a[4*r+c] != 0 {
				t.exact = false
			}
		}
		if a[4*c+c] <= 0 {
			t.exact = false
		}
	}
	if t.exact {
		t.origin = [3]float64{a[3], a[7], a[11]}
	}
	return t
}

// level returns the scale and translation (x, y, z, mm) of level lod:
// each level doubles the scale and moves the centre of voxel 0 by half a
// voxel of the finer level (storage.VolumeMeta.LODAffine).
func (t viewTransform) level(lod uint32) (scale, translation [3]float64) {
	f := math.Ldexp(1, int(lod))
	for i := range 3 {
		scale[i] = t.spacing[i] * f
		translation[i] = t.origin[i] + t.spacing[i]*(f-1)/2
	}
	return scale, translation
}

// viewAttrs is the "go-ldm" metadata of a view: what the volume's
// transform is and what of it the format does not express.
type viewAttrs struct {
	Volume     string    `json:"volume"`
	Generation uint64    `json:"generation"`
	DataType   string    `json:"dataType"`
	Space      string    `json:"space"`
	Transform  []float64 `json:"transform"`
	// TransformExpressed is "exact" when the format's scale and
	// translation place every voxel where the transform does, else
	// "spacing only".
	TransformExpressed string   `json:"transformExpressed"`
	NotExpressed       []string `json:"notExpressed"`
	Note               string   `json:"note,omitempty"`
}

func attrsOf(info storage.VolumeInfo, t viewTransform, format string) viewAttrs {
	a := info.Affine()
	at := viewAttrs{
		Volume:             info.Name,
		Generation:         apiconv.Generation(info),
		DataType:           info.DataType.String(),
		Space:              spaceName(info.Space),
		Transform:          a[:],
		TransformExpressed: "exact",
		NotExpressed:       []string{},
	}
	if !t.exact {
		at.TransformExpressed = "spacing only"
		at.NotExpressed = append(at.NotExpressed, fmt.Sprintf(
			"the rotation, axis order and flips of the voxel-to-world transform: %s has a scale and a translation per axis only, so its axes are the voxel axes scaled by the spacing with the origin at the centre of voxel (0, 0, 0) of level 0; the full transform (4x4, row-major, mm, voxel centres) is in transform", format))
	}
	switch info.Space {
	case storage.SpaceRAS, storage.SpaceLPS:
		at.NotExpressed = append(at.NotExpressed, fmt.Sprintf(
			"the anatomical space %s: %s axes have names and units but no patient direction (RAS: +x right, +y anterior, +z superior; LPS: +x left, +y posterior, +z superior)", info.Space, format))
	}
	return at
}

func spaceName(s storage.Space) string {
	if s == storage.SpaceUnspecified {
		return "unspecified"
	}
	return string(s)
}
