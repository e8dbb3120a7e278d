package service_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// codecVolume is a test volume: 40x36x20 voxels in 16^3 bricks (3x3x2
// bricks, the last ones padded), its voxels a smooth ramp with noise.
type codecVolume struct {
	name  string
	dtype ldmv1.DataType
	codec ldmv1.Codec
	level int32
}

var codecShape, codecBrick = [3]int{40, 36, 20}, [3]int{16, 16, 16}

func (v codecVolume) api() *ldmv1.Volume {
	return &ldmv1.Volume{
		Name:       v.name,
		Shape:      &ldmv1.Shape{X: uint32(codecShape[0]), Y: uint32(codecShape[1]), Z: uint32(codecShape[2])},
		BrickShape: &ldmv1.Shape{X: uint32(codecBrick[0]), Y: uint32(codecBrick[1]), Z: uint32(codecBrick[2])},
		DataType:   v.dtype,
		Codec:      v.codec,
		CodecLevel: v.level,
	}
}

func dtypeSize(d ldmv1.DataType) int {
	switch d {
	case ldmv1.DataType_DATA_TYPE_UINT8:
		return 1
	case ldmv1.DataType_DATA_TYPE_UINT16, ldmv1.DataType_DATA_TYPE_INT16:
		return 2
	}
	return 4
}

// voxel writes the value at (x, y, z) of the volume's data type to b.
func voxel(d ldmv1.DataType, x, y, z int, b []byte) {
	n := uint32(x*7+y*3+z*11) + uint32((x*2654435761+y*40503+z*97)%5) // ramp plus noise
	switch d {
	case ldmv1.DataType_DATA_TYPE_UINT8:
		b[0] = byte(n)
	case ldmv1.DataType_DATA_TYPE_UINT16:
		binary.LittleEndian.PutUint16(b, uint16(n*37))
	case ldmv1.DataType_DATA_TYPE_INT16:
		binary.LittleEndian.PutUint16(b, uint16(int16(int(n)-300)))
	case ldmv1.DataType_DATA_TYPE_UINT32:
		binary.LittleEndian.PutUint32(b, n*100003)
	case ldmv1.DataType_DATA_TYPE_FLOAT32:
		binary.LittleEndian.PutUint32(b, math.Float32bits(float32(n)*0.25-17))
	}
}

// brickOf returns the raw bytes of brick (bx, by, bz); voxels past the
// volume's edge are zero.
func brickOf(d ldmv1.DataType, bx, by, bz int) []byte {
	vs := dtypeSize(d)
	out := make([]byte, codecBrick[0]*codecBrick[1]*codecBrick[2]*vs)
	for z := range codecBrick[2] {
		for y := range codecBrick[1] {
			for x := range codecBrick[0] {
				gx, gy, gz := bx*codecBrick[0]+x, by*codecBrick[1]+y, bz*codecBrick[2]+z
				if gx >= codecShape[0] || gy >= codecShape[1] || gz >= codecShape[2] {
					continue
				}
				voxel(d, gx, gy, gz, out[((z*codecBrick[1]+y)*codecBrick[0]+x)*vs:])
			}
		}
	}
	return out
}

func brickKeys() [][3]int {
	var keys [][3]int
	for bz := range (codecShape[2] + codecBrick[2] - 1) / codecBrick[2] {
		for by := range (codecShape[1] + codecBrick[1] - 1) / codecBrick[1] {
			for bx := range (codecShape[0] + codecBrick[0] - 1) / codecBrick[0] {
				keys = append(keys, [3]int{bx, by, bz})
			}
		}
	}
	return keys
}

var allDataTypes = []ldmv1.DataType{
	ldmv1.DataType_DATA_TYPE_UINT8, ldmv1.DataType_DATA_TYPE_UINT16, ldmv1.DataType_DATA_TYPE_INT16,
	ldmv1.DataType_DATA_TYPE_UINT32, ldmv1.DataType_DATA_TYPE_FLOAT32,
}

