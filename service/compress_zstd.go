package service

import (
	"compress/gzip"
	"io"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
)

// Transport compression. Besides gzip, the handlers speak zstd
// (Connect-Content-Encoding / Grpc-Encoding "zstd"): requests compressed
// with it are accepted always, responses are compressed only with
// Config.Compress, like gzip.
//
// A brick already compressed is never compressed twice: the tile reads
// (ReadTile, GetBrick, ReadTileStream, StreamBricks) get compressors that
// look at each response before compressing it, and a response whose tile
// says CODEC_ZSTD (tileIsCompressed) is written in stored blocks of the
// transport's format (zstd raw blocks, deflate stored blocks) instead,
// which costs one copy of the bytes and no compression work.

// limitedZstd returns the zstd compression option of a handler whose
// largest message is max bytes (see limitedGzip); skip, when not nil,
// tells which responses to send in stored blocks.
func limitedZstd(max int, skip func([]byte) bool) connect.HandlerOption {
	return connect.WithCompression("zstd",
		func() connect.Decompressor { return zstdcodec.NewDecompressor(int64(max) + 1) },
		func() connect.Compressor { return zstdcodec.NewCompressor(skip) },
	)
}

// tileCompression returns the options that replace the handlers' gzip and
// zstd compression for the tile reads, with compressors that send an
// already compressed tile in stored blocks.
func tileCompression(max int) connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCompression("gzip", nil, nil),
		connect.WithCompression("zstd", nil, nil),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &limitedGzipReader{max: int64(max) + 1} },
			func() connect.Compressor { return newGzipPassThrough() },
		),
		limitedZstd(max, tileIsCompressed),
	)
}

// tileIsCompressed reports whether msg, the encoding of a response whose
// field 1 is a Tile, carries a tile whose codec is CODEC_ZSTD. It reads
// the fields' tags only, skipping over the bytes.
func tileIsCompressed(msg []byte) bool {
	tile, ok := field(msg, 1)
	if !ok {
		return false
	}
	for len(tile) > 0 {
		num, typ, n := protowire.ConsumeTag(tile)
		if n < 0 {
			return false
		}
		tile = tile[n:]
		if num == 5 && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(tile)
			return m > 0 && v == uint64(ldmv1.Codec_CODEC_ZSTD)
		}
		m := protowire.ConsumeFieldValue(num, typ, tile)
		if m < 0 {
			return false
		}
		tile = tile[m:]
	}
	return false
}

// field returns the first length-delimited field num of msg.
func field(msg []byte, num protowire.Number) ([]byte, bool) {
	for len(msg) > 0 {
		n, typ, k := protowire.ConsumeTag(msg)
		if k < 0 {
			return nil, false
		}
		msg = msg[k:]
		if n == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(msg)
			return v, m >= 0
		}
		m := protowire.ConsumeFieldValue(n, typ, msg)
		if m < 0 {
			return nil, false
		}
		msg = msg[m:]
	}
	return nil, false
}

// gzipPassThrough is gzip at the default level, or at NoCompression
// (stored deflate blocks) for a response whose tile is already compressed.
type gzipPassThrough struct {
	w               io.Writer
	compress, store *gzip.Writer
	cur             *gzip.Writer
}

func newGzipPassThrough() *gzipPassThrough {
	store, _ := gzip.NewWriterLevel(io.Discard, gzip.NoCompression)
	return &gzipPassThrough{compress: gzip.NewWriter(io.Discard), store: store}
}

func (g *gzipPassThrough) Write(p []byte) (int, error) {
	if g.cur == nil {
		g.cur = g.compress
		if tileIsCompressed(p) {
			g.cur = g.store
		}
		g.cur.Reset(g.w)
	}
	return g.cur.Write(p)
}

func (g *gzipPassThrough) Close() error {
	if g.cur == nil {
		g.cur = g.compress
		g.cur.Reset(g.w)
	}
	return g.cur.Close()
}

func (g *gzipPassThrough) Reset(w io.Writer) { g.w, g.cur = w, nil }
