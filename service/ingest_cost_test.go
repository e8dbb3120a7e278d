package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// contentBytes is what a stored tile holds decoded: the content size a
// zstd frame declares, the length of anything else.
func contentBytes(b []byte) int64 {
	if bytes.HasPrefix(b, zstdcodec.Magic[:]) {
		if n, err := zstdcodec.ContentSize(b); err == nil {
			return int64(n)
		}
	}
	return int64(len(b))
}

// ingestCheckStore checks, as each batch reaches the store, that the
// decoded bytes of the batches in its Appends are counted in the server's
// ingest budget (they are held until the Append returns) and that the
// budget stays within limit. Its first Append waits for first to close.
type ingestCheckStore struct {
	service.Tiles
	limit int64
	first chan struct{}
	// measure, when set, is what a tile of a batch holds in the server's
	// memory (default: its decoded bytes, contentBytes).
	measure func(storage.Tile) int64

	mu         sync.Mutex
	server     *service.Server
	appends    int
	inflight   int64
	violations []string
}

func (s *ingestCheckStore) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	var n int64
	for _, t := range tiles {
		if s.measure != nil {
			n += s.measure(t)
		} else {
			n += contentBytes(t.Value)
		}
	}
	s.mu.Lock()
	s.inflight += n
	held := service.IngestBytesHeld(s.server)
	if s.inflight > held || held > s.limit {
		s.violations = append(s.violations, fmt.Sprintf("batch of %d tiles: %d bytes held by its tiles in Append, %d bytes in the ingest budget (limit %d)", len(tiles), s.inflight, held, s.limit))
	}
	s.appends++
	firstAppend := s.appends == 1
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight -= n
		s.mu.Unlock()
	}()
	if firstAppend {
		select {
		case <-s.first:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return s.Tiles.Append(ctx, volume, tiles...)
}

func (s *ingestCheckStore) failures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.violations...)
}

// startIngestCheckServer serves a memory store wrapped in an
// ingestCheckStore whose limit is the smaller ingest limit of config.
func startIngestCheckServer(t *testing.T, perStream, server int64) (*testServer, *ingestCheckStore) {
	t.Helper()
	st := &ingestCheckStore{Tiles: storage.NewMemory(0), limit: min(perStream, server), first: make(chan struct{})}
	ts := startServer(t, serverOptions{store: st, config: func(c *service.Config) {
		c.MaxStreamIngestBytes, c.MaxIngestBytes = perStream, server
	}})
	st.mu.Lock()
	st.server = ts.Server
	st.mu.Unlock()
	return ts, st
}

// createCodecVolume creates volume name in codec c.
func createCodecVolume(tb testing.TB, c apiClients, name string, codec ldmv1.Codec) {
	tb.Helper()
	if _, err := c.volumes.CreateVolume(context.Background(), connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: name, Shape: &ldmv1.Shape{X: 256, Y: 256, Z: 256}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: 1, Codec: codec,
	}})); err != nil {
		tb.Fatal(err)
	}
}

