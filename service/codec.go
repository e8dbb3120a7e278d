package service

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

// Compressed bricks (storage.Codec). Every tile of a volume is stored in
// the volume's codec, and the tile reads (ReadTile, GetBrick,
// ReadTileStream, StreamBricks) and the Zarr views serve the stored bytes
// as they are, saying the codec (Tile.codec, the Zarr compressor). Only
// what needs voxels decodes on the server: ReadRegion and the Neuroglancer
// precomputed view. Decoding is bounded by the brick's size (see
// zstdcodec.Decode); a stored frame that does not decode to exactly the
// brick is ErrCorrupt, DataLoss to the client, never garbage voxels.
//
// On write (ingestTiles) a tile is converted to its volume's codec once:
// a raw tile sent to a zstd volume is compressed, a zstd tile sent to a
// raw volume decoded, and a zstd tile sent to a zstd volume stored as sent
// once the server has checked that it decodes to exactly the brick's size
// (the checksums the store keeps then cover bytes known to decode;
// zstdcodec.Validate checks it keeping at most a window). A tile's crc32c
// is checked against the bytes as sent. The decoded bytes are counted in
// the ingest budgets before any of this (see ingest_cost.go).
//
// The codec a read reports is looked up when the read is served, after the
// tile is read: a volume deleted and created again with another codec in
// between may answer with the wrong codec once. Clients that pass the
// volume's generation (ReadTile, GetBrick, ReadRegion) are not exposed.

// volumeCodec returns the codec of a volume's tiles for responses, raw when
// the volume cannot be looked up (the read that follows reports why).
func (s *Server) volumeCodec(volume string) ldmv1.Codec {
	info, err := s.store.Volume(volume)
	if err != nil {
		return ldmv1.Codec_CODEC_RAW
	}
	return apiconv.CodecToAPI(info.Codec.Kind)
}

// tileToAPI is apiconv.TileToAPI with the tile's codec.
func tileToAPI(t storage.Tile, c ldmv1.Codec) *ldmv1.Tile {
	out := apiconv.TileToAPI(t)
	out.Codec = c
	return out
}

// brickBytes is the size in bytes of one brick of info's volume.
func brickBytes(info storage.VolumeInfo) int {
	bs := brickShape(info)
	return int(bs.X) * int(bs.Y) * int(bs.Z) * info.DataType.Size()
}

// checkStoredBrick returns an ErrCorrupt error unless stored, brick key of
// info's volume as stored, is a brick in the volume's codec: the brick's
// size for a raw volume, a frame that declares the brick's size for a zstd
// one (its content is checked by whoever decodes it).
func checkStoredBrick(info storage.VolumeInfo, key storage.BrickKey, stored []byte) error {
	if info.Codec.Kind != storage.CodecZstd {
		return checkBrickBytes(info, key, len(stored))
	}
	if err := zstdcodec.CheckHeader(stored, brickBytes(info)); err != nil {
		return fmt.Errorf("%w: brick %v of zstd volume %q: %v", storage.ErrCorrupt, key, info.Name, err)
	}
	return nil
}

// decodeBrick returns the voxels of brick key of info's volume from its
// stored bytes: stored itself for a raw volume, the decoded frame (in dst
// when its capacity suffices) for a zstd one. Errors wrap ErrCorrupt.
func decodeBrick(info storage.VolumeInfo, key storage.BrickKey, stored, dst []byte) ([]byte, error) {
	if info.Codec.Kind != storage.CodecZstd {
		if err := checkBrickBytes(info, key, len(stored)); err != nil {
			return nil, err
		}
		return stored, nil
	}
	out, err := zstdcodec.Decode(dst, stored, brickBytes(info))
	if err != nil {
		return nil, fmt.Errorf("%w: brick %v of zstd volume %q: %v", storage.ErrCorrupt, key, info.Name, err)
	}
	return out, nil
}

// errBadFrame is a tile sent as CODEC_ZSTD whose frame does not decode to
// what its volume expects.
var errBadFrame = errors.New("bad zstd frame")

// ingestTiles converts tiles, sent with codecs (one per tile), to volume's
// codec in place, checking each tile's crc32c against the bytes as sent
// first. It returns an error naming the field for a bad checksum or frame.
func (s *Server) ingestTiles(volume string, tiles []storage.Tile, codecs []ldmv1.Codec) error {
	plain := true
	for _, c := range codecs {
		plain = plain && c != ldmv1.Codec_CODEC_ZSTD
	}
	info, err := s.store.Volume(volume)
	if err != nil {
		if plain {
			return nil // the append reports it
		}
		return err
	}
	if plain && info.Codec.Kind == storage.CodecRaw {
		return nil // the common case: nothing to convert
	}
	// Tiles are converted in parallel, one per core at a time (compressing
	// is the cost of ingest into a zstd volume).
	workers := min(len(tiles), runtime.GOMAXPROCS(0))
	errs := make([]error, len(tiles))
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				errs[i] = s.ingestTile(volume, info, &tiles[i], codecs[i])
			}
		})
	}
	for i := range tiles {
		next <- i
	}
	close(next)
	wg.Wait()
	return firstError(errs)
}

