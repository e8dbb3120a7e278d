package service_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// encodedVolume opens a file store in a temporary directory with volume
// "v": tiles of several sizes, with and without brick keys, the first at
// offset 0 (whose offset field proto3 omits). It returns the store and its
// directory.
func encodedVolume(tb testing.TB) (*storage.Store, string) {
	tb.Helper()
	dir := tb.TempDir()
	store, err := storage.Open(dir, storage.Config{Sync: storage.SyncNone})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	ctx := context.Background()
	if _, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 1024, Y: 1024, Z: 1024}, DataType: storage.Uint8, LODCount: 2}); err != nil {
		tb.Fatal(err)
	}
	for i, n := range []int{1, 127, 128, 300 << 10, 5000} {
		t := storage.Tile{Value: tileBytes(n, byte(i))}
		if i%2 == 0 {
			t.HasKey, t.Key = true, storage.BrickKey{LOD: uint32(i % 2), X: uint32(i), Y: 7, Z: 0}
		}
		if _, err := store.Append(ctx, "v", t); err != nil {
			tb.Fatal(err)
		}
	}
	return store, dir
}

// oldTile is the tile message the handlers built before tiles were passed
// through encoded: the store's Read converted with apiconv.TileToAPI, with
// the volume's codec (raw), which reads always say.
func oldTile(tb testing.TB, store storage.LDM, off uint64) *ldmv1.Tile {
	tb.Helper()
	t, err := store.Read("v", off)
	if err != nil {
		tb.Fatal(err)
	}
	out := apiconv.TileToAPI(t)
	out.Codec = ldmv1.Codec_CODEC_RAW
	return out
}

// TestService_ReadTile_encoded checks that ReadTile, GetBrick and
// ReadTileStream, which pass each tile's kept encoding through, answer
// exactly the messages the marshaling path made, in every protocol with
// real clients over sockets: decoded by connect-go (Connect binary and
// JSON, gRPC, gRPC-Web) and by grpc-go, and byte for byte in the binary
// protocols.
func TestService_ReadTile_encoded(t *testing.T) {
	t.Parallel()
	store, _ := encodedVolume(t)
	ts := startServer(t, serverOptions{store: store})
	ctx := context.Background()
	info, err := store.Volume("v")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := ts.clients(t, p)
			for off := range info.NextOffset {
				want := oldTile(t, store, off)
				r, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: off}))
				if err != nil {
					t.Fatalf("ReadTile(%d): %v", off, err)
				}
				if !proto.Equal(r.Msg, &ldmv1.ReadTileResponse{Tile: want}) {
					t.Fatalf("ReadTile(%d) = a different message (offset %d, %d bytes, key %v)", off, r.Msg.GetTile().GetOffset(), len(r.Msg.GetTile().GetValue()), r.Msg.GetTile().GetKey())
				}
				if want.Key != nil {
					b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: want.Key}))
					if err != nil {
						t.Fatalf("GetBrick(%v): %v", want.Key, err)
					}
					if !proto.Equal(b.Msg, &ldmv1.GetBrickResponse{Tile: want}) {
						t.Fatalf("GetBrick(%v) = a different message", want.Key)
					}
				}
			}
			// StreamBricks over the whole volume, and by keys with one
			// missing brick.
			bs, err := c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "v"}))
			if err != nil {
				t.Fatal(err)
			}
			bricks := receiveAll(t, bs)
			if len(bricks) != 3 {
				t.Fatalf("StreamBricks sent %d bricks, want 3", len(bricks))
			}
			for i, m := range bricks {
				want := &ldmv1.StreamBricksResponse{Tile: oldTile(t, store, m.GetTile().GetOffset()), Total: 3, Index: uint32(i)}
				if !proto.Equal(m, want) {
					t.Fatalf("StreamBricks message %d differs", i)
				}
			}
			missing := &ldmv1.BrickKey{X: 9}
			bs, err = c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "v", Keys: []*ldmv1.BrickKey{{X: 4, Y: 7}, missing}}))
			if err != nil {
				t.Fatal(err)
			}
			bricks = receiveAll(t, bs)
			if len(bricks) != 2 || !proto.Equal(bricks[0], &ldmv1.StreamBricksResponse{Tile: oldTile(t, store, 4), Total: 2}) ||
				!proto.Equal(bricks[1], &ldmv1.StreamBricksResponse{Missing: missing, Total: 2, Index: 1}) {
				t.Fatalf("StreamBricks by keys = %v", bricks)
			}
			s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v", Offset: 1}))
			if err != nil {
				t.Fatal(err)
			}
			got := receiveAll(t, s)
			if uint64(len(got)) != info.NextOffset-1 {
				t.Fatalf("ReadTileStream sent %d tiles, want %d", len(got), info.NextOffset-1)
			}
			for i, m := range got {
				if !proto.Equal(m, &ldmv1.ReadTileStreamResponse{Tile: oldTile(t, store, uint64(i+1))}) {
					t.Fatalf("ReadTileStream message %d differs", i)
				}
			}
		})
	}
	t.Run("binary_bytes", func(t *testing.T) {
		t.Parallel()
		for _, p := range []struct {
			name string
			opts []connect.ClientOption
		}{{"connect", nil}, {"grpc", []connect.ClientOption{connect.WithGRPC()}}, {"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}}} {
			c := connect.NewClient[[]byte, []byte](ts.httpClient(t), ts.URL+"/ldm.v1.TileService/ReadTile",
				append([]connect.ClientOption{connect.WithCodec(rawCodec{})}, p.opts...)...)
			for off := range info.NextOffset {
				in, _ := proto.Marshal(&ldmv1.ReadTileRequest{Volume: "v", Offset: off})
				res, err := c.CallUnary(ctx, connect.NewRequest(&in))
				if err != nil {
					t.Fatalf("%s ReadTile(%d): %v", p.name, off, err)
				}
				want, _ := proto.Marshal(&ldmv1.ReadTileResponse{Tile: oldTile(t, store, off)})
				if !bytes.Equal(*res.Msg, want) {
					t.Fatalf("%s ReadTile(%d): %d bytes on the wire that differ from proto.Marshal's %d", p.name, off, len(*res.Msg), len(want))
				}
			}
		}
	})
	t.Run("grpc_go", func(t *testing.T) {
		t.Parallel()
		conn, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for off := range info.NextOffset {
			var res ldmv1.ReadTileResponse
			if err := conn.Invoke(ctx, "/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "v", Offset: off}, &res); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&res, &ldmv1.ReadTileResponse{Tile: oldTile(t, store, off)}) {
				t.Fatalf("grpc-go ReadTile(%d) = a different message", off)
			}
		}
	})
	for _, p := range []protocol{
		{"connect_get", []connect.ClientOption{connect.WithHTTPGet()}},
		{"connect_json_get", []connect.ClientOption{connect.WithHTTPGet(), connect.WithProtoJSON()}},
	} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := ts.clients(t, p)
			r, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 3}))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(r.Msg, &ldmv1.ReadTileResponse{Tile: oldTile(t, store, 3)}) || r.Header().Get("ETag") == "" {
				t.Fatalf("ReadTile over GET = a different message or no ETag (%q)", r.Header().Get("ETag"))
			}
			b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{X: 2, Y: 7}}))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(b.Msg, &ldmv1.GetBrickResponse{Tile: oldTile(t, store, 2)}) || b.Header().Get("ETag") == "" {
				t.Fatalf("GetBrick over GET = a different message or no ETag (%q)", b.Header().Get("ETag"))
			}
		})
	}
}

