package service

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

// zarrDtype is a data type in Zarr v2 (NumPy typestr, little-endian) and
// v3 (data_type) terms.
func zarrDtype(d storage.DataType) (v2, v3 string, err error) {
	switch d {
	case storage.Uint8:
		return "|u1", "uint8", nil
	case storage.Uint16:
		return "<u2", "uint16", nil
	case storage.Int16:
		return "<i2", "int16", nil
	case storage.Uint32:
		return "<u4", "uint32", nil
	case storage.Float32:
		return "<f4", "float32", nil
	}
	return "", "", fmt.Errorf("%w: data type %v has no Zarr equivalent here", storage.ErrInvalidArgument, d)
}

// zarrAxes are the OME-NGFF axes of every view: z, y, x in millimetres.
var zarrAxes = []map[string]string{
	{"name": "z", "type": "space", "unit": "millimeter"},
	{"name": "y", "type": "space", "unit": "millimeter"},
	{"name": "x", "type": "space", "unit": "millimeter"},
}

// ngffMultiscale is the OME-NGFF multiscales entry of a volume: one
// dataset per level of detail, path "LOD", with its scale and translation
// (z, y, x). version is set for 0.4 and left out for 0.5, where it moves
// to the "ome" object.
func ngffMultiscale(info storage.VolumeInfo, version string) map[string]any {
	t := transformOf(info)
	var datasets []map[string]any
	for l := range lodCount(info) {
		scale, translation := t.level(l)
		datasets = append(datasets, map[string]any{
			"path": strconv.FormatUint(uint64(l), 10),
			"coordinateTransformations": []map[string]any{
				{"type": "scale", "scale": zyx(scale)},
				{"type": "translation", "translation": zyx(translation)},
			},
		})
	}
	m := map[string]any{
		"name":     info.Name,
		"axes":     zarrAxes,
		"datasets": datasets,
		"type":     "mean",
		"metadata": map[string]any{
			"description": "each level is the mean of 2x2x2 voxels of the level below (go-ldm pyramid); translations place voxel centres",
		},
	}
	if version != "" {
		m["version"] = version
	}
	return m
}

// serveZarr answers a path under /zarr/VOLUME/ (version 2) or
// /zarr3/VOLUME/ (version 3).
func (v *views) serveZarr(w http.ResponseWriter, r *http.Request, info storage.VolumeInfo, version int, rest []string) error {
	v2, v3, err := zarrDtype(info.DataType)
	if err != nil {
		return err
	}
	attrs := attrsOf(info, transformOf(info), "OME-Zarr")
	if len(rest) == 0 {
		if version == 2 {
			return notFound("/zarr/%s/ is an OME-Zarr group (Zarr v2, OME-NGFF 0.4): read its .zattrs", info.Name)
		}
		return notFound("/zarr3/%s/ is an OME-Zarr group (Zarr v3, OME-NGFF 0.5): read its zarr.json", info.Name)
	}
	if len(rest) == 1 {
		switch {
		case version == 2 && rest[0] == ".zgroup":
			return writeJSON(w, r, metaETag(info, "zgroup"), map[string]any{"zarr_format": 2})
		case version == 2 && rest[0] == ".zattrs":
			return writeJSON(w, r, metaETag(info, "zattrs"), map[string]any{
				"multiscales": []any{ngffMultiscale(info, "0.4")},
				"go-ldm":      attrs,
			})
		case version == 3 && rest[0] == "zarr.json":
			return writeJSON(w, r, metaETag(info, "group3"), map[string]any{
				"zarr_format": 3,
				"node_type":   "group",
				"attributes": map[string]any{
					"ome":    map[string]any{"version": "0.5", "multiscales": []any{ngffMultiscale(info, "")}},
					"go-ldm": attrs,
				},
			})
		}
		return notFound("no %q in the Zarr v%d group of volume %q", rest[0], version, info.Name)
	}
	lod, err := parseLevel(info, rest[0])
	if err != nil {
		return err
	}
	shape := info.LODShape(lod)
	bs := brickShape(info)
	if len(rest) == 2 {
		switch {
		case version == 2 && rest[1] == ".zarray":
			return writeJSON(w, r, metaETag(info, "zarray"+rest[0]), map[string]any{
				"zarr_format":         2,
				"shape":               []uint32{shape.Z, shape.Y, shape.X},
				"chunks":              []uint32{bs.Z, bs.Y, bs.X},
				"dtype":               v2,
				"compressor":          nil,
				"fill_value":          0,
				"order":               "C",
				"filters":             nil,
				"dimension_separator": "/",
			})
		case version == 2 && rest[1] == ".zattrs":
			return writeJSON(w, r, metaETag(info, "azattrs"+rest[0]), map[string]any{
				"_ARRAY_DIMENSIONS": []string{"z", "y", "x"},
			})
		case version == 3 && rest[1] == "zarr.json":
			codec := map[string]any{"name": "bytes", "configuration": map[string]any{"endian": "little"}}
			return writeJSON(w, r, metaETag(info, "array3"+rest[0]), map[string]any{
				"zarr_format": 3,
				"node_type":   "array",
				"shape":       []uint32{shape.Z, shape.Y, shape.X},
				"data_type":   v3,
				"chunk_grid": map[string]any{"name": "regular", "configuration": map[string]any{
					"chunk_shape": []uint32{bs.Z, bs.Y, bs.X},
				}},
				"chunk_key_encoding": map[string]any{"name": "default", "configuration": map[string]any{"separator": "/"}},
				"fill_value":         0,
				"codecs":             []any{codec},
				"dimension_names":    []string{"z", "y", "x"},
				"attributes":         map[string]any{},
			})
		}
	}
	// A chunk: LOD/Z/Y/X (v2) or LOD/c/Z/Y/X (v3).
	idx := rest[1:]
	if version == 3 {
		if len(idx) != 4 || idx[0] != "c" {
			return notFound("no %q in level %d of volume %q: a Zarr v3 chunk is LOD/c/Z/Y/X", strings.Join(rest, "/"), lod, info.Name)
		}
		idx = idx[1:]
	} else if len(idx) != 3 {
		return notFound("no %q in level %d of volume %q: a Zarr v2 chunk is LOD/Z/Y/X", strings.Join(rest, "/"), lod, info.Name)
	}
	key, err := zarrChunkKey(info, lod, idx)
	if err != nil {
		return err
	}
	return v.readBrick(r, info, key, func(t storage.Tile) error { return writeChunk(w, r, info, t, t.Value) })
}

// zarrChunkKey parses the chunk indices z, y, x of level lod and checks
// them against the level's brick grid.
func zarrChunkKey(info storage.VolumeInfo, lod uint32, zyxIdx []string) (storage.BrickKey, error) {
	var n [3]uint32
	for i, s := range zyxIdx {
		x, ok := parseIndex(s)
		if !ok {
			return storage.BrickKey{}, badPath("malformed chunk index %q: want a decimal number without sign or leading zeros", s)
		}
		n[i] = x
	}
	key := storage.BrickKey{LOD: lod, Z: n[0], Y: n[1], X: n[2]}
	g := info.BrickGrid(lod)
	if key.X >= g.X || key.Y >= g.Y || key.Z >= g.Z {
		return storage.BrickKey{}, notFound("chunk %d/%d/%d is outside level %d of volume %q, whose chunk grid is %dx%dx%d (z, y, x)",
			key.Z, key.Y, key.X, lod, info.Name, g.Z, g.Y, g.X)
	}
	return key, nil
}
