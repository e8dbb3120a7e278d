package pyramid

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/xcheng85/go-ldm/storage"
)

// Brick is one brick cut from a volume.
type Brick struct {
	// Key is the brick's level of detail and position in brick units.
	Key storage.BrickKey
	// Value is brick.x * brick.y * brick.z voxels, little-endian, x
	// fastest, zero outside the volume. Cut allocates it for each brick and
	// never touches it again: the receiver owns it.
	Value []byte
}

// Raw is a volume in memory: Shape.X*Shape.Y*Shape.Z voxels of DataType,
// little-endian, x fastest, then y, then z.
type Raw struct {
	Shape    storage.Shape
	DataType storage.DataType
	Data     []byte
}

// Downsample returns the next level of detail of r: shape halved rounding
// up, each voxel the mean of the 2x2x2 voxels below it (of those that
// exist at odd edges), rounded to nearest for integer types. r is not
// changed; the result has its own Data. It panics if r.DataType is not
// one of storage's data types, and expects len(r.Data) to match r.Shape.
func Downsample(r Raw) Raw {
	vs := r.DataType.Size()
	sx, sy, sz := int(r.Shape.X), int(r.Shape.Y), int(r.Shape.Z)
	ox, oy, oz := (sx+1)/2, (sy+1)/2, (sz+1)/2
	out := Raw{Shape: storage.Shape{X: uint32(ox), Y: uint32(oy), Z: uint32(oz)}, DataType: r.DataType, Data: make([]byte, ox*oy*oz*vs)}
	get := reader(r.DataType)
	put := writer(r.DataType)
	for z := range oz {
		for y := range oy {
			for x := range ox {
				var sum float64
				n := 0
				for dz := range 2 {
					iz := 2*z + dz
					if iz >= sz {
						continue
					}
					for dy := range 2 {
						iy := 2*y + dy
						if iy >= sy {
							continue
						}
						row := (iz*sy + iy) * sx
						for dx := range 2 {
							ix := 2*x + dx
							if ix >= sx {
								continue
							}
							sum += get(r.Data[(row+ix)*vs:])
							n++
						}
					}
				}
				put(out.Data[((z*oy+y)*ox+x)*vs:], sum/float64(n))
			}
		}
	}
	return out
}

func reader(d storage.DataType) func([]byte) float64 {
	switch d {
	case storage.Uint8:
		return func(b []byte) float64 { return float64(b[0]) }
	case storage.Uint16:
		return func(b []byte) float64 { return float64(binary.LittleEndian.Uint16(b)) }
	case storage.Int16:
		return func(b []byte) float64 { return float64(int16(binary.LittleEndian.Uint16(b))) }
	case storage.Uint32:
		return func(b []byte) float64 { return float64(binary.LittleEndian.Uint32(b)) }
	case storage.Float32:
		return func(b []byte) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))) }
	}
	panic(fmt.Sprintf("pyramid: unknown data type %v", d))
}

func writer(d storage.DataType) func([]byte, float64) {
	switch d {
	case storage.Uint8:
		return func(b []byte, v float64) { b[0] = uint8(math.Round(v)) }
	case storage.Uint16:
		return func(b []byte, v float64) { binary.LittleEndian.PutUint16(b, uint16(math.Round(v))) }
	case storage.Int16:
		return func(b []byte, v float64) { binary.LittleEndian.PutUint16(b, uint16(int16(math.Round(v)))) }
	case storage.Uint32:
		return func(b []byte, v float64) { binary.LittleEndian.PutUint32(b, uint32(math.Round(v))) }
	case storage.Float32:
		return func(b []byte, v float64) { binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v))) }
	}
	panic(fmt.Sprintf("pyramid: unknown data type %v", d))
}

// BrickCount returns how many bricks Cut emits for meta, every level
// included. meta must be normalized (storage.VolumeMeta.Normalize), as Cut
// does itself.
func BrickCount(meta storage.VolumeMeta) int {
	n := 0
	for lod := uint32(0); lod < meta.LODCount; lod++ {
		g := meta.BrickGrid(lod)
		n += int(g.X) * int(g.Y) * int(g.Z)
	}
	return n
}

// LevelsToFit returns the number of levels of detail from full resolution
// down to the first level that fits in one brick: 1 when shape already
// fits, at most 32. A zero brick axis counts as 1.
func LevelsToFit(shape, brick storage.Shape) uint32 {
	bx, by, bz := max(brick.X, 1), max(brick.Y, 1), max(brick.Z, 1)
	n := uint32(1)
	x, y, z := shape.X, shape.Y, shape.Z
	for (x > bx || y > by || z > bz) && n < 32 {
		x, y, z = x/2+x%2, y/2+y%2, z/2+z%2
		n++
	}
	return n
}
