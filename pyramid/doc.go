// Package pyramid turns a raw volume (voxels little-endian, x fastest, then
// y, then z) into the bricks of a go-ldm volume: it cuts each level of
// detail into bricks and builds the LOD pyramid, each level the mean of
// 2x2x2 voxels of the level below (fewer at odd edges), so level l has
// shape ceil(shape / 2^l).
//
// Every brick has the full brick shape: voxels outside the volume are zero.
// A brick's bytes are its voxels little-endian, x fastest.
//
// A Builder (and Cut, which runs one) reads the source once, front to
// back, as a stream: level 0 one z-plane at a time, each level's planes
// collected into brick rows (brick-depth planes) and halved into the next
// level as soon as a pair of planes exists, each brick row cut and emitted
// as soon as it is complete. Memory is bounded by one brick row of every
// level plus a read-ahead (Builder.MemoryBound: about 1.4 level-0 brick
// rows), never by the volume's depth or its number of levels; gzip streams
// and generated volumes work as well as files. The package also defines
// the demo phantom (see Phantom and PhantomValue), which servers create on
// request and tests use as known data, and Procedural, a structured
// phantom of any shape and data type whose every voxel at every level is a
// pure function of position (Procedural.Value).
//
// Users: client.Import sends the bricks a Builder makes as a volume's
// tiles; a server writes the phantom through Cut.
//
// Invariants:
//   - A Build emits every brick of every level exactly once, BrickCount(meta)
//     in all (less those BuildOptions.Skip skips); the bricks of level l+1
//     are computed from level l, never from the source directly, with
//     Downsample's arithmetic, so the result is the same as Downsample of
//     the whole volume, level by level.
//   - Bricks are independent allocations owned by the receiver, which may
//     give them back with Builder.Recycle.
//
// The package holds no state; its functions are safe for concurrent use on
// separate inputs.
package pyramid
