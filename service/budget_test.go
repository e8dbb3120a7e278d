package service_test

import (
	"context"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/h2conf"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// smallWindowClient is an HTTP/2 client that buffers at most 64 KiB per
// connection: a stream it does not read stalls the server at once.
func smallWindowClient(tb testing.TB) *http.Client {
	tr := h2conf.Transport(nil)
	tr.HTTP2.MaxReceiveBufferPerConnection = 64 << 10
	tr.HTTP2.MaxReceiveBufferPerStream = 64 << 10
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestReadTileStream_clients_that_do_not_read_hold_at_most_the_read_budget:
// 24 clients each start a stream of 4 MiB tiles and never read. The
// server holds at most MaxReadBytes of tiles for them (the others wait
// holding nothing), not a tile (and its encoded copy) per client.
func TestReadTileStream_clients_that_do_not_read_hold_at_most_the_read_budget(t *testing.T) {
	const (
		tileSize = 4 << 20
		clients  = 24
		budget   = 8 << 20
	)
	store, err := storage.Open(t.TempDir(), storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ts := startServer(t, serverOptions{store: store, config: func(c *service.Config) { c.MaxReadBytes = budget }})
	c := ts.clients(t, protocols[0])
	createVolume(t, c, "big")
	for range 4 {
		if _, err := c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "big", Tile: &ldmv1.Tile{Value: make([]byte, tileSize)}})); err != nil {
			t.Fatal(err)
		}
	}
	base := heapInUse()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for range clients {
		tc := ldmv1connect.NewTileServiceClient(smallWindowClient(t), ts.URL, connect.WithReadMaxBytes(1<<30))
		stream, err := tc.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "big", Follow: true}))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); <-ctx.Done(); stream.Close() }()
	}
	testutil.WaitFor(t, 10*time.Second, "the read budget to fill", func() bool { return service.ReadBytesHeld(ts.Server) >= budget/2 })
	grown := int64(heapInUse()) - int64(base)
	if grown > 48<<20 {
		t.Errorf("%d clients that do not read grew the heap by %d MiB; want about twice the %d MiB read budget", clients, grown>>20, budget>>20)
	}
	if held := service.ReadBytesHeld(ts.Server); held > budget {
		t.Errorf("read budget in use %d > %d", held, budget)
	}
}

// blockingStore blocks Append until release is closed.
type blockingStore struct {
	service.Tiles
	release chan struct{}
}

func (b *blockingStore) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	select {
	case <-b.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return b.Tiles.Append(ctx, volume, tiles...)
}

// TestWriteTileStream_queue_is_bounded_in_bytes: while the store does not
// take tiles, one stream of 4 MiB tiles queues at most
// MaxStreamIngestBytes, not 64 messages of any size; then every tile is
// stored and acknowledged in order.
func TestWriteTileStream_queue_is_bounded_in_bytes(t *testing.T) {
	const (
		tileSize  = 4 << 20
		perStream = 16 << 20
		tiles     = 40
	)
	bs := &blockingStore{Tiles: storage.NewMemory(0), release: make(chan struct{})}
	ts := startServer(t, serverOptions{store: bs, config: func(c *service.Config) { c.MaxStreamIngestBytes = perStream }})
	c := ts.clients(t, protocols[0])
	createVolume(t, c, "ingest")
	base := heapInUse()
	stream := c.tiles.WriteTileStream(context.Background())
	sent := make(chan error, 1)
	go func() {
		value := make([]byte, tileSize)
		for range tiles {
			if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "ingest", Tile: &ldmv1.Tile{Value: value}}); err != nil {
				sent <- err
				return
			}
		}
		sent <- stream.CloseRequest()
	}()
	testutil.WaitFor(t, 10*time.Second, "the stream's queue to fill", func() bool { return service.IngestBytesHeld(ts.Server) >= perStream/2 })
	grown := int64(heapInUse()) - int64(base)
	if grown > 64<<20 {
		t.Errorf("one stream whose tiles the store does not take grew the heap by %d MiB; want about its %d MiB queue", grown>>20, perStream>>20)
	}
	if held := service.IngestBytesHeld(ts.Server); held > perStream {
		t.Errorf("stream queue holds %d bytes > %d", held, perStream)
	}
	close(bs.release)
	ackInOrder(t, stream, int(tiles), sent)
	testutil.WaitFor(t, 10*time.Second, "the ingest budget to be free", func() bool { return service.IngestBytesHeld(ts.Server) == 0 })
}

// TestServer_Drain_ends_stream_blocked_on_client: a follow stream whose
// client stops reading is blocked in Send on HTTP/2 flow control. Drain
// must end it after DrainGrace (the handler returns and lets go of its
// tile), not leave it to the shutdown timeout.
func TestServer_Drain_ends_stream_blocked_on_client(t *testing.T) {
	store, err := storage.Open(t.TempDir(), storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ts := startServer(t, serverOptions{store: store, config: func(c *service.Config) { c.DrainGrace = 100 * time.Millisecond }})
	c := ts.clients(t, protocols[0])
	createVolume(t, c, "follow")
	tc := ldmv1connect.NewTileServiceClient(smallWindowClient(t), ts.URL, connect.WithReadMaxBytes(1<<30))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := tc.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "follow", Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if _, err := c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "follow", Tile: &ldmv1.Tile{Value: make([]byte, 4<<20)}})); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the stream to block on the client", func() bool { return service.ReadBytesHeld(ts.Server) > 0 })
	ts.Server.Drain()
	testutil.WaitFor(t, 10*time.Second, "the blocked stream to end after Drain", func() bool { return service.ReadBytesHeld(ts.Server) == 0 })
}
