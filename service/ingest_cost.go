package service

import (
	"context"
	"fmt"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

// Ingest budgets of compressed tiles. A CODEC_ZSTD tile is small as sent
// and large once decoded: converting it to a raw volume's codec holds its
// content until the batch is appended, and checking a frame for a zstd
// volume decodes it (zstdcodec.Validate, at most its content). So the
// ingest budgets (per stream and server-wide) and the batch size count a
// zstd tile as the bytes sent plus the content size its frame header
// declares, taken before anything is decoded and held until the batch is
// appended; the conversions of a batch, which run in parallel, are covered
// by what its tiles took. A tile whose count cannot fit a budget's share
// is refused (ResourceExhausted) instead of being decoded.
//
// A raw tile sent to a zstd volume is compressed into a new buffer while
// the tile as sent is still held, so it counts as the bytes sent plus the
// largest frame it can compress to (zstdcodec.MaxEncodedSize, the
// buffer's capacity), taken before it is compressed: the tiles held,
// queued or being compressed, stay within the budgets. (A unary write's
// bytes as sent are held by the call already; only its compressed copy is
// counted.) The encoders' own state, pooled, one per core at a time, is
// not counted.

// decodedBytes returns the content size the frame of t, a tile for volume,
// declares: 0 for a tile that is not CODEC_ZSTD. A frame without a content
// size, a brick's frame that does not declare the brick's size
// (InvalidArgument), or a frame that declares more than the largest tile
// (ResourceExhausted) is an error naming tile.value, found without
// decoding anything.
func (s *Server) decodedBytes(volume string, t *ldmv1.Tile) (int64, error) {
	if t.GetCodec() != ldmv1.Codec_CODEC_ZSTD {
		return 0, nil
	}
	n, err := zstdcodec.ContentSize(t.GetValue())
	if err != nil {
		return 0, withField("tile.value", fmt.Errorf("%w: %w: a CODEC_ZSTD tile must be one zstd frame with its content size in the header: %v", storage.ErrInvalidArgument, errBadFrame, err))
	}
	if t.GetKey() != nil {
		// The volume's lookup failing is reported by the append.
		if info, err := s.store.Volume(volume); err == nil && n != uint64(brickBytes(info)) {
			return 0, withField("tile.value", fmt.Errorf("%w: %w: a CODEC_ZSTD brick of volume %q must be one frame whose header declares the brick's size, %d bytes; this one declares %d",
				storage.ErrInvalidArgument, errBadFrame, volume, brickBytes(info), n))
		}
	}
	if n > uint64(s.maxTile) {
		return 0, withField("tile.value", fmt.Errorf("%w: the zstd frame declares %d bytes of content, more than the largest tile of %d bytes (the server's --max-tile-bytes): send smaller tiles", storage.ErrTooLarge, n, s.maxTile))
	}
	return int64(n), nil
}

// compressedBytes returns the largest frame a raw tile t sent to a zstd
// volume compresses to (the buffer ingestTile compresses it into); 0 for a
// CODEC_ZSTD tile or a volume that is not zstd (or cannot be looked up: the
// append reports it).
func (s *Server) compressedBytes(volume string, t *ldmv1.Tile) int64 {
	if t.GetCodec() == ldmv1.Codec_CODEC_ZSTD {
		return 0
	}
	if info, err := s.store.Volume(volume); err != nil || info.Codec.Kind != storage.CodecZstd {
		return 0
	}
	return int64(zstdcodec.MaxEncodedSize(len(t.GetValue())))
}

// ingestExtra returns what a tile for volume holds beyond its bytes as
// sent while it is converted to the volume's codec: the content a zstd
// frame declares (decodedBytes), or the largest frame a raw tile sent to a
// zstd volume compresses to (compressedBytes), and whether that is a
// compressed copy.
func (s *Server) ingestExtra(volume string, t *ldmv1.Tile) (extra int64, compressed bool, err error) {
	if extra, err = s.decodedBytes(volume, t); err != nil || extra > 0 {
		return extra, false, err
	}
	if c := s.compressedBytes(volume, t); c > 0 {
		return c, true, nil
	}
	return 0, false, nil
}

// tooLargeToIngest returns an error unless a tile that costs cost bytes, of
// which extra are decoded content or (compressed) a compressed copy, fits
// the share of the server's ingest budget and, for a stream, of its own
// (nil for a unary call). A tile with nothing to convert always fits: a
// budget takes a larger one alone.
func (s *Server) tooLargeToIngest(extra, cost int64, compressed bool, own *byteBudget) error {
	if extra == 0 {
		return nil
	}
	limit, name := s.ingest.share(cost), "--max-ingest-bytes (service.Config.MaxIngestBytes)"
	if own != nil && own.share(cost) < limit {
		limit, name = own.share(cost), "--max-stream-ingest-bytes (service.Config.MaxStreamIngestBytes)"
	}
	if cost <= limit {
		return nil
	}
	if compressed {
		return withField("tile.value", fmt.Errorf("%w: a raw tile of %d bytes sent to a zstd volume is compressed on the server into a buffer of up to %d bytes; with the tile it would hold %d bytes, more than the %d bytes one tile may take of the server's ingest limit %s (a tile above 1 MiB may take three quarters of it): send it in smaller tiles, or raise the limit",
			storage.ErrTooLarge, cost-extra, extra, cost, limit, name))
	}
	return withField("tile.value", fmt.Errorf("%w: the zstd frame declares %d bytes of content; decoded with the %d bytes sent it would hold %d bytes, more than the %d bytes one tile may take of the server's ingest limit %s (a tile above 1 MiB may take three quarters of it): send it in smaller tiles, or raise the limit",
		storage.ErrTooLarge, extra, cost-extra, cost, limit, name))
}

// acquireUnaryIngest takes the content size a unary write's CODEC_ZSTD
// tile declares, or the largest frame a raw tile sent to a zstd volume
// compresses to, from the server's ingest budget, before it is decoded or
// compressed, and returns what to release once the tile is appended. A
// unary call's bytes as sent are held by the call already; only the
// decoded bytes or the compressed copy are counted.
func (s *Server) acquireUnaryIngest(ctx context.Context, volume string, t *ldmv1.Tile) (func(), error) {
	extra, compressed, err := s.ingestExtra(volume, t)
	if err != nil || extra == 0 {
		return func() {}, err
	}
	if err := s.tooLargeToIngest(extra, extra, compressed, nil); err != nil {
		return nil, err
	}
	held, err := s.ingest.acquire(ctx, extra)
	if err != nil {
		return nil, err
	}
	return func() { s.ingest.release(held) }, nil
}
