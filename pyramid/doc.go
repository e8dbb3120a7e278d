// Package pyramid turns a raw volume (voxels little-endian, x fastest, then
// y, then z) into the bricks of a go-ldm volume: it cuts each level of
// detail into bricks and builds the LOD pyramid, each level the mean of
// 2x2x2 voxels of the level below (fewer at odd edges), so level l has
// shape ceil(shape / 2^l).
//
// Every brick has the full brick shape: voxels outside the volume are zero.
// A brick's bytes are its voxels little-endian, x fastest.
//
// Cut reads the source in slabs of z-planes, so memory follows the slab
// (x * y * brick.z * 2^(lods-1) voxels), not the volume. The package also
// defines the demo phantom (see Phantom and PhantomValue), which servers
// create on request and tests use as known data.
//
// Users: client.Import sends the bricks Cut makes as a volume's tiles; a
// server writes the phantom through the same Cut.
//
// Invariants:
//   - Cut emits every brick of every level exactly once, BrickCount(meta)
//     in all; the bricks of level l+1 are computed from level l, never from
//     the source directly, so a level is the same whichever slab it came
//     from.
//   - Bricks are independent allocations owned by the receiver.
//
// The package holds no state; its functions are safe for concurrent use on
// separate inputs.
package pyramid