// firstError returns the first non-nil error of errs, or nil.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// ingestTile converts one tile, sent with codec c, to the codec of info's
// volume (see ingestTiles).
func (s *Server) ingestTile(volume string, info storage.VolumeInfo, t *storage.Tile, c ldmv1.Codec) error {
	brick := brickBytes(info)
	if c != ldmv1.Codec_CODEC_UNSPECIFIED && c != ldmv1.Codec_CODEC_RAW && c != ldmv1.Codec_CODEC_ZSTD {
		return invalidField("tile.codec", "unknown codec %d (want CODEC_RAW or CODEC_ZSTD)", c)
	}
	if t.CRC32C != 0 && storage.Checksum(t.Value) != t.CRC32C {
		return withField("tile.crc32c", fmt.Errorf("%w: crc32c %08x does not match the %d bytes of the tile as sent", storage.ErrCorrupt, t.CRC32C, len(t.Value)))
	}
	want := brick
	if !t.HasKey {
		want = -1 // a tile that is not a brick may have any size
	}
	zstdIn := c == ldmv1.Codec_CODEC_ZSTD
	switch {
	case zstdIn:
		size := want
		if size < 0 {
			n, err := zstdcodec.ContentSize(t.Value)
			if err != nil {
				return withField("tile.value", fmt.Errorf("%w: %w: %v", storage.ErrInvalidArgument, errBadFrame, err))
			}
			if n > uint64(s.maxTile) {
				return withField("tile.value", fmt.Errorf("%w: the frame declares %d bytes of content, limit %d", storage.ErrTooLarge, n, s.maxTile))
			}
			size = int(n)
		}
		// For a zstd volume the frame is only checked (stored as sent):
		// Validate drops what it decodes as it goes.
		var raw []byte
		var err error
		if info.Codec.Kind == storage.CodecRaw {
			raw, err = zstdcodec.Decode(nil, t.Value, size)
		} else {
			err = zstdcodec.Validate(t.Value, size)
		}
		if err != nil {
			return withField("tile.value", fmt.Errorf("%w: %w: a CODEC_ZSTD tile of volume %q must be one frame with its content size in the header, which must be %d bytes (the brick's size): %v",
				storage.ErrInvalidArgument, errBadFrame, volume, size, err))
		}
		if info.Codec.Kind == storage.CodecRaw {
			t.Value = raw
		}
	default:
		if want >= 0 && len(t.Value) != want && info.Codec.Kind == storage.CodecZstd {
			return withField("tile.value", fmt.Errorf("%w: a brick of volume %q is %d bytes raw, got %d", storage.ErrInvalidArgument, volume, want, len(t.Value)))
		}
		if info.Codec.Kind == storage.CodecZstd {
			// Into a buffer of the frame's largest size, which the ingest
			// budgets counted (compressedBytes): Encode never grows it.
			t.Value = zstdcodec.Encode(make([]byte, 0, zstdcodec.MaxEncodedSize(len(t.Value))), t.Value, info.Codec.Level)
		}
	}
	t.CRC32C = 0 // the store computes it over the bytes it stores
	return nil
}

// validateCodec checks the codec fields of a CreateVolume request, naming
// the field of each problem.
func validateCodec(v *ldmv1.Volume) error {
	switch c, l := v.GetCodec(), v.GetCodecLevel(); c {
	case ldmv1.Codec_CODEC_UNSPECIFIED, ldmv1.Codec_CODEC_RAW:
		if l != 0 {
			return invalidField("volume.codec_level", "codec_level %d: a raw volume has no level (set codec to CODEC_ZSTD, or leave codec_level 0)", l)
		}
	case ldmv1.Codec_CODEC_ZSTD:
		if l < 0 || l > storage.MaxZstdLevel {
			return invalidField("volume.codec_level", "zstd level %d (want 1 to %d, or 0 for %d)", l, storage.MaxZstdLevel, storage.DefaultZstdLevel)
		}
	default:
		return invalidField("volume.codec", "unknown codec %d (want CODEC_RAW or CODEC_ZSTD)", c)
	}
	return nil
}
