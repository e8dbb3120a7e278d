package service

import (
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/xcheng85/go-ldm/storage"
)

// precomputedDtype is a data type in Neuroglancer precomputed terms, or an
// error for one the format does not define.
func precomputedDtype(d storage.DataType) (string, error) {
	switch d {
	case storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32:
		return d.String(), nil
	}
	return "", &viewError{status: http.StatusNotImplemented, msg: fmt.Sprintf(
		"volume data type %v is not one of Neuroglancer precomputed's types (uint8, int8, uint16, int16, uint32, int32, uint64, float32): read the volume through /zarr/ or the API", d)}
}

// precomputedOffsets returns the voxel_offset (x, y, z) of each level.
// Neuroglancer puts the corner of voxel v at v * resolution, so voxel i of
// level l (offset o) has its centre at (o + i + 1/2) * resolution; with
// o = origin / (spacing * 2^l) that is the volume's world position of the
// centre plus half a level 0 voxel at every level. The offset is an
// integer, so the translation is expressed only when origin / (spacing *
// 2^l) is one for every level and axis; otherwise every offset is zero.
func precomputedOffsets(info storage.VolumeInfo, t viewTransform) ([][3]int64, bool) {
	n := lodCount(info)
	out := make([][3]int64, n)
	if !t.exact {
		return out, false
	}
	for l := range n {
		scale, _ := t.level(l)
		for i := range 3 {
			q := t.origin[i] / scale[i]
			r := math.Round(q)
			if math.Abs(q-r) > 1e-9*max(1, math.Abs(q)) || math.Abs(r) > 1<<40 {
				return make([][3]int64, n), false
			}
			out[l][i] = int64(r)
		}
	}
	return out, true
}

// precomputedInfo is the info document of a volume.
func precomputedInfo(info storage.VolumeInfo) (map[string]any, error) {
	dt, err := precomputedDtype(info.DataType)
	if err != nil {
		return nil, err
	}
	t := transformOf(info)
	offsets, translated := precomputedOffsets(info, t)
	bs := brickShape(info)
	var scales []map[string]any
	for l := range lodCount(info) {
		scale, _ := t.level(l)
		shape := info.LODShape(l)
		scales = append(scales, map[string]any{
			"key":          strconv.FormatUint(uint64(l), 10),
			"size":         []uint32{shape.X, shape.Y, shape.Z},
			"resolution":   []float64{scale[0] * 1e6, scale[1] * 1e6, scale[2] * 1e6},
			"voxel_offset": offsets[l][:],
			"chunk_sizes":  [][]uint32{{bs.X, bs.Y, bs.Z}},
			"encoding":     "raw",
		})
	}
	attrs := attrsOf(info, t, "Neuroglancer precomputed")
	if t.exact && !translated {
		attrs.TransformExpressed = "spacing only"
		attrs.NotExpressed = append(attrs.NotExpressed,
			"the translation: voxel_offset is a whole number of voxels of every level, which the volume's origin is not; positions are relative to the corner of voxel (0, 0, 0) of level 0")
	}
	attrs.Note = "Neuroglancer places voxel corners at whole multiples of the resolution: the centre of a voxel is at half a voxel past its corner, so a position in Neuroglancer is the world position (mm, voxel centres) plus half a level 0 voxel, in nanometres"
	return map[string]any{
		"@type":        "neuroglancer_multiscale_volume",
		"type":         "image",
		"data_type":    dt,
		"num_channels": 1,
		"scales":       scales,
		"go-ldm":       attrs,
	}, nil
}

