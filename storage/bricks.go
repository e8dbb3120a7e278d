package storage

// brickIndex maps brick keys to the offset of their latest tile. Keys whose
// LOD is below 16 and whose coordinates are below 2^20 (every brick of a
// volume up to 2^20 bricks per axis) are packed into one uint64, so an
// entry costs 16 bytes plus map overhead instead of 24; other keys go to a
// second map. It is not safe for concurrent use; volume.bmu guards it.
type brickIndex struct {
	packed map[uint64]uint64
	wide   map[BrickKey]uint64
}

const (
	packedLODBits   = 4
	packedCoordBits = 20
)

// newBrickIndex returns an empty index with room for about hint keys.
func newBrickIndex(hint int) *brickIndex {
	return &brickIndex{packed: make(map[uint64]uint64, hint), wide: map[BrickKey]uint64{}}
}

func packKey(k BrickKey) (uint64, bool) {
	const lim = 1 << packedCoordBits
	if k.LOD >= 1<<packedLODBits || k.X >= lim || k.Y >= lim || k.Z >= lim {
		return 0, false
	}
	return uint64(k.LOD)<<(3*packedCoordBits) | uint64(k.X)<<(2*packedCoordBits) | uint64(k.Y)<<packedCoordBits | uint64(k.Z), true
}

func unpackKey(p uint64) BrickKey {
	const mask = 1<<packedCoordBits - 1
	return BrickKey{
		LOD: uint32(p >> (3 * packedCoordBits)),
		X:   uint32(p>>(2*packedCoordBits)) & mask,
		Y:   uint32(p>>packedCoordBits) & mask,
		Z:   uint32(p) & mask,
	}
}

func (x *brickIndex) set(k BrickKey, off uint64) {
	if p, ok := packKey(k); ok {
		x.packed[p] = off
		return
	}
	x.wide[k] = off
}

func (x *brickIndex) get(k BrickKey) (uint64, bool) {
	if p, ok := packKey(k); ok {
		off, ok := x.packed[p]
		return off, ok
	}
	off, ok := x.wide[k]
	return off, ok
}

// level returns the keys at one level of detail.
func (x *brickIndex) level(lod uint32) map[BrickKey]uint64 {
	out := map[BrickKey]uint64{}
	if lod < 1<<packedLODBits {
		for p, off := range x.packed {
			if uint32(p>>(3*packedCoordBits)) == lod {
				out[unpackKey(p)] = off
			}
		}
	}
	for k, off := range x.wide {
		if k.LOD == lod {
			out[k] = off
		}
	}
	return out
}
