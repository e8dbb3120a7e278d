package client

import (
	"fmt"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
)

// ZstdCompression is the client option that lets a Connect client accept
// zstd-compressed responses besides gzip (and send zstd-compressed
// requests with connect.WithSendCompression("zstd")). Clients made by New
// have it. maxBytes bounds a decompressed message (0 means 1 GiB).
func ZstdCompression(maxBytes int64) connect.ClientOption {
	if maxBytes <= 0 {
		maxBytes = 1 << 30
	}
	return connect.WithAcceptCompression("zstd",
		func() connect.Decompressor { return zstdcodec.NewDecompressor(maxBytes) },
		func() connect.Compressor { return zstdcodec.NewCompressor(nil) },
	)
}

// BrickBytes is the size in bytes of one brick of vol (its voxels, raw).
func BrickBytes(vol *ldmv1.Volume) int {
	bs := vol.GetBrickShape()
	x, y, z := bs.GetX(), bs.GetY(), bs.GetZ()
	if x == 0 && y == 0 && z == 0 {
		x, y, z = 64, 64, 64
	}
	return int(x) * int(y) * int(z) * dataTypeSize(vol.GetDataType())
}

func dataTypeSize(d ldmv1.DataType) int {
	switch d {
	case ldmv1.DataType_DATA_TYPE_UINT8:
		return 1
	case ldmv1.DataType_DATA_TYPE_UINT16, ldmv1.DataType_DATA_TYPE_INT16:
		return 2
	case ldmv1.DataType_DATA_TYPE_UINT32, ldmv1.DataType_DATA_TYPE_FLOAT32:
		return 4
	}
	return 0
}

// BrickVoxels returns the voxels of brick tile t of volume vol (as
// GetVolume returns it): t's value for a raw tile, the decoded frame for a
// zstd one. Decoding never allocates more than one brick: a frame that
// claims or decodes to another size, or is damaged, is an error.
func BrickVoxels(vol *ldmv1.Volume, t *ldmv1.Tile) ([]byte, error) {
	want := BrickBytes(vol)
	switch t.GetCodec() {
	case ldmv1.Codec_CODEC_UNSPECIFIED, ldmv1.Codec_CODEC_RAW:
		if len(t.GetValue()) != want {
			return nil, fmt.Errorf("brick %v of %s has %d bytes, want %d", t.GetKey(), vol.GetName(), len(t.GetValue()), want)
		}
		return t.GetValue(), nil
	case ldmv1.Codec_CODEC_ZSTD:
		out, err := zstdcodec.Decode(nil, t.GetValue(), want)
		if err != nil {
			return nil, fmt.Errorf("brick %v of %s: %w", t.GetKey(), vol.GetName(), err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("brick %v of %s: unknown codec %v: update the client", t.GetKey(), vol.GetName(), t.GetCodec())
}

// CompressTile replaces the raw value of t with one zstd frame (content
// size in its header) at level (1..22; 0 means 3), sets its codec and
// clears its crc32c. Send such tiles to a zstd volume to spend the
// compression work on the client (the server then only checks them).
func CompressTile(t *ldmv1.Tile, level int) {
	if t.GetCodec() == ldmv1.Codec_CODEC_ZSTD {
		return
	}
	t.Value = zstdcodec.Encode(nil, t.GetValue(), level)
	t.Codec = ldmv1.Codec_CODEC_ZSTD
	t.Crc32C = 0
}