// TestWriteTileStream_zstd_content_is_held_to_the_ingest_budget: a stream
// of zstd frames of about 100 bytes that declare 2 MiB each (zeros), into
// a raw volume (decoded on ingest) and a zstd volume (checked on ingest),
// while the store holds the first batch: every batch's decoded bytes are
// in the ingest budget before the store sees them, the budget stays within
// the stream's limit, and every tile is stored and acknowledged in order.
func TestWriteTileStream_zstd_content_is_held_to_the_ingest_budget(t *testing.T) {
	const (
		content   = 2 << 20
		perStream = 8 << 20
		tiles     = 10
	)
	frame := zstdcodec.Encode(nil, make([]byte, content), 3)
	for _, p := range []protocol{protocols[0], protocols[2]} {
		for _, codec := range []ldmv1.Codec{ldmv1.Codec_CODEC_RAW, ldmv1.Codec_CODEC_ZSTD} {
			t.Run(p.name+"/"+strings.ToLower(strings.TrimPrefix(codec.String(), "CODEC_"))+"_volume", func(t *testing.T) {
				ts, st := startIngestCheckServer(t, perStream, 2*perStream)
				c := ts.clients(t, p)
				createCodecVolume(t, c, "v", codec)
				stream := c.tiles.WriteTileStream(context.Background())
				sent := make(chan error, 1)
				go func() {
					for range tiles {
						if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "v", Tile: &ldmv1.Tile{Value: frame, Codec: ldmv1.Codec_CODEC_ZSTD}}); err != nil {
							sent <- err
							return
						}
					}
					sent <- stream.CloseRequest()
				}()
				// The stream fills its budget (two tiles of three quarters
				// of 8 MiB) while the store holds the first batch.
				testutil.WaitFor(t, 10*time.Second, "the stream's budget to fill, or a batch decoded outside it", func() bool {
					return service.IngestBytesHeld(ts.Server) >= 2*content || len(st.failures()) > 0
				})
				close(st.first)
				ackInOrder(t, stream, int(tiles), sent)
				for _, f := range st.failures() {
					t.Error(f)
				}
				got, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: tiles - 1}))
				if err != nil {
					t.Fatal(err)
				}
				value := got.Msg.GetTile().GetValue()
				if codec == ldmv1.Codec_CODEC_ZSTD {
					if value, err = zstdcodec.Decode(nil, value, content); err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(value, make([]byte, content)) {
					t.Fatalf("tile %d reads back as %d bytes, want %d zeros", tiles-1, len(value), content)
				}
				testutil.WaitFor(t, 10*time.Second, "the ingest budget to be free", func() bool { return service.IngestBytesHeld(ts.Server) == 0 })
			})
		}
	}
}

// randomBytes returns n bytes that do not compress.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestWriteTileStream_raw_tiles_to_zstd_volume_are_held_to_the_ingest_budget:
// raw tiles that do not compress, streamed to a zstd volume, are compressed
// by the server into copies about as large as the tiles; each tile in an
// Append holds its bytes as sent and its frame's buffer, and the ingest
// budget counts both (it never holds less than the batch, nor more than
// its limit). Every tile is stored and reads back.
func TestWriteTileStream_raw_tiles_to_zstd_volume_are_held_to_the_ingest_budget(t *testing.T) {
	const (
		content   = 2 << 20
		perStream = 8 << 20
		tiles     = 8
	)
	values := make([][]byte, tiles)
	for i := range values {
		values[i] = randomBytes(content, uint64(i))
	}
	// A tile in an Append: its bytes as sent (the content of its frame)
	// and the buffer of the frame (its capacity).
	held := func(t storage.Tile) int64 { return contentBytes(t.Value) + int64(cap(t.Value)) }
	for _, p := range []protocol{protocols[0], protocols[2]} {
		t.Run(p.name, func(t *testing.T) {
			ts, st := startIngestCheckServer(t, perStream, 2*perStream)
			st.measure = held
			c := ts.clients(t, p)
			createCodecVolume(t, c, "v", ldmv1.Codec_CODEC_ZSTD)
			stream := c.tiles.WriteTileStream(context.Background())
			sent := make(chan error, 1)
			go func() {
				for _, v := range values {
					if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "v", Tile: &ldmv1.Tile{Value: v}}); err != nil {
						sent <- err
						return
					}
				}
				sent <- stream.CloseRequest()
			}()
			// The stream takes what its budget lets it while the store
			// holds the first batch: more than half of it.
			testutil.WaitFor(t, 10*time.Second, "the stream's budget to fill, or a batch outside it", func() bool {
				return service.IngestBytesHeld(ts.Server) > perStream/2 || len(st.failures()) > 0
			})
			close(st.first)
			ackInOrder(t, stream, int(tiles), sent)
			for _, f := range st.failures() {
				t.Error(f)
			}
			for i, want := range values {
				got, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: uint64(i)}))
				if err != nil {
					t.Fatal(err)
				}
				if got.Msg.GetTile().GetCodec() != ldmv1.Codec_CODEC_ZSTD {
					t.Fatalf("tile %d: codec %v", i, got.Msg.GetTile().GetCodec())
				}
				if value, err := zstdcodec.Decode(nil, got.Msg.GetTile().GetValue(), content); err != nil || !bytes.Equal(value, want) {
					t.Fatalf("tile %d does not read back as sent: %v", i, err)
				}
			}
			testutil.WaitFor(t, 10*time.Second, "the ingest budget to be free", func() bool { return service.IngestBytesHeld(ts.Server) == 0 })
		})
	}
}

