package storage

import "context"

// LDM is the tile store behind one interface: a set of volumes, each an
// append-only log of tiles. The file store (Open) and the memory store
// (NewMemory) implement it, and one conformance suite tests both.
//
// All methods are safe for concurrent use. Reads never block appends.
type LDM interface {
	// CreateVolume creates an empty volume. It normalizes m (see
	// VolumeMeta.Normalize) and fails with ErrExists if the name is taken.
	// m.Index follows the rule of Tile.Index.
	CreateVolume(ctx context.Context, m VolumeMeta) (VolumeInfo, error)
	// Volume returns a volume's metadata and log state, or ErrNotFound.
	Volume(name string) (VolumeInfo, error)
	// Volumes lists every volume, sorted by name.
	Volumes() ([]VolumeInfo, error)
	// DeleteVolume removes a volume and only its files. Readers and waiters
	// of the volume get ErrNotFound afterwards.
	DeleteVolume(ctx context.Context, name string) error

	// Append appends tiles to a volume in order and returns the offset of
	// the first. It returns once they are durable under the sync policy.
	// Each tile's Offset and CRC32C are set by the store (a non-zero
	// CRC32C in the input is checked first: a mismatch is ErrCorrupt).
	// Index is the replication layer's (see Tile.Index): callers that do
	// not replicate leave it zero; a replicated LDM assigns it.
	// A tile larger than the maximum is ErrTooLarge; nothing is appended
	// unless every tile is valid.
	Append(ctx context.Context, volume string, tiles ...Tile) (first uint64, err error)
	// Read returns the tile at offset: ErrOutOfRange past the end,
	// ErrCorrupt if its checksum fails. The returned Value is owned by the
	// caller.
	Read(volume string, offset uint64) (Tile, error)
	// Brick returns the latest tile written with key, or ErrNotFound.
	Brick(volume string, key BrickKey) (Tile, error)
	// Bricks returns the keys present at one level of detail and the offset
	// of each key's latest tile.
	Bricks(volume string, lod uint32) (map[BrickKey]uint64, error)
	// Wait blocks until the volume's log holds more than offset tiles (so
	// Read(offset) succeeds), the context ends, or the volume is deleted
	// (ErrNotFound) or the store closed (ErrClosed). It does not poll.
	Wait(ctx context.Context, volume string, offset uint64) error

	// Close releases the store. Later calls, a second Close included,
	// fail with ErrClosed.
	Close() error
}
