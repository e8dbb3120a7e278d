package service_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// Compressed bricks against raw, measured in one run.
//
//	go test -run '^$' -bench 'Codec' -benchtime 3x ./service/
//
// BenchmarkCodec_compress and _decompress: one core compressing and
// decoding 64^3 bricks; MB/s is of raw voxels, ratio is raw bytes over
// stored bytes. BenchmarkCodec_serve: StreamBricks of a whole volume over
// loopback from a file store, a zstd volume against the same voxels raw;
// cpu-s/GB is the process's CPU (server, and a client that does not
// decode) per GB of voxels delivered, wire-MB the tile bytes sent;
// read_region is the same volume through ReadRegion, which decodes zstd
// bricks on the server and sends voxels.

// codecCorpus is a named set of 64^3 bricks (raw voxels).
type codecCorpus struct {
	name   string
	dtype  storage.DataType
	bricks [][]byte
}

// phantomBricks returns the demo phantom's 64 level 0 bricks with seeded
// noise: uint8 with noise of +-sigma (clamped), or uint16 CT-like (the
// phantom's values times 8, plus noise).
func phantomBricks(dt storage.DataType, sigma float64) [][]byte {
	rng := rand.New(rand.NewPCG(14, 1))
	const n, b = pyramid.PhantomSize, pyramid.PhantomBrick
	vs := dt.Size()
	var out [][]byte
	for bz := 0; bz < n; bz += b {
		for by := 0; by < n; by += b {
			for bx := 0; bx < n; bx += b {
				brick := make([]byte, b*b*b*vs)
				i := 0
				for z := bz; z < bz+b; z++ {
					for y := by; y < by+b; y++ {
						for x := bx; x < bx+b; x++ {
							v := float64(pyramid.PhantomValue(x, y, z)) + rng.NormFloat64()*sigma
							if dt == storage.Uint16 {
								v = float64(pyramid.PhantomValue(x, y, z))*8 + rng.NormFloat64()*sigma
								w := uint16(min(max(v, 0), 65535))
								brick[i], brick[i+1] = byte(w), byte(w>>8)
							} else {
								brick[i] = byte(min(max(v, 0), 255))
							}
							i += vs
						}
					}
				}
				out = append(out, brick)
			}
		}
	}
	return out
}

// niftiBricks cuts the first volume of a real NIfTI scan into 64^3 bricks
// (zero-padded at the edges, as the store keeps them).
func niftiBricks(tb testing.TB, path string) (storage.DataType, [][]byte) {
	tb.Helper()
	im, err := volfile.Open(path, volfile.Options{})
	if err != nil {
		// A 4D scan: its first time point.
		im, err = volfile.Open(path, volfile.Options{HasTimePoint: true})
	}
	if err != nil {
		tb.Fatalf("%s: %v (install python3-nibabel for its test scans)", path, err)
	}
	vox, err := im.ReadVoxels()
	if err != nil {
		tb.Fatal(err)
	}
	h := im.Header
	dt, vs := h.DataType, h.DataType.Size()
	sx, sy, sz := int(h.Shape.X), int(h.Shape.Y), int(h.Shape.Z)
	const b = 64
	var out [][]byte
	for bz := 0; bz < sz; bz += b {
		for by := 0; by < sy; by += b {
			for bx := 0; bx < sx; bx += b {
				brick := make([]byte, b*b*b*vs)
				for z := bz; z < min(bz+b, sz); z++ {
					for y := by; y < min(by+b, sy); y++ {
						n := (min(bx+b, sx) - bx) * vs
						src := ((z*sy+y)*sx + bx) * vs
						dst := (((z-bz)*b + (y - by)) * b) * vs
						copy(brick[dst:dst+n], vox[src:src+n])
					}
				}
				out = append(out, brick)
			}
		}
	}
	return dt, out
}