// codecVolumes is every data type, raw and zstd side by side.
func codecVolumes() []codecVolume {
	var out []codecVolume
	for _, d := range allDataTypes {
		out = append(out,
			codecVolume{name: "raw-" + dtypeName(d), dtype: d, codec: ldmv1.Codec_CODEC_RAW},
			codecVolume{name: "zstd-" + dtypeName(d), dtype: d, codec: ldmv1.Codec_CODEC_ZSTD, level: 5})
	}
	return out
}

func dtypeName(d ldmv1.DataType) string {
	return map[ldmv1.DataType]string{1: "uint8", 2: "uint16", 3: "int16", 4: "uint32", 5: "float32"}[d]
}

// startCodecServer serves the API and the views of a file store in
// t.TempDir() on one real socket.
func startCodecServer(tb testing.TB) (*testServer, *storage.Store, string) {
	tb.Helper()
	st, err := storage.Open(tb.TempDir(), storage.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	ts := startServer(tb, serverOptions{store: st})
	h, err := ts.Server.Views(service.ViewConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range service.ViewPaths() {
		mux.Handle(p, h)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return ts, st, "http://" + l.Addr().String()
}

// writeCodecVolume creates v and writes its bricks: even ones raw with
// WriteTile, odd ones zstd-compressed by the client with WriteTileStream.
func writeCodecVolume(tb testing.TB, c apiClients, v codecVolume) {
	tb.Helper()
	ctx := context.Background()
	res, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v.api()}))
	if err != nil {
		tb.Fatalf("CreateVolume %s: %v", v.name, err)
	}
	wantLevel := v.level
	if v.codec == ldmv1.Codec_CODEC_RAW {
		wantLevel = 0
	}
	if got := res.Msg.GetVolume(); got.GetCodec() != v.codec || got.GetCodecLevel() != wantLevel {
		tb.Fatalf("CreateVolume %s: codec %v level %d, want %v level %d", v.name, got.GetCodec(), got.GetCodecLevel(), v.codec, wantLevel)
	}
	ws := c.tiles.WriteTileStream(ctx)
	sent := 0
	for i, k := range brickKeys() {
		key := &ldmv1.BrickKey{X: uint32(k[0]), Y: uint32(k[1]), Z: uint32(k[2])}
		tile := &ldmv1.Tile{Key: key, Value: brickOf(v.dtype, k[0], k[1], k[2])}
		if i%2 == 0 {
			if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: v.name, Tile: tile})); err != nil {
				tb.Fatalf("WriteTile %s %v: %v", v.name, k, err)
			}
			continue
		}
		client.CompressTile(tile, 3)
		if err := ws.Send(&ldmv1.WriteTileStreamRequest{Volume: v.name, Tile: tile}); err != nil {
			tb.Fatalf("WriteTileStream %s: %v", v.name, err)
		}
		sent++
	}
	if err := ws.CloseRequest(); err != nil {
		tb.Fatal(err)
	}
	for range sent {
		if _, err := ws.Receive(); err != nil {
			tb.Fatalf("WriteTileStream %s: %v", v.name, err)
		}
	}
	if err := ws.CloseResponse(); err != nil {
		tb.Fatal(err)
	}
}