// TestService_ReadTile_encoded_errors checks that the errors of the
// pass-through reads are decided before any byte of a tile is sent: a tile
// damaged on disk before its first read is DataLoss (and a stream that
// reaches it sends nothing more), a missing volume or brick NotFound, an
// offset past the end OutOfRange; in every protocol.
func TestService_ReadTile_encoded_errors(t *testing.T) {
	t.Parallel()
	store, dir := encodedVolume(t)
	ts := startServer(t, serverOptions{store: store})
	ctx := context.Background()
	// Damage tile 2 (offset of its value: the file header, records 0 and
	// 1 of 1 and 127 bytes, the record header of 2).
	at := int64(32 + (48 + 1) + (48 + 127) + 48 + 64)
	f, err := os.OpenFile(filepath.Join(dir, "v", "00000000000000000000.data"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	f.Close()
	key2 := &ldmv1.BrickKey{Lod: 0, X: 2, Y: 7}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := ts.clients(t, p)
			for _, tc := range []struct {
				name string
				call func() error
				want connect.Code
			}{
				{"damaged_tile", func() error {
					_, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 2}))
					return err
				}, connect.CodeDataLoss},
				{"damaged_brick", func() error {
					_, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: key2}))
					return err
				}, connect.CodeDataLoss},
				{"missing_volume", func() error {
					_, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "nope", Offset: 0}))
					return err
				}, connect.CodeNotFound},
				{"missing_brick", func() error {
					_, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{X: 9}}))
					return err
				}, connect.CodeNotFound},
				{"past_the_end", func() error {
					_, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 5}))
					return err
				}, connect.CodeOutOfRange},
				{"stream_to_damaged_tile", func() error {
					s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v", Offset: 2}))
					if err != nil {
						return err
					}
					defer s.Close()
					if s.Receive() {
						return fmt.Errorf("the stream sent tile %d", s.Msg().GetTile().GetOffset())
					}
					return s.Err()
				}, connect.CodeDataLoss},
				{"stream_past_the_end", func() error {
					s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v", Offset: 6}))
					if err != nil {
						return err
					}
					defer s.Close()
					if s.Receive() {
						return errors.New("the stream sent a tile")
					}
					return s.Err()
				}, connect.CodeOutOfRange},
			} {
				for range 2 { // the failed check is not remembered as passed
					if err := tc.call(); connect.CodeOf(err) != tc.want {
						t.Fatalf("%s: %v, want %v", tc.name, err, tc.want)
					}
				}
			}
		})
	}
	t.Run("grpc_go", func(t *testing.T) {
		t.Parallel()
		conn, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var res ldmv1.ReadTileResponse
		err = conn.Invoke(ctx, "/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "v", Offset: 2}, &res)
		if status.Code(err) != codes.DataLoss || res.GetTile() != nil {
			t.Fatalf("grpc-go ReadTile of a damaged tile = %v (tile %v), want DataLoss and no tile", err, res.GetTile() != nil)
		}
	})
	t.Run("connect_status_before_body", func(t *testing.T) {
		t.Parallel()
		// A Connect unary error is an HTTP error status with a JSON body:
		// nothing of a tile was sent before it.
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.TileService/ReadTile", bytes.NewReader(mustMarshal(t, &ldmv1.ReadTileRequest{Volume: "v", Offset: 2})))
		req.Header.Set("Content-Type", "application/proto")
		resp, err := ts.httpClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("ReadTile of a damaged tile: HTTP %d, %s; want an error status with a JSON error", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestService_ReadTile_encoded_concurrent reads tiles in every way from
// many goroutines while tiles are appended (the active block's mapping
// grows) and then the volume is deleted; run with -race.
func TestService_ReadTile_encoded_concurrent(t *testing.T) {
	t.Parallel()
	store, _ := encodedVolume(t)
	ts := startServer(t, serverOptions{store: store})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 12 {
			if _, err := store.Append(ctx, "v", storage.Tile{Value: tileBytes(16<<10, byte(i)), HasKey: true, Key: storage.BrickKey{X: 3, Y: uint32(i % 16)}}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for g := range 8 {
		c := ts.clients(t, protocols[g%len(protocols)])
		wg.Go(func() {
			for i := range 6 {
				off := uint64((g + i) % 5)
				r, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: off}))
				if err != nil {
					t.Errorf("ReadTile(%d): %v", off, err)
					return
				}
				if !proto.Equal(r.Msg.GetTile(), oldTile(t, store, off)) {
					t.Errorf("ReadTile(%d) differs", off)
					return
				}
				if _, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{X: 0, Y: 7}})); err != nil {
					t.Errorf("GetBrick: %v", err)
					return
				}
				s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v", Offset: 3}))
				if err != nil {
					t.Errorf("ReadTileStream: %v", err)
					return
				}
				n := 0
				for s.Receive() {
					n++
				}
				if err := s.Err(); err != nil || n < 2 {
					t.Errorf("ReadTileStream: %d tiles, %v", n, err)
				}
				s.Close()
			}
		})
	}
	wg.Wait()
	if err := store.DeleteVolume(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	c := ts.clients(t, protocols[0])
	if _, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("ReadTile after DeleteVolume = %v, want NotFound", err)
	}
}