// TestWriteTile_raw_tiles_to_zstd_volume_are_held_to_the_ingest_budget:
// concurrent unary writes of raw tiles that do not compress, to a zstd
// volume, hold the buffers of their frames in the server's ingest budget
// (4 MiB: one at a time) until they are stored; every write succeeds.
func TestWriteTile_raw_tiles_to_zstd_volume_are_held_to_the_ingest_budget(t *testing.T) {
	const (
		content = 2 << 20
		limit   = 4 << 20
		writers = 4
	)
	for _, p := range []protocol{protocols[0], protocols[2]} {
		t.Run(p.name, func(t *testing.T) {
			ts, st := startIngestCheckServer(t, limit, limit)
			st.measure = func(t storage.Tile) int64 { return int64(cap(t.Value)) } // the call holds the tile as sent
			close(st.first)
			c := ts.clients(t, p)
			createCodecVolume(t, c, "v", ldmv1.Codec_CODEC_ZSTD)
			writeConcurrently(t, ts, st, c, writers, func(i int) *ldmv1.Tile { return &ldmv1.Tile{Value: randomBytes(content, uint64(i))} })
		})
	}
}

// TestWriteTile_zstd_content_is_held_to_the_ingest_budget: concurrent
// unary writes of small zstd frames that declare 2 MiB each hold their
// decoded bytes in the server's ingest budget (4 MiB: one at a time) until
// they are stored; every write succeeds.
func TestWriteTile_zstd_content_is_held_to_the_ingest_budget(t *testing.T) {
	const (
		content = 2 << 20
		limit   = 4 << 20
		writers = 4
	)
	frame := zstdcodec.Encode(nil, make([]byte, content), 3)
	for _, p := range []protocol{protocols[0], protocols[2]} {
		t.Run(p.name, func(t *testing.T) {
			ts, st := startIngestCheckServer(t, limit, limit)
			close(st.first)
			c := ts.clients(t, p)
			createCodecVolume(t, c, "v", ldmv1.Codec_CODEC_RAW)
			writeConcurrently(t, ts, st, c, writers, func(int) *ldmv1.Tile { return &ldmv1.Tile{Value: frame, Codec: ldmv1.Codec_CODEC_ZSTD} })
		})
	}
}

