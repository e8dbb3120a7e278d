package service

import (
	"fmt"
	"math"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// validateRequest checks one request message. first is false for the
// second and later messages of a client stream, where WriteTileStream may
// leave the volume empty. Errors name the offending field (see
// connectError) and wrap storage sentinels.
func validateRequest(m any, maxTile int, first bool) error {
	switch r := m.(type) {
	case *ldmv1.WriteTileRequest:
		if err := validateVolumeName("volume", r.GetVolume()); err != nil {
			return err
		}
		return validateTile("tile", r.GetTile(), maxTile)
	case *ldmv1.WriteTileStreamRequest:
		if first || r.GetVolume() != "" {
			if err := validateVolumeName("volume", r.GetVolume()); err != nil {
				return err
			}
		}
		return validateTile("tile", r.GetTile(), maxTile)
	case *ldmv1.ReadTileRequest:
		if err := validateVolumeName("volume", r.GetVolume()); err != nil {
			return err
		}
		return validateConsistency("consistency", r.GetConsistency())
	case *ldmv1.ReadTileStreamRequest:
		return validateVolumeName("volume", r.GetVolume())
	case *ldmv1.CreateVolumeRequest:
		return validateNewVolume(r.GetVolume())
	case *ldmv1.GetVolumeRequest:
		return validateVolumeName("name", r.GetName())
	case *ldmv1.DeleteVolumeRequest:
		return validateVolumeName("name", r.GetName())
	case *ldmv1.GetBrickRequest:
		if err := validateVolumeName("volume", r.GetVolume()); err != nil {
			return err
		}
		if r.GetKey() == nil {
			return invalidField("key", "a brick key (lod, x, y, z) is required")
		}
		return validateConsistency("consistency", r.GetConsistency())
	case *ldmv1.StreamBricksRequest:
		if err := validateVolumeName("volume", r.GetVolume()); err != nil {
			return err
		}
		if r.MinLod != nil && r.MaxLod != nil && r.GetMinLod() > r.GetMaxLod() {
			return invalidField("min_lod", "min_lod %d is above max_lod %d", r.GetMinLod(), r.GetMaxLod())
		}
		if rg := r.GetRegion(); rg != nil {
			lo, hi := rg.GetMin(), rg.GetMax()
			if hi.GetX() <= lo.GetX() || hi.GetY() <= lo.GetY() || hi.GetZ() <= lo.GetZ() {
				return invalidField("region", "region max (%d,%d,%d) must be above min (%d,%d,%d) in x, y and z",
					hi.GetX(), hi.GetY(), hi.GetZ(), lo.GetX(), lo.GetY(), lo.GetZ())
			}
		}
		if f := r.GetFocus(); f != nil {
			for _, c := range []float64{f.GetX(), f.GetY(), f.GetZ()} {
				if math.IsNaN(c) || math.IsInf(c, 0) {
					// A NaN distance makes the nearest-first order
					// meaningless (every comparison is false).
					return invalidField("focus", "focus (%g,%g,%g) must be finite in x, y and z", f.GetX(), f.GetY(), f.GetZ())
				}
			}
		}
		if _, ok := ldmv1.BrickOrder_name[int32(r.GetOrder())]; !ok {
			return invalidField("order", "unknown brick order %d", r.GetOrder())
		}
	case *ldmv1.RemoveServerRequest:
		if r.GetId() == "" {
			return invalidField("id", "a server id is required")
		}
	}
	return nil
}

func validateVolumeName(field, name string) error {
	if name == "" {
		return withField(field, fmt.Errorf("%w: a volume name is required", storage.ErrInvalidName))
	}
	return withField(field, storage.ValidateName(name))
}

func validateConsistency(field string, c ldmv1.Consistency) error {
	if _, ok := ldmv1.Consistency_name[int32(c)]; !ok {
		return invalidField(field, "unknown consistency %d", c)
	}
	return nil
}

func validateTile(field string, t *ldmv1.Tile, maxTile int) error {
	if t == nil {
		return invalidField(field, "a tile is required")
	}
	if len(t.GetValue()) > maxTile {
		return withField(field+".value", fmt.Errorf("%w: tile of %d bytes, limit %d", storage.ErrTooLarge, len(t.GetValue()), maxTile))
	}
	// A non-zero crc32c is checked by the store as it appends (one pass
	// over the bytes); the write handlers name the field on a mismatch.
	return nil
}

// validateNewVolume checks a CreateVolume request field by field, so each
// problem names its field; the store normalizes and checks again.
func validateNewVolume(v *ldmv1.Volume) error {
	if v == nil {
		return invalidField("volume", "a volume is required")
	}
	if err := validateVolumeName("volume.name", v.GetName()); err != nil {
		return err
	}
	s := v.GetShape()
	if s.GetX() == 0 || s.GetY() == 0 || s.GetZ() == 0 {
		return invalidField("volume.shape", "shape %dx%dx%d must be positive in x, y and z", s.GetX(), s.GetY(), s.GetZ())
	}
	if storage.DataType(v.GetDataType()).Size() == 0 {
		return invalidField("volume.data_type", "data type %v (want DATA_TYPE_UINT8, _UINT16, _INT16, _UINT32 or _FLOAT32)", v.GetDataType())
	}
	if b := v.GetBrickShape(); b != nil && (b.GetX() != 0 || b.GetY() != 0 || b.GetZ() != 0) {
		if b.GetX() == 0 || b.GetY() == 0 || b.GetZ() == 0 || b.GetX() > 1024 || b.GetY() > 1024 || b.GetZ() > 1024 {
			return invalidField("volume.brick_shape", "brick shape %dx%dx%d must be 1..1024 in x, y and z", b.GetX(), b.GetY(), b.GetZ())
		}
	}
	if v.GetLodCount() > 32 {
		return invalidField("volume.lod_count", "lod_count %d (at most 32)", v.GetLodCount())
	}
	if n := maxLevels(s); v.GetLodCount() > n {
		return invalidField("volume.lod_count", "lod_count %d: a %dx%dx%d volume has at most %d levels (each halves the shape, rounding up, down to one voxel)",
			v.GetLodCount(), s.GetX(), s.GetY(), s.GetZ(), n)
	}
	if n := len(v.GetSpacing()); n != 0 && n != 3 {
		return invalidField("volume.spacing", "spacing has %d values (want 0 or 3)", n)
	}
	for _, f := range v.GetSpacing() {
		if !(f > 0) || math.IsInf(f, 0) {
			return invalidField("volume.spacing", "spacing %v must be positive and finite in x, y and z", v.GetSpacing())
		}
	}
	if err := validateTransform(v); err != nil {
		return err
	}
	if err := validateCodec(v); err != nil {
		return err
	}
	m := apiconv.MetaFromAPI(v)
	return withField("volume", m.Normalize())
}

// validateTransform checks a new volume's transform (none, or a usable 4x4
// affine whose column lengths match any spacing given) and space, naming
// volume.transform, volume.spacing or volume.space.
func validateTransform(v *ldmv1.Volume) error {
	if _, ok := ldmv1.Space_name[int32(v.GetSpace())]; !ok {
		return invalidField("volume.space", "space %d (want SPACE_UNSPECIFIED, SPACE_RAS, SPACE_LPS or SPACE_SCANNER)", int32(v.GetSpace()))
	}
	t := v.GetTransform()
	if len(t) == 0 {
		return nil
	}
	if len(t) != 16 {
		return invalidField("volume.transform", "transform has %d values (want 16: a 4x4 voxel-to-world affine in mm, row-major, or none)", len(t))
	}
	a := storage.Affine(t)
	if err := storage.CheckAffine("transform", a); err != nil {
		return withField("volume.transform", err)
	}
	for c, sp := range v.GetSpacing() {
		if n := a.ColumnNorm(c); math.Abs(sp-n) > 1e-6*n {
			return invalidField("volume.spacing", "spacing[%d] = %v but transform column %d has length %v: leave spacing empty or make it the column lengths", c, sp, c, n)
		}
	}
	return nil
}

// maxLevels returns how many levels of detail a volume of shape s can
// have: level l has shape ceil(s/2^l) in each axis, and the last level is
// the first that is one voxel in every axis (levels beyond it would repeat
// it).
func maxLevels(s *ldmv1.Shape) uint32 {
	m := max(s.GetX(), s.GetY(), s.GetZ())
	n := uint32(1)
	for m > 1 {
		m = m/2 + m%2
		n++
	}
	return n
}

// volumeLookup finds a volume's metadata; Tiles.Volume satisfies it.
type volumeLookup func(name string) (storage.VolumeInfo, error)

// keyChecker checks the brick keys of WriteTile, WriteTileStream and
// GetBrick requests against the volume they name: the level must be below
// the volume's lod_count and x, y and z inside that level's brick grid
// (ceil(shape/2^lod/brick_shape)). A volume that does not exist is left to
// the handler (NotFound). It remembers the last volume it looked up, so a
// stream looks each volume up once; it is not safe for concurrent use.
type keyChecker struct {
	lookup volumeLookup
	name   string // the volume of the previous message of a stream
	meta   *storage.VolumeMeta
}

// check validates the brick key of m, if it has one.
func (c *keyChecker) check(m any) error {
	var volume, field string
	var key *ldmv1.BrickKey
	switch r := m.(type) {
	case *ldmv1.WriteTileRequest:
		volume, key, field = r.GetVolume(), r.GetTile().GetKey(), "tile.key"
	case *ldmv1.WriteTileStreamRequest:
		volume, key, field = r.GetVolume(), r.GetTile().GetKey(), "tile.key"
		if volume == "" {
			volume = c.name // a later message of the stream
		}
	case *ldmv1.GetBrickRequest:
		volume, key, field = r.GetVolume(), r.GetKey(), "key"
	default:
		return nil
	}
	if volume != c.name || c.meta == nil {
		c.name, c.meta = volume, nil
		info, err := c.lookup(volume)
		if err != nil {
			return nil // the handler answers NotFound (or the store's error)
		}
		c.meta = &info.VolumeMeta
	}
	if key == nil {
		return nil
	}
	return validateBrickKey(field, c.meta, key)
}

// validateBrickKey checks that key names a brick of the volume m.
func validateBrickKey(field string, m *storage.VolumeMeta, key *ldmv1.BrickKey) error {
	lods := max(m.LODCount, 1)
	if key.GetLod() >= lods {
		return invalidField(field+".lod", "lod %d of volume %q, which has %d level(s) (0..%d)", key.GetLod(), m.Name, lods, lods-1)
	}
	g := m.BrickGrid(key.GetLod())
	for _, a := range []struct {
		axis    string
		at, len uint32
	}{{"x", key.GetX(), g.X}, {"y", key.GetY(), g.Y}, {"z", key.GetZ(), g.Z}} {
		if a.at >= a.len {
			return invalidField(field+"."+a.axis, "brick %s=%d is outside level %d of volume %q, whose brick grid is %dx%dx%d (indices from 0)",
				a.axis, a.at, key.GetLod(), m.Name, g.X, g.Y, g.Z)
		}
	}
	return nil
}