// viewCountingStore counts the views a file store hands out and gives back.
type viewCountingStore struct {
	*storage.Store
	views, released atomic.Int64
}

func (s *viewCountingStore) count(t storage.Tile, release func(), err error) (storage.Tile, func(), error) {
	if err != nil {
		return t, release, err
	}
	s.views.Add(1)
	return t, func() { release(); s.released.Add(1) }, nil
}

func (s *viewCountingStore) ReadView(volume string, offset uint64) (storage.Tile, func(), error) {
	return s.count(s.Store.ReadView(volume, offset))
}

func (s *viewCountingStore) BrickView(volume string, key storage.BrickKey) (storage.Tile, func(), error) {
	return s.count(s.Store.BrickView(volume, key))
}

// TestService_ReadTile_views checks that every tile read serves from the
// store's views when it has them, and releases each view (and its read
// budget) once the response is written.
func TestService_ReadTile_views(t *testing.T) {
	t.Parallel()
	fs, _ := encodedVolume(t)
	store := &viewCountingStore{Store: fs}
	ts := startServer(t, serverOptions{store: store})
	c := ts.clients(t, protocols[0])
	ctx := context.Background()
	if _, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 1})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{X: 2, Y: 7}})); err != nil {
		t.Fatal(err)
	}
	s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v"}))
	if err != nil {
		t.Fatal(err)
	}
	receiveAll(t, s)
	bs, err := c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "v"}))
	if err != nil {
		t.Fatal(err)
	}
	receiveAll(t, bs)
	const want = 1 + 1 + 5 + 3
	testutil.WaitFor(t, 10*time.Second, "every view released", func() bool { return store.released.Load() == want })
	if n := store.views.Load(); n != want {
		t.Fatalf("%d views taken, want %d (one per tile sent)", n, want)
	}
	testutil.WaitFor(t, 10*time.Second, "the read budget given back", func() bool { return service.ReadBytesHeld(ts.Server) == 0 })
}