// zstdDecode decodes a whole frame with klauspost's decoder, as a client
// that knows nothing of go-ldm does.
func zstdDecode(tb testing.TB, b []byte) []byte {
	tb.Helper()
	d, err := zstd.NewReader(nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer d.Close()
	out, err := d.DecodeAll(b, nil)
	if err != nil {
		tb.Fatalf("zstd: %v", err)
	}
	return out
}

func httpGet(tb testing.TB, url string) (int, []byte) {
	tb.Helper()
	res, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res.StatusCode, b
}

// TestService_codec_round_trip writes every data type to a raw and a zstd
// volume side by side and reads every voxel back through the tile reads
// of every protocol (and grpc-go), ReadRegion, the Zarr v2 and v3 views
// and the Neuroglancer precomputed view.
func TestService_codec_round_trip(t *testing.T) {
	t.Parallel()
	ts, _, views := startCodecServer(t)
	ctx := context.Background()
	w := ts.clients(t, protocols[0])
	vols := codecVolumes()
	for _, v := range vols {
		writeCodecVolume(t, w, v)
	}
	conn := grpcConn(t, ts)
	for _, v := range vols {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			vs := dtypeSize(v.dtype)
			for _, p := range protocols {
				c := ts.clients(t, p)
				gv, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: v.name}))
				if err != nil {
					t.Fatalf("%s GetVolume: %v", p.name, err)
				}
				vol := gv.Msg.GetVolume()
				if vol.GetCodec() != v.codec {
					t.Fatalf("%s GetVolume codec = %v, want %v", p.name, vol.GetCodec(), v.codec)
				}
				for _, k := range brickKeys() {
					want := brickOf(v.dtype, k[0], k[1], k[2])
					key := &ldmv1.BrickKey{X: uint32(k[0]), Y: uint32(k[1]), Z: uint32(k[2])}
					b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: v.name, Key: key}))
					if err != nil {
						t.Fatalf("%s GetBrick %v: %v", p.name, k, err)
					}
					tile := b.Msg.GetTile()
					if tile.GetCodec() != v.codec {
						t.Fatalf("%s GetBrick %v: codec %v, want %v", p.name, k, tile.GetCodec(), v.codec)
					}
					if v.codec == ldmv1.Codec_CODEC_ZSTD && len(tile.GetValue()) >= len(want) {
						t.Fatalf("%s GetBrick %v: %d bytes stored for a %d-byte brick: not compressed", p.name, k, len(tile.GetValue()), len(want))
					}
					got, err := client.BrickVoxels(vol, tile)
					if err != nil || string(got) != string(want) {
						t.Fatalf("%s GetBrick %v: voxels differ (%v)", p.name, k, err)
					}
				}
				// ReadTileStream carries the codec on every tile.
				rs, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: v.name}))
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, m := range receiveAll(t, rs) {
					if _, err := client.BrickVoxels(vol, m.GetTile()); err != nil || m.GetTile().GetCodec() != v.codec {
						t.Fatalf("%s ReadTileStream tile %d: codec %v: %v", p.name, m.GetTile().GetOffset(), m.GetTile().GetCodec(), err)
					}
					n++
				}
				if n != len(brickKeys()) {
					t.Fatalf("%s ReadTileStream: %d tiles, want %d", p.name, n, len(brickKeys()))
				}
				// ReadRegion decodes on the server.
				rr, err := c.volumes.ReadRegion(ctx, connect.NewRequest(&ldmv1.ReadRegionRequest{Volume: v.name}))
				if err != nil {
					t.Fatal(err)
				}
				dense := make([]byte, codecShape[0]*codecShape[1]*codecShape[2]*vs)
				for _, m := range receiveAll(t, rr) {
					pc := m.GetPiece()
					d := m.GetData()
					for z := pc.GetMin().GetZ(); z < pc.GetMax().GetZ(); z++ {
						for y := pc.GetMin().GetY(); y < pc.GetMax().GetY(); y++ {
							row := int(pc.GetMax().GetX()-pc.GetMin().GetX()) * vs
							at := ((int(z)*codecShape[1]+int(y))*codecShape[0] + int(pc.GetMin().GetX())) * vs
							copy(dense[at:at+row], d[:row])
							d = d[row:]
						}
					}
				}
				var one [4]byte
				for z := range codecShape[2] {
					for y := range codecShape[1] {
						for x := range codecShape[0] {
							voxel(v.dtype, x, y, z, one[:])
							at := ((z*codecShape[1]+y)*codecShape[0] + x) * vs
							if string(dense[at:at+vs]) != string(one[:vs]) {
								t.Fatalf("%s ReadRegion voxel (%d,%d,%d) = %x, want %x", p.name, x, y, z, dense[at:at+vs], one[:vs])
							}
						}
					}
				}
			}
			// grpc-go reads the same tile bytes and codec.
			for _, k := range brickKeys()[:2] {
				res := new(ldmv1.GetBrickResponse)
				key := &ldmv1.BrickKey{X: uint32(k[0]), Y: uint32(k[1]), Z: uint32(k[2])}
				if err := conn.Invoke(ctx, "/ldm.v1.VolumeService/GetBrick", &ldmv1.GetBrickRequest{Volume: v.name, Key: key}, res); err != nil {
					t.Fatalf("grpc-go GetBrick: %v", err)
				}
				got, err := client.BrickVoxels(v.api(), res.GetTile())
				if err != nil || string(got) != string(brickOf(v.dtype, k[0], k[1], k[2])) {
					t.Fatalf("grpc-go GetBrick %v: voxels differ (%v)", k, err)
				}
			}
			// Zarr v2 and v3: the metadata names the codec, chunks are the
			// stored bytes.
			code, za := httpGet(t, views+"/zarr/"+v.name+"/0/.zarray")
			var zarray struct {
				Compressor *struct {
					ID    string `json:"id"`
					Level int    `json:"level"`
				} `json:"compressor"`
			}
			if code != 200 || json.Unmarshal(za, &zarray) != nil {
				t.Fatalf(".zarray: %d %s", code, za)
			}
			if (zarray.Compressor != nil) != (v.codec == ldmv1.Codec_CODEC_ZSTD) || (zarray.Compressor != nil && (zarray.Compressor.ID != "zstd" || zarray.Compressor.Level != int(v.level))) {
				t.Fatalf(".zarray compressor for %v: %s", v.codec, za)
			}
			_, z3 := httpGet(t, views+"/zarr3/"+v.name+"/0/zarr.json")
			var arr3 struct {
				Codecs []struct {
					Name string `json:"name"`
				} `json:"codecs"`
			}
			if err := json.Unmarshal(z3, &arr3); err != nil {
				t.Fatal(err)
			}
			wantCodecs := "[bytes]"
			if v.codec == ldmv1.Codec_CODEC_ZSTD {
				wantCodecs = "[bytes zstd]"
			}
			var names []string
			for _, c := range arr3.Codecs {
				names = append(names, c.Name)
			}
			if fmt.Sprint(names) != wantCodecs {
				t.Fatalf("zarr.json codecs %v, want %s", names, wantCodecs)
			}
			for _, k := range brickKeys() {
				for _, path := range []string{
					fmt.Sprintf("/zarr/%s/0/%d/%d/%d", v.name, k[2], k[1], k[0]),
					fmt.Sprintf("/zarr3/%s/0/c/%d/%d/%d", v.name, k[2], k[1], k[0]),
				} {
					code, b := httpGet(t, views+path)
					if code != 200 {
						t.Fatalf("%s: %d %s", path, code, b)
					}
					if v.codec == ldmv1.Codec_CODEC_ZSTD {
						b = zstdDecode(t, b)
					}
					if string(b) != string(brickOf(v.dtype, k[0], k[1], k[2])) {
						t.Fatalf("%s: voxels differ", path)
					}
				}
			}
			// Neuroglancer precomputed raw chunks are voxels: the first
			// brick, whole.
			code, b := httpGet(t, fmt.Sprintf("%s/precomputed/%s/0/0-16_0-16_0-16", views, v.name))
			if code != 200 || string(b) != string(brickOf(v.dtype, 0, 0, 0)) {
				t.Fatalf("precomputed chunk: %d, %d bytes, voxels differ", code, len(b))
			}
		})
	}
}

