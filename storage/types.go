package storage

import (
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"regexp"
	"slices"
	"time"
)

// Sentinel errors. Every error returned by a Store wraps one of these, so
// callers compare with errors.Is.
var (
	// ErrNotFound: the volume, offset's volume, or brick does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: a volume with that name already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalidName: a volume name does not match NamePattern.
	ErrInvalidName = errors.New("invalid volume name")
	// ErrInvalidArgument: a malformed request (bad shape, data type, ...).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrOutOfRange: an offset at or past the end of a volume's log.
	ErrOutOfRange = errors.New("offset out of range")
	// ErrTooLarge: a tile bigger than the store's MaxTileBytes.
	ErrTooLarge = errors.New("tile too large")
	// ErrCorrupt: stored bytes fail their checksum; they are never served.
	ErrCorrupt = errors.New("corrupt data")
	// ErrClosed: the store (or a deleted volume) is closed.
	ErrClosed = errors.New("store closed")
	// ErrNotLeader: a write reached a node that cannot accept it. Replicated
	// implementations wrap it in *NotLeaderError.
	ErrNotLeader = errors.New("not the leader")
)

// NotLeaderError says which node leads, so a client can go there.
type NotLeaderError struct {
	LeaderID   string // empty when no leader is known
	LeaderAddr string // the leader's RPC address (host:port), empty when unknown
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "not the leader: no leader is known yet"
	}
	return fmt.Sprintf("not the leader: the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// DefaultMaxTileBytes is the largest tile accepted by default (256 MiB).
const DefaultMaxTileBytes = 256 << 20

// NamePattern is the grammar of volume names.
const NamePattern = `^[a-z0-9][a-z0-9._-]{0,63}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidateName returns an error wrapping ErrInvalidName unless name matches
// NamePattern and is not "." or "..".
func ValidateName(name string) error {
	if !nameRE.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%w: %q must match %s", ErrInvalidName, name, NamePattern)
	}
	return nil
}

// DataType is the type of one voxel. The values match ldm.v1.DataType.
type DataType uint8

const (
	DataTypeUnspecified DataType = 0
	Uint8               DataType = 1
	Uint16              DataType = 2
	Int16               DataType = 3
	Uint32              DataType = 4
	Float32             DataType = 5
)

// Size returns the bytes per voxel, or 0 for an unknown type.
func (d DataType) Size() int {
	switch d {
	case Uint8:
		return 1
	case Uint16, Int16:
		return 2
	case Uint32, Float32:
		return 4
	}
	return 0
}

func (d DataType) String() string {
	switch d {
	case Uint8:
		return "uint8"
	case Uint16:
		return "uint16"
	case Int16:
		return "int16"
	case Uint32:
		return "uint32"
	case Float32:
		return "float32"
	}
	return fmt.Sprintf("DataType(%d)", d)
}

// ParseDataType parses the names String returns.
func ParseDataType(s string) (DataType, error) {
	for d := Uint8; d <= Float32; d++ {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%w: data type %q (want uint8, uint16, int16, uint32 or float32)", ErrInvalidArgument, s)
}

// Shape is an extent in voxels.
type Shape struct{ X, Y, Z uint32 }

// BrickKey locates a brick: level of detail and position in brick units.
type BrickKey struct{ LOD, X, Y, Z uint32 }

// DefaultBrickShape is the brick shape used when a volume names none.
var DefaultBrickShape = Shape{64, 64, 64}

// VolumeMeta describes a volume. It is immutable after creation.
type VolumeMeta struct {
	Name       string
	Shape      Shape // voxels at LOD 0
	DataType   DataType
	BrickShape Shape  // zero means DefaultBrickShape
	LODCount   uint32 // zero means 1
	Spacing    []float64
	// Transform is the LOD 0 voxel-to-world affine in mm, 16 values
	// row-major (see Affine); nil means diag(Spacing, 1). When set, Spacing
	// is the lengths of its first three columns (Normalize fills it).
	Transform []float64
	Space     Space // the world space of the transform
	Labels    map[string]string
	// Codec is how the volume's tiles are stored (see Codec); the zero
	// value is raw.
	Codec     Codec
	CreatedAt time.Time // set by the store when zero
	// Index is the replication (Raft) index of the command that created the
	// volume. It follows the rule of Tile.Index: set by the layer that
	// replicates, 0 on a single node, left zero by every other caller.
	Index uint64
}

// VolumeInfo is a volume's metadata plus the state of its log.
type VolumeInfo struct {
	VolumeMeta
	NextOffset uint64 // number of tiles; the offset the next append gets
	SizeBytes  uint64 // total tile value bytes
}

// Tile is one record of a volume's log.
type Tile struct {
	Offset uint64 // assigned by the store on append
	Value  []byte
	CRC32C uint32 // computed by the store on append; checked on read
	HasKey bool   // whether Key is set
	Key    BrickKey
	// Index is the replication (Raft) index of the command that wrote the
	// tile, or 0 when nothing replicated it. The layer that replicates
	// sets it, never an API caller:
	//   - a replicated LDM (cluster.Node) assigns the index of its own log
	//     and ignores the value its caller passed;
	//   - a store (Store, Memory) records the value it is given and returns
	//     it unchanged, because it is the storage a replication layer writes
	//     through (cluster's FSM sets the Raft index before appending, and
	//     the last applied index is recovered from the data itself).
	// Every other caller leaves it zero, so a single node reports 0. On
	// every LDM, Read, Brick and Iterate return the same Index for a tile,
	// the tiles of one Append share one Index, and Index never decreases
	// with the offset. storage/ldmtest asserts this.
	Index uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C (Castagnoli) of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// clone returns a copy of m that shares no slice or map with it (Labels
// is never nil in the copy).
func (m VolumeMeta) clone() VolumeMeta {
	m.Spacing = slices.Clone(m.Spacing)
	m.Transform = slices.Clone(m.Transform)
	labels := make(map[string]string, len(m.Labels))
	maps.Copy(labels, m.Labels)
	m.Labels = labels
	return m
}

// Normalize fills defaults into m (brick shape, LOD count) and validates it.
// The returned error wraps ErrInvalidName or ErrInvalidArgument.
func (m *VolumeMeta) Normalize() error {
	if err := ValidateName(m.Name); err != nil {
		return err
	}
	if m.Shape.X == 0 || m.Shape.Y == 0 || m.Shape.Z == 0 {
		return fmt.Errorf("%w: shape %dx%dx%d must be positive in x, y and z", ErrInvalidArgument, m.Shape.X, m.Shape.Y, m.Shape.Z)
	}
	if m.DataType.Size() == 0 {
		return fmt.Errorf("%w: data type %d (want uint8, uint16, int16, uint32 or float32)", ErrInvalidArgument, m.DataType)
	}
	if m.BrickShape == (Shape{}) {
		m.BrickShape = DefaultBrickShape
	}
	if m.BrickShape.X == 0 || m.BrickShape.Y == 0 || m.BrickShape.Z == 0 || m.BrickShape.X > 1024 || m.BrickShape.Y > 1024 || m.BrickShape.Z > 1024 {
		return fmt.Errorf("%w: brick shape %dx%dx%d must be 1..1024 in x, y and z", ErrInvalidArgument, m.BrickShape.X, m.BrickShape.Y, m.BrickShape.Z)
	}
	if m.LODCount == 0 {
		m.LODCount = 1
	}
	if m.LODCount > 32 {
		return fmt.Errorf("%w: lod_count %d (at most 32)", ErrInvalidArgument, m.LODCount)
	}
	if len(m.Spacing) != 0 && len(m.Spacing) != 3 {
		return fmt.Errorf("%w: spacing has %d values (want 0 or 3)", ErrInvalidArgument, len(m.Spacing))
	}
	if err := m.Codec.normalize(); err != nil {
		return err
	}
	return m.normalizeSpace()
}

// LODShape returns the volume's shape in voxels at level lod: each level
// halves x, y and z, rounding up.
func (m *VolumeMeta) LODShape(lod uint32) Shape {
	s := m.Shape
	for i := uint32(0); i < lod; i++ {
		s = Shape{halfUp(s.X), halfUp(s.Y), halfUp(s.Z)}
	}
	return s
}

// halfUp is n/2 rounded up, without overflowing at math.MaxUint32.
func halfUp(n uint32) uint32 { return n/2 + n%2 }

// ceilDiv is n/d rounded up, without overflowing at math.MaxUint32.
func ceilDiv(n, d uint32) uint32 { return uint32((uint64(n) + uint64(d) - 1) / uint64(d)) }

// BrickGrid returns the number of bricks in x, y and z at level lod.
func (m *VolumeMeta) BrickGrid(lod uint32) Shape {
	s := m.LODShape(lod)
	b := m.BrickShape
	return Shape{ceilDiv(s.X, b.X), ceilDiv(s.Y, b.Y), ceilDiv(s.Z, b.Z)}
}
