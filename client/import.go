package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// DefaultCleanupTimeout bounds the DeleteVolume call that removes the volume
// of a failed import when ImportOptions.CleanupTimeout is zero.
const DefaultCleanupTimeout = 30 * time.Second

// ErrBrickTooLarge: the server refused a brick as larger than its tile size
// limit (code ResourceExhausted). An *ImportError matches it with errors.Is;
// import with a smaller brick shape, or raise the server's limit.
var ErrBrickTooLarge = errors.New("brick above the server's tile size limit")

// ImportOptions tunes Import and ImportFile. The zero value works.
type ImportOptions struct {
	// Progress, when not nil, is called once after the volume is created
	// and before the first brick is sent (BricksDone 0), then after every
	// brick the server acknowledges; on success the last call has
	// BricksDone == Bricks. Calls are made one at a time, in order, and
	// none after the import returns; they come from a goroutine of the
	// import, and a slow Progress holds up reading acknowledgements.
	Progress func(Progress)
	// CleanupTimeout bounds the DeleteVolume call that removes the volume
	// after a failed import. It runs even when the import's context was
	// cancelled. Zero means DefaultCleanupTimeout.
	CleanupTimeout time.Duration
	// File chooses what ImportFile reads from a file: the time point of a
	// 4D image. Import ignores it.
	File volfile.Options
	// Resume continues an import into a volume that exists already (an
	// earlier import of the same source that was interrupted): the volume
	// must have the shape, data type, brick shape and levels of detail the
	// import would create. The bricks it holds (VolumeService.ListBricks,
	// asked of the leader) are neither cut nor sent, so the import ends
	// with the volume an uninterrupted import makes, and a failure never
	// deletes it. When no volume of that name exists, Resume imports as
	// usual.
	//
	// A resumed volume keeps its codec: the missing bricks are encoded in
	// it, whatever Codec says, and the bricks it holds are only listed,
	// never compared.
	Resume bool
	// Codec, when set, is the codec of the volume the import creates
	// (instead of the volume's own Codec field), with CodecLevel as its
	// zstd level (0: the server's default, 3). Bricks of a zstd volume are
	// compressed here, on every core, between the pyramid builder and the
	// sender, and sent as zstd frames whose CRC-32C is of the frame, so
	// the server only checks them and the link carries fewer bytes. Unset
	// (and CODEC_RAW) sends raw bricks.
	Codec      ldmv1.Codec
	CodecLevel int32
}

// Progress is a snapshot of an import, given to ImportOptions.Progress.
type Progress struct {
	Volume     string
	Bricks     int   // bricks this import sends, all levels of detail (less those a resumed volume holds)
	BricksDone int   // bricks the server has acknowledged (stored)
	Bytes      int64 // Bricks times the bytes of one brick
	BytesDone  int64 // BricksDone times the bytes of one brick
	// BytesSent is the size of the tiles of the BricksDone bricks as sent:
	// BytesDone for a raw volume, the frames' bytes for a zstd one
	// (BytesDone/BytesSent is the compression ratio so far).
	BytesSent int64
	// Elapsed is the time since the first brick was sent.
	Elapsed time.Duration
}

// ImportStats describes an import, complete or not.
type ImportStats struct {
	// Volume is the volume as the server created it, with the server's
	// defaults filled in; nil if CreateVolume failed.
	Volume *ldmv1.Volume
	// Bricks and Bytes count what the server acknowledged: every brick of
	// every level of detail after a successful import.
	Bricks int
	Bytes  int64
	// BytesSent is the size of the acknowledged bricks' tiles as sent
	// (compressed, for a zstd volume).
	BytesSent int64
	// Skipped counts the bricks a resumed volume held already, which the
	// import did not send.
	Skipped int
	// Levels is the number of levels of detail.
	Levels uint32
	// BrickBytes is the size of one brick (every brick has the full brick
	// shape; see package pyramid).
	BrickBytes int64
	// Elapsed is the time from the first brick sent to the last one
	// acknowledged.
	Elapsed time.Duration
}