// TestService_codec_bad_frames checks that frames that do not decode to
// the brick are refused at write with InvalidArgument, that the store
// refuses a frame whose header is wrong (a bomb claiming 1 TiB, raw bytes)
// whatever the path, and that stored frames whose content is wrong
// (damaged, followed by another frame, blocks that decode past the size
// the header declares) are DataLoss wherever the server decodes them.
func TestService_codec_bad_frames(t *testing.T) {
	t.Parallel()
	ts, st, views := startCodecServer(t)
	ctx := context.Background()
	c := ts.clients(t, protocols[0])
	v := codecVolume{name: "z", dtype: ldmv1.DataType_DATA_TYPE_UINT16, codec: ldmv1.Codec_CODEC_ZSTD}
	if _, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v.api()})); err != nil {
		t.Fatal(err)
	}
	raw := brickOf(v.dtype, 0, 0, 0)
	good := &ldmv1.Tile{Value: raw}
	client.CompressTile(good, 3)
	damaged := append([]byte(nil), good.GetValue()...)
	damaged[len(damaged)/2] ^= 0xff
	// A frame whose header claims 1 TiB: single segment, 8-byte size, one
	// RLE block.
	bomb := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}
	bomb = binary.LittleEndian.AppendUint64(bomb, 1<<40)
	bomb = append(bomb, 0x03, 0x00, 0x02, 0x00)
	// A frame of the brick's size, then a second one of 64 MiB.
	tail := &ldmv1.Tile{Value: make([]byte, 64<<20)}
	client.CompressTile(tail, 1)
	chained := append(append([]byte(nil), good.GetValue()...), tail.GetValue()...)

	// A frame whose header declares the brick's size and whose blocks
	// decode to more: RLE blocks of 128 KiB, 64 of them (8 MiB).
	lying := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x80, 0x38} // 4-byte content size, 128 KiB window
	lying = binary.LittleEndian.AppendUint32(lying, uint32(len(raw)))
	for i := range 64 {
		h := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
		if i == 63 {
			h |= 1
		}
		lying = append(lying, byte(h), byte(h>>8), byte(h>>16), 0x07)
	}

	// Frames whose header is wrong never reach the store, whatever the
	// path: the store checks the header of every tile of a zstd volume.
	for name, frame := range map[string][]byte{"bomb": bomb, "not_zstd": raw[:len(raw)/2], "raw": raw} {
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z",
			Tile: &ldmv1.Tile{Key: &ldmv1.BrickKey{}, Value: frame, Codec: ldmv1.Codec_CODEC_ZSTD}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("WriteTile of a %s frame: %v, want InvalidArgument", name, err)
		}
		if _, err := st.Append(ctx, "z", storage.Tile{HasKey: true, Value: frame}); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Fatalf("store Append of a %s frame to a zstd volume: %v, want ErrInvalidArgument", name, err)
		}
	}
	cases := []struct {
		name  string
		frame []byte
	}{{"damaged", damaged}, {"chained", chained}, {"lying", lying}}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := &ldmv1.BrickKey{X: uint32(i % 2), Y: uint32(i / 2)}
			_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z",
				Tile: &ldmv1.Tile{Key: key, Value: tc.frame, Codec: ldmv1.Codec_CODEC_ZSTD}}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("WriteTile of a %s frame: %v, want InvalidArgument", tc.name, err)
			}
			// The same bytes on disk (as damage that happened before the
			// checksum was computed would leave them): their checksum
			// holds, the frame's header too, its content does not.
			if _, err := st.Append(ctx, "z", storage.Tile{HasKey: true, Key: storage.BrickKey{X: key.X, Y: key.Y}, Value: tc.frame}); err != nil {
				t.Fatal(err)
			}
			box := &ldmv1.Region{Min: &ldmv1.Shape{X: key.X * 16, Y: key.Y * 16}, Max: &ldmv1.Shape{X: key.X*16 + 16, Y: key.Y*16 + 16, Z: 16}}
			rr, err := c.volumes.ReadRegion(ctx, connect.NewRequest(&ldmv1.ReadRegionRequest{Volume: "z", Box: box}))
			if err == nil {
				for rr.Receive() {
					t.Fatalf("ReadRegion over a %s frame sent voxels", tc.name)
				}
				err = rr.Err()
			}
			if connect.CodeOf(err) != connect.CodeDataLoss {
				t.Fatalf("ReadRegion over a %s frame: %v, want DataLoss", tc.name, err)
			}
			code, _ := httpGet(t, fmt.Sprintf("%s/precomputed/z/0/%d-%d_%d-%d_0-16", views, key.X*16, key.X*16+16, key.Y*16, key.Y*16+16))
			if code != http.StatusInternalServerError {
				t.Fatalf("precomputed chunk over a %s frame: status %d, want 500", tc.name, code)
			}
		})
	}
	t.Run("raw_brick_of_wrong_size", func(t *testing.T) {
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z",
			Tile: &ldmv1.Tile{Key: &ldmv1.BrickKey{Z: 1}, Value: raw[:100]}}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("WriteTile of a short raw brick to a zstd volume: %v, want InvalidArgument", err)
		}
	})
	t.Run("crc_of_the_bytes_as_sent", func(t *testing.T) {
		tile := &ldmv1.Tile{Key: &ldmv1.BrickKey{Z: 1}, Value: raw, Crc32C: storage.Checksum(raw) ^ 1}
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z", Tile: tile}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("WriteTile with a wrong crc32c: %v, want InvalidArgument", err)
		}
		tile.Crc32C = storage.Checksum(raw)
		if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z", Tile: tile})); err != nil {
			t.Fatalf("WriteTile with the crc32c of the raw bytes: %v", err)
		}
	})
}

