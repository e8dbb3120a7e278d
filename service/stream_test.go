package service_test

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

func createVolume(tb testing.TB, c apiClients, name string) {
	tb.Helper()
	if _, err := c.volumes.CreateVolume(context.Background(), connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: name, Shape: &ldmv1.Shape{X: 1024, Y: 1024, Z: 1024}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: 2,
	}})); err != nil {
		tb.Fatal(err)
	}
}

// TestReadTileStream_FollowSeesEveryTileOf8Writers starts a follow
// stream, then 8 writers append concurrently; the stream must deliver
// every tile in offset order, exactly once, and each writer's tiles in the
// order it wrote them.
func TestReadTileStream_FollowSeesEveryTileOf8Writers(t *testing.T) {
	t.Parallel()
	for _, p := range []protocol{protocols[0], protocols[2], protocols[3]} {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			store := &countingStore{Tiles: storage.NewMemory(0)}
			ts := startServer(t, serverOptions{store: store})
			c := ts.clients(t, p)
			createVolume(t, c, "live")
			const writers, perWriter = 8, 50
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			follow, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "live", Follow: true}))
			if err != nil {
				t.Fatal(err)
			}
			defer follow.Close()
			// Every tile is written after the server waits for offset 0.
			testutil.WaitFor(t, 10*time.Second, "the follower to wait", func() bool { w, _ := store.counts(); return w == 1 })
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Go(func() {
					for i := range perWriter {
						v := make([]byte, 8+w*100)
						binary.LittleEndian.PutUint32(v[0:], uint32(w))
						binary.LittleEndian.PutUint32(v[4:], uint32(i))
						if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "live", Tile: &ldmv1.Tile{Value: v}})); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			next := make([]uint32, writers)
			for off := range uint64(writers * perWriter) {
				if !follow.Receive() {
					t.Fatalf("follow stream ended after %d tiles: %v", off, follow.Err())
				}
				tl := follow.Msg().GetTile()
				if tl.GetOffset() != off {
					t.Fatalf("tile %d has offset %d", off, tl.GetOffset())
				}
				w, i := binary.LittleEndian.Uint32(tl.GetValue()), binary.LittleEndian.Uint32(tl.GetValue()[4:])
				if w >= writers || i != next[w] || len(tl.GetValue()) != 8+int(w)*100 {
					t.Fatalf("offset %d: writer %d tile %d, want tile %d", off, w, i, next[w])
				}
				next[w]++
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			// One more write arrives too: the stream is still following.
			if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "live", Tile: &ldmv1.Tile{Value: []byte("last")}})); err != nil {
				t.Fatal(err)
			}
			if !follow.Receive() || string(follow.Msg().GetTile().GetValue()) != "last" {
				t.Fatalf("the tile written last did not arrive: %v", follow.Err())
			}
		})
	}
}

// TestReadTileStream_FollowFreesStreamWhenClientLeaves checks that a
// follower that goes away stops waiting on the store at once, and that
// Drain ends followers cleanly.
func TestReadTileStream_FollowFreesStreamWhenClientLeaves(t *testing.T) {
	t.Parallel()
	store := &countingStore{Tiles: storage.NewMemory(0)}
	ts := startServer(t, serverOptions{store: store})
	c := ts.clients(t, protocols[2])
	createVolume(t, c, "idle")

	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "idle", Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the follower to wait on the store", func() bool { w, _ := store.counts(); return w == 1 })
	cancel()
	testutil.WaitFor(t, 10*time.Second, "the server to free the stream", func() bool { w, _ := store.counts(); return w == 0 })
	s.Close()

	// Drain ends an open follower without error.
	s2, err := c.tiles.ReadTileStream(context.Background(), connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "idle", Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	testutil.WaitFor(t, 10*time.Second, "the second follower to wait", func() bool { w, _ := store.counts(); return w == 1 })
	ts.Server.Drain()
	if s2.Receive() {
		t.Fatal("a drained follower received a tile")
	}
	if err := s2.Err(); err != nil {
		t.Fatalf("a drained follower ended with %v, want a clean end", err)
	}
}

// TestReadTileStream_FollowEndsWhenVolumeDeleted checks that deleting
// the volume ends its followers with NotFound.
func TestReadTileStream_FollowEndsWhenVolumeDeleted(t *testing.T) {
	t.Parallel()
	store := &countingStore{Tiles: storage.NewMemory(0)}
	ts := startServer(t, serverOptions{store: store})
	c := ts.clients(t, protocols[0])
	createVolume(t, c, "gone")
	s, err := c.tiles.ReadTileStream(context.Background(), connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "gone", Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testutil.WaitFor(t, 10*time.Second, "the follower to wait", func() bool { w, _ := store.counts(); return w == 1 })
	if _, err := c.volumes.DeleteVolume(context.Background(), connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: "gone"})); err != nil {
		t.Fatal(err)
	}
	if s.Receive() {
		t.Fatal("received a tile from a deleted volume")
	}
	assertCode(t, s.Err(), connect.CodeNotFound)
}

