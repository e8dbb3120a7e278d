// Package omezarr describes a go-ldm volume as OME-Zarr: Zarr v2 arrays
// (one per level of detail) under a group with OME-NGFF 0.4 multiscales
// metadata, or the same as Zarr v3 with OME-NGFF 0.5 (GroupV3, ArrayV3).
// It builds the JSON documents only; `ldm export --format zarr` writes
// them beside the chunks, and the server's HTTP views (/zarr/, /zarr3/)
// serve them.
//
// The layout, for a volume with levels 0..n-1:
//
//	.zgroup         {"zarr_format": 2}
//	.zattrs         multiscales (axes z, y, x; one dataset per level) and
//	                "go-ldm" (the full transform, its space, notes)
//	L/.zarray       level L: shape and chunks in z, y, x order, the voxel
//	                type, the compressor (none for a raw volume,
//	                {"id": "zstd", "level": N} for a zstd one), fill value 0,
//	                "/" separator
//	L/KZ/KY/KX      chunk (KX, KY, KZ) of level L: brick (L, KX, KY, KZ) as
//	                stored (little-endian, x fastest, zero-padded at edges;
//	                one zstd frame with its content size for a zstd volume)
//
// Chunks are the bricks byte for byte, as stored: Zarr's zstd codec (v2
// compressor, v3 codecs "bytes" then "zstd") reads a zstd volume's frames. A brick never written has no chunk,
// which Zarr readers read as the fill value, as go-ldm does.
//
// Placement: each dataset has a scale and a translation (z, y, x). When
// the volume's transform is axis-aligned with positive axes (a diagonal
// 3x3 part), they are the level's affine (storage.VolumeMeta.LODAffine):
// scale 2^l times the spacing, translation the world position of the
// level's voxel (0,0,0), which the 2x2x2 mean puts half a finer voxel
// further at each level. OME-NGFF 0.4 has no rotation or flip: for any
// other transform the scale and translation place the grid in its own
// axes (origin at the centre of LOD 0 voxel 0), and "go-ldm"."transform"
// holds the affine, with a note saying so.
package omezarr

import (
	"fmt"
	"math"
	"strconv"

	"github.com/xcheng85/go-ldm/storage"
)

// Version is the OME-NGFF version of the Zarr v2 metadata.
const Version = "0.4"

// VersionV3 is the OME-NGFF version of the Zarr v3 metadata.
const VersionV3 = "0.5"

// DType returns the Zarr v2 dtype of a voxel type ("<u2" for uint16), and
// false for a type Zarr cannot name.
func DType(d storage.DataType) (string, bool) {
	switch d {
	case storage.Uint8:
		return "|u1", true
	case storage.Int16:
		return "<i2", true
	case storage.Uint16:
		return "<u2", true
	case storage.Uint32:
		return "<u4", true
	case storage.Float32:
		return "<f4", true
	}
	return "", false
}

// DTypeV3 returns the Zarr v3 data_type of a voxel type ("uint16"), and
// false for a type Zarr cannot name.
func DTypeV3(d storage.DataType) (string, bool) {
	switch d {
	case storage.Uint8:
		return "uint8", true
	case storage.Int16:
		return "int16", true
	case storage.Uint16:
		return "uint16", true
	case storage.Uint32:
		return "uint32", true
	case storage.Float32:
		return "float32", true
	}
	return "", false
}

// Group is the .zgroup document.
func Group() map[string]any { return map[string]any{"zarr_format": 2} }

// Array is the .zarray document of level lod. It fails for a level past
// the volume's levels or a voxel type Zarr cannot name.
func Array(m storage.VolumeMeta, lod uint32) (map[string]any, error) {
	if err := checkLevel(m, lod); err != nil {
		return nil, err
	}
	dt, ok := DType(m.DataType)
	if !ok {
		return nil, fmt.Errorf("%w: data type %v has no Zarr dtype", storage.ErrInvalidArgument, m.DataType)
	}
	s, b := m.LODShape(lod), brickShape(m)
	return map[string]any{
		"zarr_format":         2,
		"shape":               []uint32{s.Z, s.Y, s.X},
		"chunks":              []uint32{b.Z, b.Y, b.X},
		"dtype":               dt,
		"compressor":          compressorV2(m.Codec),
		"fill_value":          0,
		"order":               "C",
		"filters":             nil,
		"dimension_separator": "/",
	}, nil
}