// TestService_codec_transport_compression checks zstd as a Connect and
// gRPC compression (requests and responses), and that a zstd tile is not
// compressed again: with Config.Compress, a raw brick's response shrinks,
// a zstd brick's goes in stored blocks, a little larger than the frame.
func TestService_codec_transport_compression(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{config: func(c *service.Config) { c.Compress = true }})
	ctx := context.Background()
	zopt := client.ZstdCompression(0)
	for _, p := range protocols {
		c := ts.clients(t, protocol{p.name, append([]connect.ClientOption{zopt, connect.WithSendCompression("zstd")}, p.opts...)})
		for _, v := range []codecVolume{
			{name: "raw-" + p.name, dtype: ldmv1.DataType_DATA_TYPE_UINT16, codec: ldmv1.Codec_CODEC_RAW},
			{name: "zstd-" + p.name, dtype: ldmv1.DataType_DATA_TYPE_UINT16, codec: ldmv1.Codec_CODEC_ZSTD, level: 3},
		} {
			// Every request of writeCodecVolume is zstd-compressed.
			writeCodecVolume(t, c, v)
			b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: v.name, Key: &ldmv1.BrickKey{}}))
			if err != nil {
				t.Fatalf("%s GetBrick %s: %v", p.name, v.name, err)
			}
			got, err := client.BrickVoxels(v.api(), b.Msg.GetTile())
			if err != nil || string(got) != string(brickOf(v.dtype, 0, 0, 0)) {
				t.Fatalf("%s GetBrick %s: voxels differ (%v)", p.name, v.name, err)
			}
		}
	}
	// On the wire: Connect unary GetBrick with Accept-Encoding zstd or gzip.
	for _, enc := range []string{"zstd", "gzip"} {
		for _, name := range []string{"raw-connect", "zstd-connect"} {
			body, _ := proto.Marshal(&ldmv1.GetBrickRequest{Volume: name, Key: &ldmv1.BrickKey{}})
			req, _ := http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.VolumeService/GetBrick", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/proto")
			req.Header.Set("Accept-Encoding", enc)
			res, err := ts.httpClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			wire, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != enc {
				t.Fatalf("%s %s: status %d, Content-Encoding %q", enc, name, res.StatusCode, res.Header.Get("Content-Encoding"))
			}
			raw := len(brickOf(ldmv1.DataType_DATA_TYPE_UINT16, 0, 0, 0))
			if name == "raw-connect" && len(wire) >= raw {
				t.Fatalf("%s: a raw brick's response of %d bytes was not compressed (%d bytes of voxels)", enc, len(wire), raw)
			}
			if name == "zstd-connect" {
				g, _ := ts.Store.Brick(name, storage.BrickKey{})
				if len(wire) < len(g.Value) {
					t.Fatalf("%s: a zstd brick's response is %d bytes, below its frame's %d: compressed twice", enc, len(wire), len(g.Value))
				}
			}
			// The body decodes with a decoder that knows nothing of
			// go-ldm to the response, whose tile holds the voxels.
			var plain []byte
			if enc == "zstd" {
				plain = zstdDecode(t, wire)
			} else {
				zr, err := gzip.NewReader(bytes.NewReader(wire))
				if err != nil {
					t.Fatal(err)
				}
				if plain, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
			}
			var msg ldmv1.GetBrickResponse
			if err := proto.Unmarshal(plain, &msg); err != nil {
				t.Fatalf("%s %s: %v", enc, name, err)
			}
			v := codecVolume{dtype: ldmv1.DataType_DATA_TYPE_UINT16, codec: msg.GetTile().GetCodec()}
			if got, err := client.BrickVoxels(v.api(), msg.GetTile()); err != nil || string(got) != string(brickOf(v.dtype, 0, 0, 0)) {
				t.Fatalf("%s %s: voxels differ (%v)", enc, name, err)
			}
		}
	}
}

