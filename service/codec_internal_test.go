package service

import (
	"errors"
	"testing"

	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

// FuzzDecodeBrick feeds stored bytes of a zstd volume to the decoders of
// ReadRegion and the precomputed view: they either give exactly one brick
// of voxels or an error wrapping storage.ErrCorrupt (DataLoss), never a
// panic and never another size.
func FuzzDecodeBrick(f *testing.F) {
	info := storage.VolumeInfo{VolumeMeta: storage.VolumeMeta{Name: "z", Shape: storage.Shape{X: 16, Y: 16, Z: 8},
		BrickShape: storage.Shape{X: 16, Y: 16, Z: 8}, DataType: storage.Uint16, Codec: storage.Codec{Kind: storage.CodecZstd, Level: 3}}}
	want := brickBytes(info)
	raw := make([]byte, want)
	for i := range raw {
		raw[i] = byte(i / 9)
	}
	f.Add(zstdcodec.Encode(nil, raw, 3))
	f.Add(zstdcodec.Encode(nil, raw[:100], 1))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 2, 0})
	f.Fuzz(func(t *testing.T, stored []byte) {
		key := storage.BrickKey{}
		out, err := decodeBrick(info, key, stored, nil)
		hdr := checkStoredBrick(info, key, stored)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if len(out) != want {
			t.Fatalf("decoded %d bytes, a brick has %d", len(out), want)
		}
		if hdr != nil {
			t.Fatalf("a frame that decodes fails the header check: %v", hdr)
		}
	})
}