// TestWriteTile_refuses_zstd_frames_that_cannot_fit: a frame of a few KiB
// that declares more than the largest tile, or more than a tile may take
// of the ingest limits, is refused with ResourceExhausted naming the limit,
// before it is decoded (the server allocates far less than it declares),
// by WriteTile and by WriteTileStream (after acknowledging the tiles sent
// before it).
func TestWriteTile_refuses_zstd_frames_that_cannot_fit(t *testing.T) {
	const (
		maxTile   = 16 << 20
		perStream = 4 << 20
		server    = 8 << 20
	)
	overTile := zstdcodec.Encode(nil, make([]byte, 64<<20), 1)
	overStream := zstdcodec.Encode(nil, make([]byte, 12<<20), 1)
	cases := []struct {
		name   string
		stream bool
		frame  []byte
		flag   string
	}{
		{"unary_over_max_tile", false, overTile, "--max-tile-bytes"},
		{"unary_over_ingest_limit", false, overStream, "--max-ingest-bytes"},
		{"stream_over_max_tile", true, overTile, "--max-tile-bytes"},
		{"stream_over_stream_limit", true, overStream, "--max-stream-ingest-bytes"},
	}
	for _, p := range []protocol{protocols[0], protocols[2]} {
		ts := startServer(t, serverOptions{config: func(c *service.Config) {
			c.MaxTileBytes, c.MaxStreamIngestBytes, c.MaxIngestBytes = maxTile, perStream, server
		}})
		c := ts.clients(t, p)
		for _, tc := range cases {
			t.Run(p.name+"/"+tc.name, func(t *testing.T) {
				vol := strings.ReplaceAll(tc.name, "_", "-")
				createCodecVolume(t, c, vol, ldmv1.Codec_CODEC_RAW)
				declared, err := zstdcodec.ContentSize(tc.frame)
				if err != nil {
					t.Fatal(err)
				}
				var callErr error
				alloc := allocatedDuring(func() {
					if !tc.stream {
						_, callErr = c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: vol, Tile: &ldmv1.Tile{Value: tc.frame, Codec: ldmv1.Codec_CODEC_ZSTD}}))
						return
					}
					stream := c.tiles.WriteTileStream(context.Background())
					defer stream.CloseResponse()
					for _, tile := range []*ldmv1.Tile{{Value: []byte("small tile")}, {Value: tc.frame, Codec: ldmv1.Codec_CODEC_ZSTD}} {
						if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: vol, Tile: tile}); err != nil && !errors.Is(err, io.EOF) {
							callErr = err
							return
						}
					}
					_ = stream.CloseRequest()
					res, err := stream.Receive()
					if err != nil {
						callErr = fmt.Errorf("first tile: %w; want its offset before the error", err)
						return
					}
					if res.GetOffset() != 0 {
						callErr = fmt.Errorf("first tile at offset %d, want 0", res.GetOffset())
						return
					}
					_, callErr = stream.Receive()
				})
				ce := assertCode(t, callErr, connect.CodeResourceExhausted)
				if !strings.Contains(ce.Message(), tc.flag) {
					t.Errorf("message %q does not name %s", ce.Message(), tc.flag)
				}
				if alloc > declared/2 {
					t.Errorf("the server allocated %d MiB for a %d-byte frame that declares %d MiB; want it refused before decoding", alloc>>20, len(tc.frame), declared>>20)
				}
				info, err := ts.Store.Volume(vol)
				if err != nil {
					t.Fatal(err)
				}
				want := uint64(0)
				if tc.stream {
					want = 1
				}
				if info.NextOffset != want {
					t.Errorf("volume holds %d tiles, want %d", info.NextOffset, want)
				}
			})
		}
	}
}

// TestWriteTile_zstd_volume_checks_a_frame_in_one_window: a frame that a
// streaming encoder wrote (a 64 KiB window) declaring 32 MiB of zeros is
// checked for a zstd volume and stored as sent, without the server
// allocating its content.
func TestWriteTile_zstd_volume_checks_a_frame_in_one_window(t *testing.T) {
	const content = 32 << 20
	var buf bytes.Buffer
	e, err := zstd.NewWriter(nil, zstd.WithWindowSize(64<<10), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	e.ResetContentSize(&buf, content)
	if _, err := e.Write(make([]byte, content)); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	frame := buf.Bytes()
	for _, p := range []protocol{protocols[0], protocols[2]} {
		t.Run(p.name, func(t *testing.T) {
			ts := startServer(t, serverOptions{})
			c := ts.clients(t, p)
			createCodecVolume(t, c, "z", ldmv1.Codec_CODEC_ZSTD)
			var werr error
			alloc := allocatedDuring(func() {
				_, werr = c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "z", Tile: &ldmv1.Tile{Value: frame, Codec: ldmv1.Codec_CODEC_ZSTD}}))
			})
			if werr != nil {
				t.Fatal(werr)
			}
			if alloc > content/2 {
				t.Errorf("checking a %d-byte frame with a 64 KiB window that declares %d MiB allocated %d MiB; want about a window", len(frame), content>>20, alloc>>20)
			}
			got, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "z"}))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Msg.GetTile().GetValue(), frame) {
				t.Fatalf("stored %d bytes, want the %d bytes of the frame as sent", len(got.Msg.GetTile().GetValue()), len(frame))
			}
		})
	}
}