// TestService_CreateVolume_codec_errors checks that bad codec fields are
// InvalidArgument naming the field.
func TestService_CreateVolume_codec_errors(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	c := ts.clients(t, protocols[0])
	for _, tc := range []struct {
		codec ldmv1.Codec
		level int32
		field string
	}{
		{ldmv1.Codec_CODEC_ZSTD, 23, "volume.codec_level"},
		{ldmv1.Codec_CODEC_ZSTD, -1, "volume.codec_level"},
		{ldmv1.Codec_CODEC_RAW, 3, "volume.codec_level"},
		{ldmv1.Codec(7), 0, "volume.codec"},
	} {
		v := codecVolume{name: "bad", dtype: ldmv1.DataType_DATA_TYPE_UINT8, codec: tc.codec, level: tc.level}.api()
		_, err := c.volumes.CreateVolume(context.Background(), connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tc.field) {
			t.Fatalf("codec %v level %d: %v, want InvalidArgument naming %s", tc.codec, tc.level, err, tc.field)
		}
	}
}

// TestService_CreateVolume_unset_codec_is_raw: a client that predates
// codecs (its CreateVolume and WriteTile carry no codec field, here as
// Connect JSON written by hand) gets a raw volume, and reads back the
// bytes it wrote, as they are.
func TestService_CreateVolume_unset_codec_is_raw(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	hc := ts.httpClient(t)
	post := func(method, body string) string {
		t.Helper()
		res, err := hc.Post(ts.URL+method, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s %v", method, res.StatusCode, b, err)
		}
		return string(b)
	}
	out := post("/ldm.v1.VolumeService/CreateVolume", `{"volume":{"name":"old","shape":{"x":16,"y":16,"z":16},"dataType":"DATA_TYPE_UINT8","brickShape":{"x":16,"y":16,"z":16}}}`)
	if !strings.Contains(out, `"codec":"CODEC_RAW"`) || strings.Contains(out, "codecLevel") {
		t.Fatalf("CreateVolume without a codec answered %s, want a raw volume", out)
	}
	brick := make([]byte, 16*16*16)
	for i := range brick {
		brick[i] = byte(i * 7)
	}
	post("/ldm.v1.TileService/WriteTile", `{"volume":"old","tile":{"key":{},"value":"`+base64.StdEncoding.EncodeToString(brick)+`"}}`)
	c := ts.clients(t, protocols[0])
	got, err := c.volumes.GetBrick(context.Background(), connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "old", Key: &ldmv1.BrickKey{}}))
	if err != nil {
		t.Fatal(err)
	}
	if got.Msg.GetTile().GetCodec() != ldmv1.Codec_CODEC_RAW || !bytes.Equal(got.Msg.GetTile().GetValue(), brick) {
		t.Fatalf("brick reads back as %v, %d bytes; want the raw bytes written", got.Msg.GetTile().GetCodec(), len(got.Msg.GetTile().GetValue()))
	}
}
