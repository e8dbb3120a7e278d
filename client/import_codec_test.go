package client_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

// wireLog is a client interceptor that records the codec of every tile
// sent with WriteTileStream and checks its CRC-32C against the bytes sent.
type wireLog struct {
	mu     sync.Mutex
	codecs map[ldmv1.Codec]int
	bytes  int64
	badCRC int
}

func (w *wireLog) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (w *wireLog) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func (w *wireLog) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		return &wireConn{StreamingClientConn: next(ctx, spec), log: w}
	}
}

type wireConn struct {
	connect.StreamingClientConn
	log *wireLog
}

func (c *wireConn) Send(m any) error {
	if r, ok := m.(*ldmv1.WriteTileStreamRequest); ok {
		t := r.GetTile()
		c.log.mu.Lock()
		if c.log.codecs == nil {
			c.log.codecs = map[ldmv1.Codec]int{}
		}
		c.log.codecs[t.GetCodec()]++
		c.log.bytes += int64(len(t.GetValue()))
		if t.GetCrc32C() != storage.Checksum(t.GetValue()) {
			c.log.badCRC++
		}
		c.log.mu.Unlock()
	}
	return c.StreamingClientConn.Send(m)
}

// only checks that every tile sent was in codec (raw tiles may leave the
// codec unset) with the CRC-32C of its bytes.
func (w *wireLog) only(tb testing.TB, codec ldmv1.Codec) {
	tb.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for c, k := range w.codecs {
		if c == codec || codec == ldmv1.Codec_CODEC_RAW && c == ldmv1.Codec_CODEC_UNSPECIFIED {
			n += k
		}
	}
	if n == 0 || len(w.codecs) != 1 || w.badCRC != 0 {
		tb.Fatalf("tiles sent by codec %v (%d with a wrong crc32c), want all %v", w.codecs, w.badCRC, codec)
	}
}

func codecLabel(c ldmv1.Codec) string {
	if c == ldmv1.Codec_CODEC_ZSTD {
		return "zstd"
	}
	return "raw"
}

// storedCodec checks that the volume is in codec and that every brick
// GetBrick returns says so: for zstd, a frame whose header holds the
// brick's size.
func storedCodec(tb testing.TB, volumes ldmv1connect.VolumeServiceClient, volume string, codec ldmv1.Codec) {
	tb.Helper()
	ctx := context.Background()
	gv, err := volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: volume}))
	if err != nil {
		tb.Fatal(err)
	}
	v := gv.Msg.GetVolume()
	if v.GetCodec() != codec {
		tb.Fatalf("volume %s has codec %v, want %v", volume, v.GetCodec(), codec)
	}
	s, err := volumes.ListBricks(ctx, connect.NewRequest(&ldmv1.ListBricksRequest{Volume: volume}))
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	n := 0
	for s.Receive() {
		for _, k := range s.Msg().GetKeys() {
			res, err := volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: volume, Key: k}))
			if err != nil {
				tb.Fatal(err)
			}
			t := res.Msg.GetTile()
			if t.GetCodec() != codec {
				tb.Fatalf("brick %v of %s has codec %v, want %v", k, volume, t.GetCodec(), codec)
			}
			if codec == ldmv1.Codec_CODEC_ZSTD {
				if !bytes.HasPrefix(t.GetValue(), zstdcodec.Magic[:]) {
					tb.Fatalf("brick %v of %s is not a zstd frame", k, volume)
				}
				if cs, err := zstdcodec.ContentSize(t.GetValue()); err != nil || cs != uint64(client.BrickBytes(v)) {
					tb.Fatalf("brick %v of %s: content size %d, %v; want %d", k, volume, cs, err, client.BrickBytes(v))
				}
			}
			n++
		}
	}
	if err := s.Err(); err != nil {
		tb.Fatal(err)
	}
	if n == 0 {
		tb.Fatalf("volume %s lists no bricks", volume)
	}
}