// nibabelScans are real scans that Debian's python3-nibabel ships.
var nibabelScans = []struct{ name, path string }{
	{"nifti_anatomical", "/usr/lib/python3/dist-packages/nibabel/tests/data/anatomical.nii"},
	{"nifti_example4d", "/usr/lib/python3/dist-packages/nibabel/tests/data/example4d.nii.gz"},
}

func codecCorpora(tb testing.TB) []codecCorpus {
	out := []codecCorpus{
		{"phantom_u8_noise3", storage.Uint8, phantomBricks(storage.Uint8, 3)},
		{"phantom_u16_noise20", storage.Uint16, phantomBricks(storage.Uint16, 20)},
	}
	for _, s := range nibabelScans {
		if _, err := os.Stat(s.path); err != nil {
			tb.Fatalf("%s: %v (apt-get install python3-nibabel)", s.path, err)
		}
		dt, bricks := niftiBricks(tb, s.path)
		out = append(out, codecCorpus{s.name, dt, bricks})
	}
	return out
}

func corpusBytes(c codecCorpus) (raw int64) {
	for _, b := range c.bricks {
		raw += int64(len(b))
	}
	return raw
}

var benchLevels = []int{1, 3, 9}

func BenchmarkCodec_compress(b *testing.B) {
	for _, c := range codecCorpora(b) {
		for _, level := range benchLevels {
			b.Run(fmt.Sprintf("%s/zstd%d", c.name, level), func(b *testing.B) {
				raw := corpusBytes(c)
				b.SetBytes(raw)
				b.ReportAllocs()
				var stored int64
				dst := make([]byte, 0, len(c.bricks[0])+1024)
				for b.Loop() {
					stored = 0
					for _, br := range c.bricks {
						stored += int64(len(zstdcodec.Encode(dst[:0], br, level)))
					}
				}
				b.ReportMetric(float64(raw)/float64(stored), "ratio")
			})
		}
	}
}

func BenchmarkCodec_decompress(b *testing.B) {
	for _, c := range codecCorpora(b) {
		for _, level := range benchLevels {
			b.Run(fmt.Sprintf("%s/zstd%d", c.name, level), func(b *testing.B) {
				frames := make([][]byte, len(c.bricks))
				for i, br := range c.bricks {
					frames[i] = zstdcodec.Encode(nil, br, level)
				}
				b.SetBytes(corpusBytes(c))
				b.ReportAllocs()
				dst := make([]byte, len(c.bricks[0]))
				for b.Loop() {
					for _, f := range frames {
						if _, err := zstdcodec.Decode(dst, f, len(dst)); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func BenchmarkCodec_serve(b *testing.B) {
	for _, c := range codecCorpora(b)[:2] {
		for _, call := range []string{"stream_bricks", "read_region"} {
			for _, codec := range []ldmv1.Codec{ldmv1.Codec_CODEC_RAW, ldmv1.Codec_CODEC_ZSTD} {
				b.Run(fmt.Sprintf("%s/%s/%s", c.name, call, map[ldmv1.Codec]string{1: "raw", 2: "zstd3"}[codec]), func(b *testing.B) {
					st, err := storage.Open(b.TempDir(), storage.Config{Sync: storage.SyncNone})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { st.Close() })
					ts := startServer(b, serverOptions{store: st})
					cl := ts.clients(b, protocols[0])
					ctx := context.Background()
					grid := uint32(pyramid.PhantomSize / pyramid.PhantomBrick)
					vol := &ldmv1.Volume{Name: "v", DataType: ldmv1.DataType(c.dtype), Codec: codec,
						Shape: &ldmv1.Shape{X: grid * 64, Y: grid * 64, Z: grid * 64}}
					if _, err := cl.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: vol})); err != nil {
						b.Fatal(err)
					}
					for i, br := range c.bricks {
						t := &ldmv1.Tile{Value: br, Key: &ldmv1.BrickKey{X: uint32(i) % grid, Y: uint32(i) / grid % grid, Z: uint32(i) / grid / grid}}
						if codec == ldmv1.Codec_CODEC_ZSTD {
							client.CompressTile(t, 3)
						}
						if _, err := cl.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: t})); err != nil {
							b.Fatal(err)
						}
					}
					raw := corpusBytes(c)
					b.SetBytes(raw)
					var wire int64
					cpu0 := processCPU()
					for b.Loop() {
						wire = 0
						if call == "read_region" {
							// The server decodes every brick and sends voxels.
							s, err := cl.volumes.ReadRegion(ctx, connect.NewRequest(&ldmv1.ReadRegionRequest{Volume: "v"}))
							if err != nil {
								b.Fatal(err)
							}
							for s.Receive() {
								wire += int64(len(s.Msg().GetData()))
							}
							if err := s.Err(); err != nil {
								b.Fatal(err)
							}
							continue
						}
						s, err := cl.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "v"}))
						if err != nil {
							b.Fatal(err)
						}
						for s.Receive() {
							wire += int64(len(s.Msg().GetTile().GetValue()))
						}
						if err := s.Err(); err != nil {
							b.Fatal(err)
						}
					}
					cpu := processCPU() - cpu0
					b.ReportMetric(cpu.Seconds()/(float64(raw)*float64(b.N)/1e9), "cpu-s/GB")
					b.ReportMetric(float64(wire)/1e6, "wire-MB")
				})
			}
		}
	}
}

