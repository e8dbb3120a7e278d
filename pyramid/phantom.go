package pyramid

import (
	"bytes"
	"io"

	"github.com/xcheng85/go-ldm/storage"
)

// The demo phantom: a 256^3 uint8 volume, 64^3 bricks, 3 levels of
// detail, spacing 1 mm. Its structures, in LOD 0 voxel coordinates (a voxel
// at (x, y, z) has its centre at (x+0.5, y+0.5, z+0.5)); where they overlap
// the later one wins:
//
//	background                                        0
//	body: sphere, centre (128,128,128), radius 100   60
//	core: sphere, centre (128,128,128), radius 32   200
//	rod: cylinder along z, axis x=176 y=128,
//	     radius 10, z in [40,216)                    150
//	cube: x, y, z in [64,96)                          255
//	bead: sphere, centre (160,88,176), radius 12     100
const (
	PhantomSize  = 256
	PhantomBrick = 64
	PhantomLODs  = 3
)

// Phantom values of the structures.
const (
	PhantomBackground uint8 = 0
	PhantomBody       uint8 = 60
	PhantomCore       uint8 = 200
	PhantomRod        uint8 = 150
	PhantomCube       uint8 = 255
	PhantomBead       uint8 = 100
)

// PhantomMeta returns the metadata of the demo phantom volume named name.
func PhantomMeta(name string) storage.VolumeMeta {
	return storage.VolumeMeta{
		Name:       name,
		Shape:      storage.Shape{X: PhantomSize, Y: PhantomSize, Z: PhantomSize},
		DataType:   storage.Uint8,
		BrickShape: storage.Shape{X: PhantomBrick, Y: PhantomBrick, Z: PhantomBrick},
		LODCount:   PhantomLODs,
		Spacing:    []float64{1, 1, 1},
		Labels:     map[string]string{"source": "go-ldm demo phantom"},
	}
}

// PhantomValue returns the LOD 0 voxel of the demo phantom at (x, y, z);
// coordinates outside [0,256) give the background.
func PhantomValue(x, y, z int) uint8 {
	if x < 0 || y < 0 || z < 0 || x >= PhantomSize || y >= PhantomSize || z >= PhantomSize {
		return PhantomBackground
	}
	cx, cy, cz := float64(x)+0.5, float64(y)+0.5, float64(z)+0.5
	in := func(sx, sy, sz, r float64) bool {
		dx, dy, dz := cx-sx, cy-sy, cz-sz
		return dx*dx+dy*dy+dz*dz <= r*r
	}
	switch {
	case in(160, 88, 176, 12):
		return PhantomBead
	case x >= 64 && x < 96 && y >= 64 && y < 96 && z >= 64 && z < 96:
		return PhantomCube
	case z >= 40 && z < 216 && (cx-176)*(cx-176)+(cy-128)*(cy-128) <= 10*10:
		return PhantomRod
	case in(128, 128, 128, 32):
		return PhantomCore
	case in(128, 128, 128, 100):
		return PhantomBody
	}
	return PhantomBackground
}

// Phantom returns the demo phantom's LOD 0 voxels as a raw volume reader.
func Phantom() io.ReaderAt {
	data := make([]byte, PhantomSize*PhantomSize*PhantomSize)
	i := 0
	for z := range PhantomSize {
		for y := range PhantomSize {
			for x := range PhantomSize {
				data[i] = PhantomValue(x, y, z)
				i++
			}
		}
	}
	return bytes.NewReader(data)
}