// servePrecomputed answers a path under /precomputed/VOLUME/.
func (v *views) servePrecomputed(w http.ResponseWriter, r *http.Request, info storage.VolumeInfo, rest []string) error {
	if len(rest) == 1 && rest[0] == "info" {
		doc, err := precomputedInfo(info)
		if err != nil {
			return err
		}
		return writeJSON(w, r, metaETag(info, "info"), doc)
	}
	if len(rest) != 2 {
		return notFound("no such path in the precomputed view of volume %q: it has info and LOD/x0-x1_y0-y1_z0-z1", info.Name)
	}
	if _, err := precomputedDtype(info.DataType); err != nil {
		return err
	}
	lod, err := parseLevel(info, rest[0])
	if err != nil {
		return err
	}
	box, ok := parseChunkName(rest[1])
	if !ok {
		return badPath("malformed chunk name %q: want x0-x1_y0-y1_z0-z1 (decimal voxel bounds)", rest[1])
	}
	offsets, _ := precomputedOffsets(info, transformOf(info))
	key, size, err := precomputedChunk(info, lod, offsets[lod], box)
	if err != nil {
		return err
	}
	return v.readBrick(r, info, key, func(t storage.Tile) error {
		// Raw chunks are voxels: a zstd brick is decoded here (codec.go).
		vox, err := decodeBrick(info, key, t.Value, nil)
		if err != nil {
			return err
		}
		bs := brickShape(info)
		if size == [3]uint32{bs.X, bs.Y, bs.Z} {
			return writeChunk(w, r, info, t, vox)
		}
		return writeChunk(w, r, info, t, cutBrick(vox, bs, size, info.DataType.Size()))
	})
}

// precomputedChunk checks a chunk's bounds (x, y, z; begin, end) against
// level lod: they must be one brick of the level's grid, shifted by the
// level's voxel offset, with the end cut to the level's size. It returns
// the brick and the chunk's size.
func precomputedChunk(info storage.VolumeInfo, lod uint32, offset [3]int64, box [3][2]int64) (storage.BrickKey, [3]uint32, error) {
	bs := brickShape(info)
	ls := info.LODShape(lod)
	bsz := [3]int64{int64(bs.X), int64(bs.Y), int64(bs.Z)}
	lsz := [3]int64{int64(ls.X), int64(ls.Y), int64(ls.Z)}
	var idx, size [3]uint32
	for i := range 3 {
		b, e := box[i][0]-offset[i], box[i][1]-offset[i]
		if b < 0 || b >= lsz[i] || b%bsz[i] != 0 || e != min(b+bsz[i], lsz[i]) {
			return storage.BrickKey{}, size, notFound(
				"chunk %d-%d_%d-%d_%d-%d is not a chunk of level %d of volume %q (size %dx%dx%d, chunks %dx%dx%d, voxel offset %d,%d,%d)",
				box[0][0], box[0][1], box[1][0], box[1][1], box[2][0], box[2][1], lod, info.Name,
				ls.X, ls.Y, ls.Z, bs.X, bs.Y, bs.Z, offset[0], offset[1], offset[2])
		}
		idx[i] = uint32(b / bsz[i])
		size[i] = uint32(e - b)
	}
	return storage.BrickKey{LOD: lod, X: idx[0], Y: idx[1], Z: idx[2]}, size, nil
}

// cutBrick copies the box [0, size) (x, y, z) out of a brick of shape bs
// (x fastest, vs bytes per voxel).
func cutBrick(brick []byte, bs storage.Shape, size [3]uint32, vs int) []byte {
	row := int(size[0]) * vs
	out := make([]byte, 0, row*int(size[1])*int(size[2]))
	for z := range int(size[2]) {
		for y := range int(size[1]) {
			src := ((z*int(bs.Y) + y) * int(bs.X)) * vs
			out = append(out, brick[src:src+row]...)
		}
	}
	return out
}

// parseChunkName parses a precomputed chunk name x0-x1_y0-y1_z0-z1 into
// its bounds (x, y, z; begin, end). Bounds are decimal integers, negative
// ones with a minus sign ("-64--1_..."), without leading zeros, and each
// begin is below its end.
func parseChunkName(s string) (box [3][2]int64, ok bool) {
	i := 0
	num := func() (int64, bool) {
		start := i
		if i < len(s) && s[i] == '-' {
			i++
		}
		d := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == d || i-d > 12 || (i-d > 1 && s[d] == '0') || (s[d] == '0' && d > start) {
			return 0, false
		}
		n, err := strconv.ParseInt(s[start:i], 10, 64)
		return n, err == nil
	}
	for a := range 3 {
		if a > 0 {
			if i >= len(s) || s[i] != '_' {
				return box, false
			}
			i++
		}
		b, ok1 := num()
		if !ok1 || i >= len(s) || s[i] != '-' {
			return box, false
		}
		i++
		e, ok2 := num()
		if !ok2 || b >= e {
			return box, false
		}
		box[a] = [2]int64{b, e}
	}
	return box, i == len(s)
}