// BenchmarkCodec_write writes the noisy phantom's bricks with
// WriteTileStream: raw to a raw volume, raw to a zstd volume (the server
// compresses), and compressed by the client (one core, before sending) to
// a zstd volume (the server decodes each frame once to check it).
// cpu-s/GB is the process's CPU (client and server) per GB of voxels.
func BenchmarkCodec_write(b *testing.B) {
	c := codecCorpora(b)[1] // phantom_u16_noise20
	for _, mode := range []string{"raw", "zstd3_server_compresses", "zstd3_client_compresses"} {
		b.Run(c.name+"/"+mode, func(b *testing.B) {
			st, err := storage.Open(b.TempDir(), storage.Config{Sync: storage.SyncNone})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			ts := startServer(b, serverOptions{store: st})
			cl := ts.clients(b, protocols[0])
			ctx := context.Background()
			codec := ldmv1.Codec_CODEC_ZSTD
			if mode == "raw" {
				codec = ldmv1.Codec_CODEC_RAW
			}
			grid := uint32(pyramid.PhantomSize / pyramid.PhantomBrick)
			vol := &ldmv1.Volume{Name: "v", DataType: ldmv1.DataType(c.dtype), Codec: codec,
				Shape: &ldmv1.Shape{X: grid * 64, Y: grid * 64, Z: grid * 64}}
			if _, err := cl.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: vol})); err != nil {
				b.Fatal(err)
			}
			raw := corpusBytes(c)
			b.SetBytes(raw)
			cpu0 := processCPU()
			for b.Loop() {
				ws := cl.tiles.WriteTileStream(ctx)
				for i, br := range c.bricks {
					t := &ldmv1.Tile{Value: br, Key: &ldmv1.BrickKey{X: uint32(i) % grid, Y: uint32(i) / grid % grid, Z: uint32(i) / grid / grid}}
					if mode == "zstd3_client_compresses" {
						client.CompressTile(t, 3)
					}
					if err := ws.Send(&ldmv1.WriteTileStreamRequest{Volume: "v", Tile: t}); err != nil {
						b.Fatal(err)
					}
				}
				if err := ws.CloseRequest(); err != nil {
					b.Fatal(err)
				}
				for range c.bricks {
					if _, err := ws.Receive(); err != nil {
						b.Fatal(err)
					}
				}
				if err := ws.CloseResponse(); err != nil {
					b.Fatal(err)
				}
			}
			cpu := processCPU() - cpu0
			b.ReportMetric(cpu.Seconds()/(float64(raw)*float64(b.N)/1e9), "cpu-s/GB")
		})
	}
}