// TestWriteTile_refuses_raw_tiles_whose_compressed_copy_cannot_fit: a raw
// tile sent to a zstd volume whose compressed copy (at its largest) would
// take more than one tile may of an ingest limit is refused with
// ResourceExhausted naming the limit, by WriteTile and by WriteTileStream
// (after acknowledging the tile before it); the same tile is stored in a
// raw volume.
func TestWriteTile_refuses_raw_tiles_whose_compressed_copy_cannot_fit(t *testing.T) {
	const (
		perStream = 4 << 20
		server    = 8 << 20
	)
	unaryTile := make([]byte, 7<<20)  // its copy: above three quarters of 8 MiB
	streamTile := make([]byte, 3<<20) // with its copy: above three quarters of 4 MiB
	for _, p := range []protocol{protocols[0], protocols[2]} {
		ts := startServer(t, serverOptions{config: func(c *service.Config) {
			c.MaxStreamIngestBytes, c.MaxIngestBytes = perStream, server
		}})
		c := ts.clients(t, p)
		for _, codec := range []ldmv1.Codec{ldmv1.Codec_CODEC_ZSTD, ldmv1.Codec_CODEC_RAW} {
			name := strings.ToLower(strings.TrimPrefix(codec.String(), "CODEC_"))
			t.Run(p.name+"/"+name+"_volume", func(t *testing.T) {
				createCodecVolume(t, c, name, codec)
				_, unaryErr := c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: name, Tile: &ldmv1.Tile{Value: unaryTile}}))
				stream := c.tiles.WriteTileStream(context.Background())
				defer stream.CloseResponse()
				for _, v := range [][]byte{[]byte("small tile"), streamTile} {
					if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: name, Tile: &ldmv1.Tile{Value: v}}); err != nil && !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
				}
				_ = stream.CloseRequest()
				if _, err := stream.Receive(); err != nil {
					t.Fatalf("first tile: %v; want its offset", err)
				}
				_, streamErr := stream.Receive()
				if codec == ldmv1.Codec_CODEC_RAW {
					if unaryErr != nil || streamErr != nil {
						t.Fatalf("raw volume: WriteTile %v, stream %v; want both stored", unaryErr, streamErr)
					}
					return
				}
				for what, err := range map[string]error{"--max-ingest-bytes": unaryErr, "--max-stream-ingest-bytes": streamErr} {
					ce := assertCode(t, err, connect.CodeResourceExhausted)
					if !strings.Contains(ce.Message(), what) || !strings.Contains(ce.Message(), "compressed") {
						t.Errorf("message %q does not name %s and the compressed copy", ce.Message(), what)
					}
				}
				if info, err := ts.Store.Volume(name); err != nil || info.NextOffset != 1 {
					t.Errorf("volume holds %d tiles (%v), want 1", info.NextOffset, err)
				}
			})
		}
	}
}

// ackInOrder receives the acknowledgements of n tiles sent on stream, which
// must carry offsets 0 to n-1 in order, then the sender's result from sent
// (io.EOF, a stream the server ended, counts as sent), and closes the
// stream.
func ackInOrder(t *testing.T, stream *connect.BidiStreamForClient[ldmv1.WriteTileStreamRequest, ldmv1.WriteTileStreamResponse], n int, sent <-chan error) {
	t.Helper()
	for i := range n {
		res, err := stream.Receive()
		if err != nil {
			t.Fatalf("tile %d: %v", i, err)
		}
		if res.GetOffset() != uint64(i) {
			t.Fatalf("tile %d got offset %d", i, res.GetOffset())
		}
	}
	if err := <-sent; err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	_ = stream.CloseResponse()
}

// writeConcurrently makes n unary WriteTile calls at once to volume "v"
// (tile(i) for writer i) and checks that every one succeeds, the store saw
// no batch outside the budgets, the volume holds n tiles and the ingest
// budget is free once they have returned.
func writeConcurrently(t *testing.T, ts *testServer, st *ingestCheckStore, c apiClients, n int, tile func(i int) *ldmv1.Tile) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: tile(i)}))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	for _, f := range st.failures() {
		t.Error(f)
	}
	if info, err := ts.Store.Volume("v"); err != nil || info.NextOffset != uint64(n) {
		t.Fatalf("volume holds %d tiles (%v), want %d", info.NextOffset, err, n)
	}
	if held := service.IngestBytesHeld(ts.Server); held != 0 {
		t.Fatalf("ingest budget holds %d bytes after every write returned", held)
	}
}
