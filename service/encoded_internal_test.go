package service

import (
	"bytes"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// TestTileCodec_MarshalAppend checks that the kept encoding of a tile
// response is byte for byte what proto.Marshal makes of the same message,
// for the field values that proto3 omits and those it writes, and that
// other messages pass through the codec unchanged.
func TestTileCodec_MarshalAppend(t *testing.T) {
	t.Parallel()
	values := map[string][]byte{"empty": nil, "one_byte": {7}, "127_bytes": bytes.Repeat([]byte{1}, 127), "128_bytes": bytes.Repeat([]byte{2}, 128), "70KiB": bytes.Repeat([]byte{3}, 70<<10)}
	keys := map[string]*storage.BrickKey{"no_key": nil, "zero_key": {}, "lod_only": {LOD: 1}, "full_key": {LOD: 3, X: 1 << 20, Y: 127, Z: 1 << 31}}
	for vn, v := range values {
		for kn, k := range keys {
			for _, off := range []uint64{0, 1, 1 << 40} {
				for _, crc := range []uint32{0, 0xdeadbeef} {
					tile := storage.Tile{Value: v, Offset: off, CRC32C: crc}
					if k != nil {
						tile.HasKey, tile.Key = true, *k
					}
					msgs := map[string]func() proto.Message{
						"read_tile":        func() proto.Message { return &ldmv1.ReadTileResponse{Tile: apiconv.TileToAPI(tile)} },
						"read_tile_stream": func() proto.Message { return &ldmv1.ReadTileStreamResponse{Tile: apiconv.TileToAPI(tile)} },
						"get_brick":        func() proto.Message { return &ldmv1.GetBrickResponse{Tile: apiconv.TileToAPI(tile)} },
					}
					for _, ti := range [][2]uint32{{0, 0}, {1, 0}, {300, 299}, {1 << 31, 1 << 20}} {
						msgs[fmt.Sprintf("stream_bricks_%d_%d", ti[0], ti[1])] = func() proto.Message {
							return &ldmv1.StreamBricksResponse{Tile: apiconv.TileToAPI(tile), Total: ti[0], Index: ti[1]}
						}
					}
					for mn, m := range msgs {
						t.Run(fmt.Sprintf("%s/%s/%s/off%d/crc%x", mn, vn, kn, off, crc), func(t *testing.T) {
							want, err := proto.Marshal(m())
							if err != nil {
								t.Fatal(err)
							}
							e := new(encodedTile)
							if sb, ok := m().(*ldmv1.StreamBricksResponse); ok {
								e.setBricks(sb, tile)
							} else {
								e.setTile(m(), tile)
							}
							prefix := []byte("prefix")
							got, err := tileCodec{}.MarshalAppend(prefix, e)
							if err != nil {
								t.Fatal(err)
							}
							if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
								t.Fatalf("MarshalAppend = %x (after the prefix), want %x", got[len(prefix):], want)
							}
							plain, err := tileCodec{}.Marshal(m())
							if err != nil || !bytes.Equal(plain, want) {
								t.Fatalf("Marshal of the plain message = %x, %v; want %x", plain, err, want)
							}
						})
					}
				}
			}
		}
	}
}

// TestTileCodec_MarshalAppend_missing_brick checks that a StreamBricks
// message without a tile (a missing brick) is marshaled as it is.
func TestTileCodec_MarshalAppend_missing_brick(t *testing.T) {
	t.Parallel()
	m := &ldmv1.StreamBricksResponse{Total: 3, Index: 2, Missing: &ldmv1.BrickKey{Lod: 1, X: 4}}
	want, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	e := new(encodedTile)
	e.setBricks(&ldmv1.StreamBricksResponse{Tile: &ldmv1.Tile{Value: []byte{1}}}, storage.Tile{Value: []byte{1}}) // a kept encoding first
	e.setBricks(m, storage.Tile{})
	got, err := tileCodec{}.MarshalAppend(nil, e)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("MarshalAppend = %x, %v; want %x", got, err, want)
	}
}