// TestStreamBricks_SlowReaderBoundsServerReads checks flow control: a
// client that stops reading stops the server after about one flow-control
// window of bricks, not after the whole volume.
func TestStreamBricks_SlowReaderBoundsServerReads(t *testing.T) {
	t.Parallel()
	store := &countingStore{Tiles: storage.NewMemory(0)}
	ts := startServer(t, serverOptions{store: store})
	c := ts.clients(t, protocols[0])
	createVolume(t, c, "big")
	const bricks, brickBytes = 160, 256 << 10 // 40 MiB, above the 16 MiB stream window
	ctx := context.Background()
	ws := c.tiles.WriteTileStream(ctx)
	for i := range bricks {
		if err := ws.Send(&ldmv1.WriteTileStreamRequest{Volume: "big", Tile: &ldmv1.Tile{
			Value: make([]byte, brickBytes), Key: &ldmv1.BrickKey{X: uint32(i % 16), Y: uint32(i / 16)},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ws.CloseRequest(); err != nil {
		t.Fatal(err)
	}
	for range bricks {
		if _, err := ws.Receive(); err != nil {
			t.Fatal(err)
		}
	}
	_ = ws.CloseResponse()

	_, before := store.counts()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "big", MaxLod: ptr(uint32(0))}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Receive() {
		t.Fatal(s.Err())
	}
	// Wait until the server stops reading ahead: the read count holds
	// still for 200 ms.
	last, since := -1, time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for time.Since(since) < 200*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("the server kept reading bricks for a client that does not read")
		}
		_, r := store.counts()
		if r != last {
			last, since = r, time.Now()
		}
		time.Sleep(5 * time.Millisecond)
	}
	ahead := last - before
	if ahead >= bricks {
		t.Fatalf("the server read all %d bricks for a client that read one", ahead)
	}
	t.Logf("server read %d of %d bricks ahead of a client that read one", ahead, bricks)
	// Reading on delivers the rest.
	n := 1
	for s.Receive() {
		n++
	}
	if err := s.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if n != bricks {
		t.Fatalf("received %d bricks, want %d", n, bricks)
	}
}

// TestWriteTileStream_EndsOnDrain checks that Drain ends an open ingest
// stream with Unavailable instead of holding shutdown until the client
// closes it, and that the tiles acknowledged before are stored.
func TestWriteTileStream_EndsOnDrain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	c := ts.clients(t, protocols[1])
	createVolume(t, c, "ingest")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws := c.tiles.WriteTileStream(ctx)
	defer ws.CloseResponse()
	defer ws.CloseRequest() //nolint:errcheck // ends the server's Receive if the stream is still open
	if err := ws.Send(&ldmv1.WriteTileStreamRequest{Volume: "ingest", Tile: &ldmv1.Tile{Value: []byte("kept")}}); err != nil {
		t.Fatal(err)
	}
	if res, err := ws.Receive(); err != nil || res.GetOffset() != 0 {
		t.Fatalf("first ack: %v %v", res, err)
	}
	ts.Server.Drain()
	_, err := ws.Receive()
	assertCode(t, err, connect.CodeUnavailable)
	got, err := ts.Store.Read("ingest", 0)
	if err != nil || string(got.Value) != "kept" {
		t.Fatalf("acknowledged tile after drain: %q %v", got.Value, err)
	}
}