// ImportError is the error of an import that failed at or after
// CreateVolume. An import deletes a volume it created before it returns
// one, unless it was interrupted (Kept). Errors.Is matches ErrBrickTooLarge
// when the server refused a brick as too large, and connect.CodeOf gives
// the code of an RPC failure.
//
// A volume is complete when it holds every brick of every level; one that
// an interrupted import kept is not (ListBricks lists fewer keys than its
// expected count), and an import with ImportOptions.Resume completes it.
type ImportError struct {
	// Volume is the name of the volume.
	Volume string
	// Created says this import created the volume. When false and Resumed
	// is false, CreateVolume failed (or a resumed volume did not match):
	// nothing was written and nothing deleted.
	Created bool
	// Resumed says the import continued a volume that existed
	// (ImportOptions.Resume); such a volume is never deleted.
	Resumed bool
	// Kept says the incomplete volume was left with the bricks stored so
	// far, to be resumed: the import was interrupted (its context ended or
	// the server became unreachable), or it was resumed.
	Kept bool
	// Err is the cause: the error of CreateVolume, of reading the source,
	// or of WriteTileStream.
	Err error
	// DeleteErr is why the volume this import created could not be
	// deleted; nil when it was deleted (or was already gone), and when
	// Created is false.
	DeleteErr error
	// BrickShape and BrickBytes describe the bricks sent (zero when Created
	// is false).
	BrickShape storage.Shape
	BrickBytes int64
}

// Error describes the failure, what was left behind and, for bricks over
// the server's limit, their size.
func (e *ImportError) Error() string {
	if !e.Created && !e.Resumed {
		return fmt.Sprintf("create volume %s: %v", e.Volume, e.Err)
	}
	s := fmt.Sprintf("import %s: %v", e.Volume, e.Err)
	if e.tooLarge() {
		s += fmt.Sprintf(" (bricks of %dx%dx%d voxels are %d bytes, above the server's limit: use a smaller brick shape, or raise the server's tile limit)",
			e.BrickShape.X, e.BrickShape.Y, e.BrickShape.Z, e.BrickBytes)
	}
	if e.Kept {
		return s + fmt.Sprintf("; the incomplete volume %q keeps the bricks stored so far: resume the import to complete it, or delete the volume", e.Volume)
	}
	if e.DeleteErr != nil {
		return s + fmt.Sprintf("; removing the incomplete volume %q failed: %v", e.Volume, e.DeleteErr)
	}
	return s + fmt.Sprintf("; the incomplete volume %q was removed", e.Volume)
}

// Unwrap returns Err, and ErrBrickTooLarge when the server refused a brick
// as too large.
func (e *ImportError) Unwrap() []error {
	if e.tooLarge() {
		return []error{e.Err, ErrBrickTooLarge}
	}
	return []error{e.Err}
}

func (e *ImportError) tooLarge() bool {
	return (e.Created || e.Resumed) && connect.CodeOf(e.Err) == connect.CodeResourceExhausted
}

// Importer imports volumes through the generated clients of one server:
// use it where the connection is set up by hand (protocol, TLS,
// interceptors) rather than with New. An Importer holds no state of its
// own; it is safe for concurrent use when its clients are.
type Importer struct {
	Tiles   ldmv1connect.TileServiceClient
	Volumes ldmv1connect.VolumeServiceClient
}

// Import creates vol and sends the bricks of src, every level of detail, as
// its tiles with one WriteTileStream (bricks are sent while earlier ones are
// acknowledged). src holds the volume's voxels at full resolution:
// little-endian, x fastest, then y, then z, exactly shape.x*shape.y*shape.z
// voxels of vol's data type; it is read once, front to back, through an
// io.SectionReader (see ImportReader). When src has a Size method
// (*bytes.Reader, *io.SectionReader, *os.File does not), a wrong size fails
// before anything is created, with an error wrapping
// storage.ErrInvalidArgument.
//
// vol's LodCount and BrickShape are used as given (zero means the server's
// defaults: one level, 64^3 bricks); VolumeFromFile picks levels for a
// file. Import returns nil only when the server acknowledged every brick.
// A failure deletes the volume Import created and returns an *ImportError
// (so the same import can run again), except when the import was
// interrupted: its context ended or the server became unreachable. Then
// the volume keeps what the server stored (ImportError.Kept) and an import
// with ImportOptions.Resume sends the rest. The stats count what the
// server acknowledged.
func (im Importer) Import(ctx context.Context, src io.ReaderAt, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	r, err := sectionOf(src, vol)
	if err != nil {
		return ImportStats{}, err
	}
	return im.ImportReader(ctx, r, vol, opts)
}

