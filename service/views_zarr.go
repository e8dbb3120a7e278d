package service

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/xcheng85/go-ldm/omezarr"
	"github.com/xcheng85/go-ldm/storage"
)

// zarrDtype is a data type in Zarr v2 (NumPy typestr, little-endian) and
// v3 (data_type) terms, as package omezarr names them.
func zarrDtype(d storage.DataType) (v2, v3 string, err error) {
	v2, ok2 := omezarr.DType(d)
	v3, ok3 := omezarr.DTypeV3(d)
	if !ok2 || !ok3 {
		return "", "", fmt.Errorf("%w: data type %v has no Zarr equivalent here", storage.ErrInvalidArgument, d)
	}
	return v2, v3, nil
}

// serveZarr answers a path under /zarr/VOLUME/ (version 2) or
// /zarr3/VOLUME/ (version 3).
func (v *views) serveZarr(w http.ResponseWriter, r *http.Request, info storage.VolumeInfo, version int, rest []string) error {
	if _, _, err := zarrDtype(info.DataType); err != nil {
		return err
	}
	if len(rest) == 0 {
		if version == 2 {
			return notFound("/zarr/%s/ is an OME-Zarr group (Zarr v2, OME-NGFF 0.4): read its .zattrs", info.Name)
		}
		return notFound("/zarr3/%s/ is an OME-Zarr group (Zarr v3, OME-NGFF 0.5): read its zarr.json", info.Name)
	}
	if len(rest) == 1 {
		attrs := attrsOf(info, transformOf(info), "OME-Zarr")
		switch {
		case version == 2 && rest[0] == ".zgroup":
			return writeJSON(w, r, metaETag(info, "zgroup"), omezarr.Group())
		case version == 2 && rest[0] == ".zattrs":
			return writeJSON(w, r, metaETag(info, "zattrs"), omezarr.AttrsWith(info.VolumeMeta, attrs))
		case version == 3 && rest[0] == "zarr.json":
			return writeJSON(w, r, metaETag(info, "group3"), omezarr.GroupV3(info.VolumeMeta, attrs))
		}
		return notFound("no %q in the Zarr v%d group of volume %q", rest[0], version, info.Name)
	}
	lod, err := parseLevel(info, rest[0])
	if err != nil {
		return err
	}
	if len(rest) == 2 {
		switch {
		case version == 2 && rest[1] == ".zarray":
			doc, err := omezarr.Array(info.VolumeMeta, lod)
			if err != nil {
				return err
			}
			return writeJSON(w, r, metaETag(info, "zarray"+rest[0]), doc)
		case version == 2 && rest[1] == ".zattrs":
			return writeJSON(w, r, metaETag(info, "azattrs"+rest[0]), map[string]any{
				"_ARRAY_DIMENSIONS": []string{"z", "y", "x"},
			})
		case version == 3 && rest[1] == "zarr.json":
			doc, err := omezarr.ArrayV3(info.VolumeMeta, lod)
			if err != nil {
				return err
			}
			return writeJSON(w, r, metaETag(info, "array3"+rest[0]), doc)
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
