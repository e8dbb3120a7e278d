package service

import (
	"context"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// Tiles is the data the handlers serve: a set of volumes, each an
// append-only log of tiles. It follows storage.LDM without Close (the
// service never closes the store; its owner does). The single-node store
// (storage.Memory, storage.Store) and a replicated cluster node satisfy it.
//
// Implementations must be safe for concurrent use and return errors that
// wrap the sentinels of package storage.
type Tiles interface {
	CreateVolume(ctx context.Context, m storage.VolumeMeta) (storage.VolumeInfo, error)
	Volume(name string) (storage.VolumeInfo, error)
	Volumes() ([]storage.VolumeInfo, error)
	DeleteVolume(ctx context.Context, name string) error
	Append(ctx context.Context, volume string, tiles ...storage.Tile) (first uint64, err error)
	Read(volume string, offset uint64) (storage.Tile, error)
	Brick(volume string, key storage.BrickKey) (storage.Tile, error)
	Bricks(volume string, lod uint32) (map[storage.BrickKey]uint64, error)
	Wait(ctx context.Context, volume string, offset uint64) error
}

// ReadBarrier is an optional capability of a Tiles value. ReadBarrier
// returns once the node has confirmed it leads and has applied every write
// committed before the call, so a read that follows it is linearizable. It
// returns an error wrapping storage.ErrNotLeader on a follower.
//
// Reads that ask for CONSISTENCY_LINEARIZABLE call it first; when the Tiles
// value lacks it (a single node), the read is served locally, which is then
// linearizable already.
type ReadBarrier interface {
	ReadBarrier(ctx context.Context) error
}

// ReaderInto is an optional capability of a Tiles value: Read into a
// caller-supplied buffer. ReadInto reads the tile at offset into buf[:n]
// when cap(buf) is at least the tile's length n, and into a new buffer
// otherwise; the returned Value aliases buf in the first case. Streams use
// it to read every tile into one reused buffer instead of allocating one
// per tile.
type ReaderInto interface {
	ReadInto(volume string, offset uint64, buf []byte) (storage.Tile, error)
}

// Membership is an optional capability of a Tiles value: cluster
// membership for ClusterService. When the Tiles value lacks it, GetServers
// answers with this node alone and RemoveServer and TransferLeader fail
// with FailedPrecondition.
type Membership interface {
	// Servers lists every member of the cluster.
	Servers(ctx context.Context) ([]*ldmv1.Server, error)
	// RemoveServer removes a member by id.
	RemoveServer(ctx context.Context, id string) error
	// TransferLeader hands leadership to id (any voter when empty) and
	// returns the new leader's id.
	TransferLeader(ctx context.Context, id string) (string, error)
}

var (
	_ Tiles = (*storage.Memory)(nil)
	_ Tiles = (storage.LDM)(nil)
)