// ImportReader is Import from a stream: src is read once, sequentially (a
// gzip stream, a pipe, a pyramid.Procedural's Reader), and must hold
// exactly the volume's voxels; a src that ends early fails the import with
// an error wrapping io.ErrUnexpectedEOF. The pyramid is built with a
// pyramid.Builder, so memory stays bounded by about one brick row of each
// level (Builder.MemoryBound) plus the bricks in flight, whatever the
// volume's size.
func (im Importer) ImportReader(ctx context.Context, src io.Reader, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	return runImport(ctx, im.target(), src, vol, opts)
}

func (im Importer) target() importTarget {
	return importTarget{
		create: func(ctx context.Context, v *ldmv1.Volume) (*ldmv1.Volume, error) {
			res, err := im.Volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v}))
			if err != nil {
				return nil, err
			}
			return res.Msg.GetVolume(), nil
		},
		get: func(ctx context.Context, name string) (*ldmv1.Volume, error) {
			res, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name}))
			if err != nil {
				return nil, err
			}
			return res.Msg.GetVolume(), nil
		},
		remove: func(ctx context.Context, name string) error {
			_, err := im.Volumes.DeleteVolume(ctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: name}))
			return err
		},
		volumes: func() ldmv1connect.VolumeServiceClient { return im.Volumes },
		tiles:   func() ldmv1connect.TileServiceClient { return im.Tiles },
	}
}

// ImportFile reads the volume file at path (NIfTI-1 or NRRD; see
// volfile.Open, and opts.File for a 4D file) and imports it as a new
// volume: vol gives the name and may give brick shape, levels of detail,
// spacing and labels; the rest comes from the file's header (see
// VolumeFromFile). The voxels are streamed (volfile.Image.Voxels), gzip
// included, in one pass. A header that cannot be read, or an uncompressed
// file too short for its header, fails before the volume is created; data
// found short or corrupt while streaming (a truncated gzip file) fails the
// import, which then deletes the volume it created. Errors are volfile's
// (ErrFormat, ErrUnsupported, ErrTruncated), wrapped in an *ImportError
// once the volume exists. Otherwise it behaves as Import.
func (im Importer) ImportFile(ctx context.Context, path string, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	return importFile(ctx, path, vol, opts, im.ImportReader)
}

// Import is Importer.Import through the Client: CreateVolume and
// DeleteVolume are routed and retried as by the methods of the same name,
// and the bricks go to the leader.
func (c *Client) Import(ctx context.Context, src io.ReaderAt, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	r, err := sectionOf(src, vol)
	if err != nil {
		return ImportStats{}, err
	}
	return c.ImportReader(ctx, r, vol, opts)
}

// ImportReader is Importer.ImportReader through the Client (see
// Client.Import); a resumed import lists the volume's bricks on the leader.
func (c *Client) ImportReader(ctx context.Context, src io.Reader, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	return runImport(ctx, importTarget{
		create: func(ctx context.Context, v *ldmv1.Volume) (*ldmv1.Volume, error) {
			res, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: v})
			if err != nil {
				return nil, err
			}
			return res.GetVolume(), nil
		},
		get: func(ctx context.Context, name string) (*ldmv1.Volume, error) {
			res, err := c.GetVolume(ctx, &ldmv1.GetVolumeRequest{Name: name})
			if err != nil {
				return nil, err
			}
			return res.GetVolume(), nil
		},
		remove: func(ctx context.Context, name string) error {
			_, err := c.DeleteVolume(ctx, &ldmv1.DeleteVolumeRequest{Name: name})
			return err
		},
		volumes: func() ldmv1connect.VolumeServiceClient {
			if e := c.pick(true); e != nil {
				return e.volumes
			}
			return nil
		},
		tiles: c.LeaderTiles,
	}, src, vol, opts)
}

// ImportFile is Importer.ImportFile through the Client (see Client.Import).
func (c *Client) ImportFile(ctx context.Context, path string, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	return importFile(ctx, path, vol, opts, c.ImportReader)
}

// sectionOf returns src as a stream of vol's voxel bytes, checking its size
// first when src knows it.
func sectionOf(src io.ReaderAt, vol *ldmv1.Volume) (io.Reader, error) {
	want := int64(vol.GetShape().GetX()) * int64(vol.GetShape().GetY()) * int64(vol.GetShape().GetZ()) * int64(storage.DataType(vol.GetDataType()).Size())
	if s, ok := src.(sized); ok && s.Size() != want {
		return nil, fmt.Errorf("import %s: %w: the source has %d bytes, a %dx%dx%d %s volume %d", vol.GetName(), storage.ErrInvalidArgument,
			s.Size(), vol.GetShape().GetX(), vol.GetShape().GetY(), vol.GetShape().GetZ(), storage.DataType(vol.GetDataType()), want)
	}
	return io.NewSectionReader(src, 0, want), nil
}