// ArrayV3 is the zarr.json document of level lod as a Zarr v3 array:
// the same shape, chunks and bytes as Array, chunk keys "L/c/KZ/KY/KX".
// It fails for a level past the volume's levels or a voxel type Zarr
// cannot name.
func ArrayV3(m storage.VolumeMeta, lod uint32) (map[string]any, error) {
	if err := checkLevel(m, lod); err != nil {
		return nil, err
	}
	dt, ok := DTypeV3(m.DataType)
	if !ok {
		return nil, fmt.Errorf("%w: data type %v has no Zarr data_type", storage.ErrInvalidArgument, m.DataType)
	}
	s, b := m.LODShape(lod), brickShape(m)
	codec := map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}}
	return map[string]any{
		"zarr_format": 3,
		"node_type":   "array",
		"shape":       []uint32{s.Z, s.Y, s.X},
		"data_type":   dt,
		"chunk_grid": map[string]any{"name": "regular", "configuration": map[string]any{
			"chunk_shape": []uint32{b.Z, b.Y, b.X},
		}},
		"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
		"fill_value":         0,
		"codecs":             codecsV3(m.Codec, codec),
		"dimension_names":    []string{"z", "y", "x"},
		"attributes":         map[string]any{},
	}, nil
}

func checkLevel(m storage.VolumeMeta, lod uint32) error {
	if lod >= max(m.LODCount, 1) {
		return fmt.Errorf("%w: level %d, the volume has %d", storage.ErrInvalidArgument, lod, max(m.LODCount, 1))
	}
	return nil
}

// ChunkPath returns the path of a brick's chunk below the group:
// "L/KZ/KY/KX".
func ChunkPath(k storage.BrickKey) string {
	return strconv.FormatUint(uint64(k.LOD), 10) + "/" + strconv.FormatUint(uint64(k.Z), 10) + "/" +
		strconv.FormatUint(uint64(k.Y), 10) + "/" + strconv.FormatUint(uint64(k.X), 10)
}

// Attrs is the group's .zattrs document: OME-NGFF 0.4 multiscales and the
// go-ldm placement (see the package documentation).
func Attrs(m storage.VolumeMeta) map[string]any {
	return AttrsWith(m, ldmAttrs(m))
}

// AttrsWith is the group's .zattrs document with ldm as its "go-ldm"
// attributes, for a writer that says more about the volume than Attrs.
func AttrsWith(m storage.VolumeMeta, ldm any) map[string]any {
	return map[string]any{
		"multiscales": []map[string]any{Multiscale(m, Version)},
		"go-ldm":      ldm,
	}
}

// GroupV3 is the group's zarr.json document as a Zarr v3 group with
// OME-NGFF 0.5 metadata ("ome") and ldm as its "go-ldm" attributes.
func GroupV3(m storage.VolumeMeta, ldm any) map[string]any {
	return map[string]any{
		"zarr_format": 3,
		"node_type":   "group",
		"attributes": map[string]any{
			"ome":    map[string]any{"version": VersionV3, "multiscales": []map[string]any{Multiscale(m, "")}},
			"go-ldm": ldm,
		},
	}
}