func TestImporter_ImportReader_codec(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	shape := storage.Shape{X: 75, Y: 50, Z: 61}
	for _, dt := range []storage.DataType{storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32} {
		t.Run(dt.String(), func(t *testing.T) {
			t.Parallel()
			rawVol, p := procVolume(t, "raw-"+dt.String(), shape, dt)
			var rawWire wireLog
			st, err := s.importer(t, connect.WithInterceptors(&rawWire)).ImportReader(ctx, p.Reader(), rawVol, client.ImportOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if st.BytesSent != st.Bytes {
				t.Fatalf("raw import sent %d bytes of %d", st.BytesSent, st.Bytes)
			}
			rawWire.only(t, ldmv1.Codec_CODEC_RAW)
			storedCodec(t, s.importer(t).Volumes, rawVol.Name, ldmv1.Codec_CODEC_RAW)
			want, _ := serverBricks(t, s.importer(t).Volumes, rawVol.Name)
			src, err := io.ReadAll(p.Reader())
			if err != nil {
				t.Fatal(err)
			}
			meta := apiconv.MetaFromAPI(st.Volume)
			sameBricks(t, want, wholePyramid(src, meta))

			// The codec from ImportOptions (default level), and from the
			// volume itself (level 9).
			byOpts, _ := procVolume(t, "zstd-"+dt.String(), shape, dt)
			byVol, _ := procVolume(t, "zstd9-"+dt.String(), shape, dt)
			byVol.Codec, byVol.CodecLevel = ldmv1.Codec_CODEC_ZSTD, 9
			for _, c := range []struct {
				vol   *ldmv1.Volume
				opts  client.ImportOptions
				level int32
			}{
				{byOpts, client.ImportOptions{Codec: ldmv1.Codec_CODEC_ZSTD}, 3},
				{byVol, client.ImportOptions{}, 9},
			} {
				var wire wireLog
				var log progressLog
				c.opts.Progress = log.record
				st, err := s.importer(t, connect.WithInterceptors(&wire)).ImportReader(ctx, p.Reader(), c.vol, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				log.check(t, st, true)
				if st.Volume.GetCodec() != ldmv1.Codec_CODEC_ZSTD || st.Volume.GetCodecLevel() != c.level {
					t.Fatalf("%s created as %v level %d, want zstd level %d", c.vol.Name, st.Volume.GetCodec(), st.Volume.GetCodecLevel(), c.level)
				}
				wire.only(t, ldmv1.Codec_CODEC_ZSTD)
				if st.BytesSent != wire.bytes || st.BytesSent >= st.Bytes {
					t.Fatalf("%s: %d bytes sent (%d on the wire) for %d bytes of bricks", c.vol.Name, st.BytesSent, wire.bytes, st.Bytes)
				}
				storedCodec(t, s.importer(t).Volumes, c.vol.Name, ldmv1.Codec_CODEC_ZSTD)
				got, _ := serverBricks(t, s.importer(t).Volumes, c.vol.Name)
				sameBricks(t, got, want)
			}
		})
	}
	// Noise does not compress: its frames are a little larger than its
	// bricks, and the import still holds a bounded number of them.
	t.Run("incompressible", func(t *testing.T) {
		t.Parallel()
		shape := storage.Shape{X: 40, Y: 40, Z: 40}
		raw := make([]byte, shape.X*shape.Y*shape.Z)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		v := &ldmv1.Volume{Name: "noise", Shape: apiconv.ShapeToAPI(shape), DataType: ldmv1.DataType_DATA_TYPE_UINT8,
			BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 16}, LodCount: 2}
		var wire wireLog
		st, err := s.importer(t, connect.WithInterceptors(&wire)).Import(ctx, bytes.NewReader(raw), v, client.ImportOptions{Codec: ldmv1.Codec_CODEC_ZSTD, CodecLevel: 1})
		if err != nil {
			t.Fatal(err)
		}
		wire.only(t, ldmv1.Codec_CODEC_ZSTD)
		got, _ := serverBricks(t, s.importer(t).Volumes, v.Name)
		sameBricks(t, got, wholePyramid(raw, apiconv.MetaFromAPI(st.Volume)))
	})
}