func importFile(ctx context.Context, path string, vol *ldmv1.Volume, opts ImportOptions,
	imp func(context.Context, io.Reader, *ldmv1.Volume, ImportOptions) (ImportStats, error)) (ImportStats, error) {
	if vol.GetName() == "" {
		return ImportStats{}, fmt.Errorf("import %s: %w: the volume needs a name", path, storage.ErrInvalidArgument)
	}
	img, err := volfile.Open(path, opts.File)
	if err != nil {
		return ImportStats{}, err
	}
	v := VolumeFromFile(img, vol)
	r, err := img.Voxels()
	if err != nil {
		return ImportStats{}, err
	}
	defer r.Close()
	return imp(ctx, r, v, opts)
}

// VolumeFromFile returns the volume to create for an opened file: a copy
// of base (nil means an empty volume) with the shape and data type of the
// file's header, the header's spacing when base has none, the levels of
// detail until the volume fits in one brick when base has none
// (pyramid.LevelsToFit), the header's transform and space when base has no
// transform (its columns scaled to base's spacing when base sets one, so
// the directions and origin stay the file's), and labels that record the source, each only
// where base has none of that key: source.file (the file's base name),
// source.format, source.byte_order (big-endian files), source.time_point
// ("t of n", 4D files) and nifti.scl_slope and nifti.scl_inter when the
// file scales its values (voxels are imported as stored). base is not
// changed.
func VolumeFromFile(img *volfile.Image, base *ldmv1.Volume) *ldmv1.Volume {
	v := &ldmv1.Volume{}
	if base != nil {
		v = proto.Clone(base).(*ldmv1.Volume)
	}
	v.Shape = apiconv.ShapeToAPI(img.Shape)
	v.DataType = ldmv1.DataType(img.DataType)
	if len(v.Transform) == 0 {
		// The file's transform, its columns rescaled to base's spacing when
		// base sets one (the directions and origin stay the file's).
		a := img.Transform
		if len(v.Spacing) == 3 {
			for c := 0; c < 3; c++ {
				if n := a.ColumnNorm(c); n > 0 {
					for r := 0; r < 3; r++ {
						a[4*r+c] *= v.Spacing[c] / n
					}
				}
			}
		}
		v.Transform = a[:]
		v.Space = apiconv.SpaceToAPI(img.Space)
	}
	if len(v.Spacing) == 0 {
		v.Spacing = append([]float64(nil), img.Spacing[:]...)
	}
	if v.LodCount == 0 {
		brick := apiconv.ShapeFromAPI(v.BrickShape)
		if brick == (storage.Shape{}) {
			brick = storage.DefaultBrickShape
		}
		v.LodCount = pyramid.LevelsToFit(img.Shape, brick)
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	set := func(k, val string) {
		if _, ok := v.Labels[k]; !ok {
			v.Labels[k] = val
		}
	}
	set("source.file", filepath.Base(img.Path()))
	set("source.format", img.Format.String())
	if img.ByteOrder == binary.BigEndian {
		set("source.byte_order", "big-endian")
	}
	if img.TimePoints > 1 {
		set("source.time_point", fmt.Sprintf("%d of %d", img.Options().TimePoint, img.TimePoints))
	}
	if img.ScaleSlope != 0 && (img.ScaleSlope != 1 || img.ScaleInter != 0) {
		set("nifti.scl_slope", strconv.FormatFloat(img.ScaleSlope, 'g', -1, 64))
		set("nifti.scl_inter", strconv.FormatFloat(img.ScaleInter, 'g', -1, 64))
	}
	return v
}

// importTarget is where an import goes: a server through its generated
// clients, or a cluster through a Client.
type importTarget struct {
	create  func(context.Context, *ldmv1.Volume) (*ldmv1.Volume, error)
	get     func(context.Context, string) (*ldmv1.Volume, error)
	remove  func(ctx context.Context, name string) error
	volumes func() ldmv1connect.VolumeServiceClient // of the leader, for ListBricks
	tiles   func() ldmv1connect.TileServiceClient
}

// sized is what a source with a known size offers.
type sized interface{ Size() int64 }
