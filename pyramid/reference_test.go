package pyramid

import (
	"fmt"
	"io"

	"github.com/xcheng85/go-ldm/storage"
)

// wholeCut is the cutter Build replaced, kept as the reference the
// streaming builder must match: it reads slabs of brick.z << (lods-1)
// planes and downsamples each slab with Downsample.
// wholeCut reads a raw volume described by meta (shape, data type, brick shape,
// LOD count; see storage.VolumeMeta.Normalize for defaults) from src and
// calls emit for every brick of every level. Within a slab of z-planes the
// bricks come level by level, finest first. src must hold exactly
// shape.x*shape.y*shape.z voxels (it is read with ReadAt, one slab of
// z-planes at a time, from one goroutine). Cut fails with Normalize's
// error (storage.ErrInvalidName, storage.ErrInvalidArgument) for metadata
// Normalize rejects, and with a wrapped read error naming the z-planes;
// emit's error stops Cut and is returned as is. Cut calls emit from the
// calling goroutine.
func wholeCut(src io.ReaderAt, meta storage.VolumeMeta, emit func(Brick) error) error {
	if err := meta.Normalize(); err != nil {
		return err
	}
	vs := meta.DataType.Size()
	slabZ := int(meta.BrickShape.Z) << (meta.LODCount - 1)
	plane := int64(meta.Shape.X) * int64(meta.Shape.Y) * int64(vs)
	for z0 := 0; z0 < int(meta.Shape.Z); z0 += slabZ {
		nz := min(slabZ, int(meta.Shape.Z)-z0)
		buf := make([]byte, plane*int64(nz))
		if _, err := src.ReadAt(buf, plane*int64(z0)); err != nil {
			return fmt.Errorf("read z-planes %d..%d: %w", z0, z0+nz, err)
		}
		slab := Raw{Shape: storage.Shape{X: meta.Shape.X, Y: meta.Shape.Y, Z: uint32(nz)}, DataType: meta.DataType, Data: buf}
		zOff := z0 // the slab's first plane at the current level
		for lod := uint32(0); lod < meta.LODCount; lod++ {
			if lod > 0 {
				slab = Downsample(slab)
				zOff /= 2
			}
			if err := cutSlab(slab, meta.BrickShape, lod, zOff, emit); err != nil {
				return err
			}
		}
	}
	return nil
}

// cutSlab emits the bricks of one slab at one level; zOff is the slab's
// first plane in the level's coordinates (a multiple of the brick depth).
func cutSlab(r Raw, b storage.Shape, lod uint32, zOff int, emit func(Brick) error) error {
	vs := r.DataType.Size()
	bz0 := zOff / int(b.Z)
	gx := (int(r.Shape.X) + int(b.X) - 1) / int(b.X)
	gy := (int(r.Shape.Y) + int(b.Y) - 1) / int(b.Y)
	gz := (int(r.Shape.Z) + int(b.Z) - 1) / int(b.Z)
	for z := range gz {
		for y := range gy {
			for x := range gx {
				out := make([]byte, int(b.X)*int(b.Y)*int(b.Z)*vs)
				for k := range int(b.Z) {
					sz := z*int(b.Z) + k
					if sz >= int(r.Shape.Z) {
						break
					}
					for j := range int(b.Y) {
						sy := y*int(b.Y) + j
						if sy >= int(r.Shape.Y) {
							break
						}
						sx := x * int(b.X)
						n := min(int(b.X), int(r.Shape.X)-sx)
						src := ((sz*int(r.Shape.Y)+sy)*int(r.Shape.X) + sx) * vs
						dst := ((k*int(b.Y) + j) * int(b.X)) * vs
						copy(out[dst:dst+n*vs], r.Data[src:src+n*vs])
					}
				}
				key := storage.BrickKey{LOD: lod, X: uint32(x), Y: uint32(y), Z: uint32(bz0 + z)}
				if err := emit(Brick{Key: key, Value: out}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