// Multiscale is the OME-NGFF multiscales entry of a volume: axes z, y, x
// in millimetres and one dataset per level of detail, path "L", with its
// scale and translation (z, y, x; see the package documentation). version
// is set for 0.4 and left out when empty, as 0.5 moves it to the "ome"
// object.
func Multiscale(m storage.VolumeMeta, version string) map[string]any {
	lods := max(m.LODCount, 1)
	a := m.Affine()
	aligned := axisAligned(a)
	// Units: millimetres, as the transform's (a volume in no space keeps
	// its source's units, usually millimetres too).
	axes := make([]map[string]any, 0, 3)
	for _, n := range []string{"z", "y", "x"} {
		axes = append(axes, map[string]any{"name": n, "type": "space", "unit": "millimeter"})
	}
	datasets := make([]map[string]any, 0, lods)
	for l := range lods {
		var scale, trans [3]float64 // x, y, z
		if aligned {
			la := m.LODAffine(l)
			scale = [3]float64{la[0], la[5], la[10]}
			trans = [3]float64{la[3], la[7], la[11]}
		} else {
			f := math.Ldexp(1, int(l))
			for i := range 3 {
				s := a.ColumnNorm(i)
				scale[i], trans[i] = s*f, s*(f-1)/2
			}
		}
		datasets = append(datasets, map[string]any{
			"path": strconv.FormatUint(uint64(l), 10),
			"coordinateTransformations": []map[string]any{
				{"type": "scale", "scale": []float64{scale[2], scale[1], scale[0]}},
				{"type": "translation", "translation": []float64{trans[2], trans[1], trans[0]}},
			},
		})
	}
	ms := map[string]any{
		"name":     m.Name,
		"axes":     axes,
		"datasets": datasets,
		"type":     "mean",
		"metadata": map[string]any{
			"description": "each level is the mean of 2x2x2 voxels of the level below (go-ldm pyramid); translations place voxel centres",
		},
	}
	if version != "" {
		ms["version"] = version
	}
	return ms
}

// ldmAttrs is the "go-ldm" attributes of Attrs: the volume, its voxel
// type, space and full transform, and what OME-Zarr does not express.
func ldmAttrs(m storage.VolumeMeta) map[string]any {
	a := m.Affine()
	aligned := axisAligned(a)
	space := string(m.Space)
	if m.Space == storage.SpaceUnspecified {
		space = "unspecified"
	}
	expressed, notExpressed := "exact", []string{}
	if !aligned {
		expressed = "spacing only"
		notExpressed = append(notExpressed, "the rotation, axis order and flips of the voxel-to-world transform: OME-Zarr has a scale and a translation per axis only, so its axes are the voxel axes scaled by the spacing with the origin at the centre of voxel (0, 0, 0) of level 0; the full transform (4x4, row-major, mm, voxel centres) is in transform")
	}
	if m.Space == storage.SpaceRAS || m.Space == storage.SpaceLPS {
		notExpressed = append(notExpressed, "the anatomical space "+string(m.Space)+": OME-Zarr axes have names and units but no patient direction (RAS: +x right, +y anterior, +z superior; LPS: +x left, +y posterior, +z superior)")
	}
	return map[string]any{
		"volume":             m.Name,
		"dataType":           m.DataType.String(),
		"space":              space,
		"transform":          a[:],
		"transformExpressed": expressed,
		"notExpressed":       notExpressed,
	}
}

// axisAligned reports whether the 3x3 part of a is diagonal with positive
// entries.
func axisAligned(a storage.Affine) bool {
	for r := 0; r < 3; r++ {
		for c := 0; c < 3; c++ {
			if v := a[4*r+c]; (r == c && v <= 0) || (r != c && v != 0) {
				return false
			}
		}
	}
	return true
}

func brickShape(m storage.VolumeMeta) storage.Shape {
	if m.BrickShape.X == 0 || m.BrickShape.Y == 0 || m.BrickShape.Z == 0 {
		return storage.DefaultBrickShape
	}
	return m.BrickShape
}

// compressorV2 is the Zarr v2 compressor of a volume's chunks: none for a
// raw volume, numcodecs' zstd for a zstd one.
func compressorV2(c storage.Codec) any {
	if c.Kind != storage.CodecZstd {
		return nil
	}
	return map[string]any{"id": "zstd", "level": c.Level}
}

// codecsV3 is the Zarr v3 codec chain of a volume's chunks: bytes, then
// zstd for a zstd volume (whose frames carry a checksum).
func codecsV3(c storage.Codec, bytesCodec map[string]any) []any {
	if c.Kind != storage.CodecZstd {
		return []any{bytesCodec}
	}
	return []any{bytesCodec, map[string]any{"name": "zstd", "configuration": map[string]any{"level": c.Level, "checksum": true}}}
}
