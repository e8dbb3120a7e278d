package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// The benchmarks serve the same tiles from memory three ways over
// loopback: go-ldm (this package, connect-go with the tuned HTTP/2 server
// and transport) called by connect-go clients; go-ldm called by grpc-go;
// and a plain grpc-go server (the baseline) called by grpc-go. Tiles are
// 256 KiB and 2 MiB; concurrency 1, 8 and 64.

const benchTiles = 16 // tiles per volume; streams send all of them

// The HTTP/2 receive windows of service.NewTransport (per stream and per
// connection), given to the grpc-go client and server too.
const (
	benchStreamWindow = 16 << 20
	benchConnWindow   = 64 << 20
)

var (
	benchSizes       = []int{256 << 10, 2 << 20}
	benchConcurrency = []int{1, 8, 64}
)

// benchVolume fills a file store in a temporary directory (the store
// `ldm serve` runs; its tiles stay in the page cache) with benchTiles tiles
// of size bytes as LOD 0 bricks, and returns it with the same tiles as API
// messages (what the baseline serves).
func benchVolume(tb testing.TB, size int) (*storage.Store, []*ldmv1.Tile) {
	tb.Helper()
	store, err := storage.Open(tb.TempDir(), storage.Config{Sync: storage.SyncNone})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	ctx := context.Background()
	if _, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: "bench", Shape: storage.Shape{X: 4096, Y: 4096, Z: 64}, DataType: storage.Uint8}); err != nil {
		tb.Fatal(err)
	}
	tiles := make([]*ldmv1.Tile, benchTiles)
	for i := range benchTiles {
		v := tileBytes(size, byte(i))
		key := storage.BrickKey{X: uint32(i % 4), Y: uint32(i / 4)}
		off, err := store.Append(ctx, "bench", storage.Tile{Value: v, HasKey: true, Key: key})
		if err != nil {
			tb.Fatal(err)
		}
		tiles[i] = &ldmv1.Tile{Value: v, Offset: off, Crc32C: storage.Checksum(v), Key: &ldmv1.BrickKey{X: key.X, Y: key.Y}}
	}
	return store, tiles
}

// baselineServer is a plain grpc-go server of ReadTile, ReadTileStream and
// StreamBricks that answers from prebuilt messages in memory.
type baselineServer struct{ tiles []*ldmv1.Tile }

func (s *baselineServer) readTile(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var req ldmv1.ReadTileRequest
	if err := dec(&req); err != nil {
		return nil, err
	}
	return &ldmv1.ReadTileResponse{Tile: s.tiles[req.GetOffset()%benchTiles]}, nil
}

func (s *baselineServer) readTileStream(_ any, stream grpc.ServerStream) error {
	var req ldmv1.ReadTileStreamRequest
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	for _, t := range s.tiles[req.GetOffset():] {
		if err := stream.SendMsg(&ldmv1.ReadTileStreamResponse{Tile: t}); err != nil {
			return err
		}
	}
	return nil
}

func (s *baselineServer) streamBricks(_ any, stream grpc.ServerStream) error {
	var req ldmv1.StreamBricksRequest
	if err := stream.RecvMsg(&req); err != nil {
		return err
	}
	for i, t := range s.tiles {
		if err := stream.SendMsg(&ldmv1.StreamBricksResponse{Tile: t, Total: benchTiles, Index: uint32(i)}); err != nil {
			return err
		}
	}
	return nil
}

// startBaseline serves tiles with grpc-go on 127.0.0.1:0.
func startBaseline(tb testing.TB, tiles []*ldmv1.Tile) string {
	tb.Helper()
	s := &baselineServer{tiles: tiles}
	// grpc-go's defaults plus the same flow-control windows as go-ldm's
	// server and transport, so neither side waits on a smaller window.
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(1<<30), grpc.MaxSendMsgSize(1<<30),
		grpc.InitialWindowSize(benchStreamWindow), grpc.InitialConnWindowSize(benchConnWindow))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "ldm.v1.TileService",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "ReadTile", Handler: s.readTile}},
		Streams:     []grpc.StreamDesc{{StreamName: "ReadTileStream", Handler: s.readTileStream, ServerStreams: true}},
	}, s)
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "ldm.v1.VolumeService",
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{{StreamName: "StreamBricks", Handler: s.streamBricks, ServerStreams: true}},
	}, s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Serve(l)
	tb.Cleanup(srv.Stop)
	return l.Addr().String()
}

// benchCall is one operation of a benchmark: one unary call or one whole
// stream. It returns the tile bytes received.
type benchCall func(ctx context.Context, i int) (int, error)

// runConcurrent runs b.N calls from conc goroutines and reports MB/s
// (SetBytes is the bytes of one call), calls/s and latency percentiles.
func runConcurrent(b *testing.B, conc int, bytesPerCall int64, call benchCall) {
	b.Helper()
	ctx := context.Background()
	// Warm up the connection and its HTTP/2 windows with a few calls (every
	// goroutine shares one connection; a full round of conc stream calls
	// would cost more than the measurement at 2 MiB tiles).
	var wg sync.WaitGroup
	for i := range min(conc, 4) {
		wg.Go(func() { _, _ = call(ctx, i) })
	}
	wg.Wait()
	b.SetBytes(bytesPerCall)
	b.ReportAllocs()
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	var firstErr atomic.Pointer[error]
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	for g := range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := time.Now()
				n, err := call(ctx, int(i))
				if err == nil && int64(n) != bytesPerCall {
					err = fmt.Errorf("call %d received %d bytes, want %d", i, n, bytesPerCall)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				lat[g] = append(lat[g], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if e := firstErr.Load(); e != nil {
		b.Fatal(*e)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
		// CPU time of the whole process (client and server) per MB: steadier
		// than MB/s on a machine shared with other work.
		b.ReportMetric(cpu.Seconds()*1e9/(float64(bytesPerCall)*float64(b.N)/1e6), "cpu-ns/MB")
	}
}

// processCPU returns the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTargets are the server and client pairs compared.
type benchTarget struct {
	name     string
	readTile func(tb testing.TB, size int) (benchCall, benchCall, benchCall) // ReadTile, ReadTileStream, StreamBricks
}

// ldmCalls returns the three calls against a go-ldm server with a
// connect-go client of protocol p.
func ldmCalls(tb testing.TB, size int, p protocol) (benchCall, benchCall, benchCall) {
	store, _ := benchVolume(tb, size)
	ts := startServer(tb, serverOptions{store: store})
	c := ts.clients(tb, p)
	readTile := func(ctx context.Context, i int) (int, error) {
		res, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "bench", Offset: uint64(i % benchTiles)}))
		if err != nil {
			return 0, err
		}
		return len(res.Msg.GetTile().GetValue()), nil
	}
	readStream := func(ctx context.Context, _ int) (int, error) {
		s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "bench"}))
		if err != nil {
			return 0, err
		}
		defer s.Close()
		n := 0
		for s.Receive() {
			n += len(s.Msg().GetTile().GetValue())
		}
		return n, s.Err()
	}
	bricks := func(ctx context.Context, _ int) (int, error) {
		s, err := c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "bench"}))
		if err != nil {
			return 0, err
		}
		defer s.Close()
		n := 0
		for s.Receive() {
			n += len(s.Msg().GetTile().GetValue())
		}
		return n, s.Err()
	}
	return readTile, readStream, bricks
}

// grpcCalls returns the three calls made with grpc-go to addr.
func grpcCalls(tb testing.TB, addr string) (benchCall, benchCall, benchCall) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(benchStreamWindow), grpc.WithInitialConnWindowSize(benchConnWindow),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	readTile := func(ctx context.Context, i int) (int, error) {
		var res ldmv1.ReadTileResponse
		err := conn.Invoke(ctx, "/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "bench", Offset: uint64(i % benchTiles)}, &res)
		return len(res.GetTile().GetValue()), err
	}
	stream := func(method string, req any, newRes func() interface{ GetTile() *ldmv1.Tile }) benchCall {
		return func(ctx context.Context, _ int) (int, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			s, err := conn.NewStream(ctx, serverStreamDesc, method)
			if err != nil {
				return 0, err
			}
			if err := s.SendMsg(req); err != nil {
				return 0, err
			}
			if err := s.CloseSend(); err != nil {
				return 0, err
			}
			n := 0
			for {
				res := newRes()
				if err := s.RecvMsg(res); err != nil {
					if errors.Is(err, io.EOF) {
						return n, nil
					}
					return n, err
				}
				n += len(res.GetTile().GetValue())
			}
		}
	}
	return readTile,
		stream("/ldm.v1.TileService/ReadTileStream", &ldmv1.ReadTileStreamRequest{Volume: "bench"},
			func() interface{ GetTile() *ldmv1.Tile } { return &ldmv1.ReadTileStreamResponse{} }),
		stream("/ldm.v1.VolumeService/StreamBricks", &ldmv1.StreamBricksRequest{Volume: "bench"},
			func() interface{ GetTile() *ldmv1.Tile } { return &ldmv1.StreamBricksResponse{} })
}

var benchTargets = []benchTarget{
	{"ldm_connect", func(tb testing.TB, size int) (benchCall, benchCall, benchCall) {
		return ldmCalls(tb, size, protocols[0])
	}},
	{"ldm_grpc", func(tb testing.TB, size int) (benchCall, benchCall, benchCall) {
		return ldmCalls(tb, size, protocols[2])
	}},
	{"ldm_grpcgo_client", func(tb testing.TB, size int) (benchCall, benchCall, benchCall) {
		store, _ := benchVolume(tb, size)
		return grpcCalls(tb, startServer(tb, serverOptions{store: store}).Addr)
	}},
	{"grpcgo_baseline", func(tb testing.TB, size int) (benchCall, benchCall, benchCall) {
		_, tiles := benchVolume(tb, size)
		return grpcCalls(tb, startBaseline(tb, tiles))
	}},
}

// BenchmarkRead compares ReadTile, ReadTileStream and StreamBricks of
// go-ldm with the grpc-go baseline. Sub-benchmark names:
// <rpc>/<size>/c<concurrency>/<target>.
func BenchmarkRead(b *testing.B) {
	for _, rpc := range []string{"ReadTile", "ReadTileStream", "StreamBricks"} {
		for _, size := range benchSizes {
			for _, conc := range benchConcurrency {
				for _, target := range benchTargets {
					b.Run(fmt.Sprintf("%s/%dKiB/c%d/%s", rpc, size>>10, conc, target.name), func(b *testing.B) {
						unary, stream, bricks := target.readTile(b, size)
						switch rpc {
						case "ReadTile":
							runConcurrent(b, conc, int64(size), unary)
						case "ReadTileStream":
							runConcurrent(b, conc, int64(size*benchTiles), stream)
						case "StreamBricks":
							runConcurrent(b, conc, int64(size*benchTiles), bricks)
						}
					})
				}
			}
		}
	}
}

// BenchmarkReadTile_json compares Connect JSON with Connect binary, as a
// user sees it: the same ReadTile through the connect-go client.
func BenchmarkReadTile_json(b *testing.B) {
	for _, size := range benchSizes {
		for _, conc := range []int{1, 8} {
			for _, p := range []protocol{protocols[0], protocols[1]} {
				b.Run(fmt.Sprintf("%dKiB/c%d/%s", size>>10, conc, p.name), func(b *testing.B) {
					unary, _, _ := ldmCalls(b, size, p)
					runConcurrent(b, conc, int64(size), unary)
				})
			}
		}
	}
}

// ingestBatch is the number of tiles one ingest operation writes.
const ingestBatch = 32

// ingestSize is the tile size of the ingest benchmarks.
const ingestSize = 256 << 10

// openIngestStore opens a file store with the default sync policy (group
// commit) and an empty volume "ingest".
func openIngestStore(b *testing.B) *storage.Store {
	store, err := storage.Open(b.TempDir(), storage.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	meta := storage.VolumeMeta{Name: "ingest", Shape: storage.Shape{X: 4096, Y: 4096, Z: 4096}, DataType: storage.Uint8}
	if _, err := store.CreateVolume(context.Background(), meta); err != nil {
		b.Fatal(err)
	}
	return store
}

// benchStoreAppend appends ingestBatch tiles one by one per operation.
func benchStoreAppend(b *testing.B) {
	store := openIngestStore(b)
	tile := tileBytes(ingestSize, 7)
	runConcurrent(b, 1, ingestSize*ingestBatch, func(ctx context.Context, _ int) (int, error) {
		for range ingestBatch {
			if _, err := store.Append(ctx, "ingest", storage.Tile{Value: tile}); err != nil {
				return 0, err
			}
		}
		return ingestSize * ingestBatch, nil
	})
}

// benchWriteTileStream sends ingestBatch tiles in one WriteTileStream per
// operation and waits for every offset.
func benchWriteTileStream(b *testing.B, p protocol) {
	ts := startServer(b, serverOptions{store: openIngestStore(b)})
	c := ts.clients(b, p)
	tile := tileBytes(ingestSize, 7)
	runConcurrent(b, 1, ingestSize*ingestBatch, func(ctx context.Context, _ int) (int, error) {
		s := c.tiles.WriteTileStream(ctx)
		errc := make(chan error, 1)
		go func() {
			for range ingestBatch {
				if _, err := s.Receive(); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for i := range ingestBatch {
			req := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: tile}}
			if i == 0 {
				req.Volume = "ingest"
			}
			if err := s.Send(req); err != nil {
				break // Receive reports the error
			}
		}
		_ = s.CloseRequest()
		err := <-errc
		_ = s.CloseResponse()
		return ingestSize * ingestBatch, err
	})
}

// BenchmarkIngest compares WriteTileStream (a stream of 32 tiles of 256
// KiB into the file store) with the store's own Append of the same tiles
// one by one, both with the default sync policy (group commit).
func BenchmarkIngest(b *testing.B) {
	b.Run("store_append", benchStoreAppend)
	for _, p := range []protocol{protocols[0], protocols[2]} {
		b.Run("write_tile_stream_"+p.name, func(b *testing.B) { benchWriteTileStream(b, p) })
	}
}

// TestService_PerformanceReport runs the benchmarks above in alternating rounds
// and prints the ratios the issue asks for (go-ldm over the grpc-go
// baseline, binary over JSON, ingest over the store's own appends). It
// runs only when LDM_PERF is set (it takes minutes): `make perf`.
// LDM_PERF_ROUNDS sets the rounds (default 3); LDM_PERF_CASES, a regular
// expression over "<rpc>/<size>K/c<concurrency>" (for example
// "ReadTile/2048K/c64"), runs only the matching read cases and nothing else.
func TestService_PerformanceReport(t *testing.T) {
	if os.Getenv("LDM_PERF") == "" {
		t.Log("set LDM_PERF=1 (or run `make perf`) to measure; this test only reports")
		return
	}
	rounds := 3
	if v := os.Getenv("LDM_PERF_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("LDM_PERF_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	cases := regexp.MustCompile("")
	if v := os.Getenv("LDM_PERF_CASES"); v != "" {
		cases = regexp.MustCompile(v)
	}
	mbps := func(r testing.BenchmarkResult) float64 {
		return float64(r.Bytes) * float64(r.N) / r.T.Seconds() / 1e6
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		sort.Float64s(s)
		return s[len(s)/2]
	}
	var report strings.Builder
	fmt.Fprintf(&report, "%-15s %6s %4s %12s %12s %12s %8s %8s\n", "rpc", "size", "conc", "ldm_connect", "ldm_grpc", "grpcgo", "ratio", "ratio_g")
	for _, rpc := range []string{"ReadTile", "ReadTileStream", "StreamBricks"} {
		for _, size := range benchSizes {
			for _, conc := range benchConcurrency {
				if !cases.MatchString(fmt.Sprintf("%s/%dK/c%d", rpc, size>>10, conc)) {
					continue
				}
				// Each round runs the three targets in a rotated order, and
				// the ratios are taken within a round (the machine's load
				// moves between rounds), then the median over rounds.
				targets := []benchTarget{benchTargets[0], benchTargets[1], benchTargets[3]}
				res := map[string][]float64{}
				var ratioC, ratioG []float64
				for round := range rounds {
					got := map[string]float64{}
					for k := range targets {
						target := targets[(k+round)%len(targets)]
						r := testing.Benchmark(func(b *testing.B) {
							unary, stream, bricks := target.readTile(b, size)
							call, per := unary, int64(size)
							if rpc == "ReadTileStream" {
								call, per = stream, int64(size*benchTiles)
							} else if rpc == "StreamBricks" {
								call, per = bricks, int64(size*benchTiles)
							}
							runConcurrent(b, conc, per, call)
						})
						got[target.name] = mbps(r)
						res[target.name] = append(res[target.name], mbps(r))
					}
					ratioC = append(ratioC, got["ldm_connect"]/got["grpcgo_baseline"])
					ratioG = append(ratioG, got["ldm_grpc"]/got["grpcgo_baseline"])
				}
				lc, lg, g := median(res["ldm_connect"]), median(res["ldm_grpc"]), median(res["grpcgo_baseline"])
				fmt.Fprintf(&report, "%-15s %5dK %4d %9.0f MB/s %7.0f MB/s %7.0f MB/s %7.2fx %7.2fx\n", rpc, size>>10, conc, lc, lg, g, median(ratioC), median(ratioG))
			}
		}
	}
	if os.Getenv("LDM_PERF_CASES") != "" {
		t.Log("\n" + report.String())
		return
	}
	fmt.Fprintf(&report, "\n%-8s %4s %14s %14s %8s\n", "size", "conc", "binary", "json", "ratio")
	for _, size := range benchSizes {
		for _, conc := range []int{1, 8} {
			res := map[string][]float64{}
			for range rounds {
				for _, p := range []protocol{protocols[0], protocols[1]} {
					r := testing.Benchmark(func(b *testing.B) {
						unary, _, _ := ldmCalls(b, size, p)
						runConcurrent(b, conc, int64(size), unary)
					})
					res[p.name] = append(res[p.name], mbps(r))
				}
			}
			bin, js := median(res["connect"]), median(res["connect_json"])
			fmt.Fprintf(&report, "%7dK %4d %9.0f MB/s %9.0f MB/s %7.2fx\n", size>>10, conc, bin, js, bin/js)
		}
	}
	res := map[string][]float64{}
	for range rounds {
		res["append"] = append(res["append"], mbps(testing.Benchmark(benchStoreAppend)))
		for _, p := range []protocol{protocols[0], protocols[2]} {
			res[p.name] = append(res[p.name], mbps(testing.Benchmark(func(b *testing.B) { benchWriteTileStream(b, p) })))
		}
	}
	app := median(res["append"])
	fmt.Fprintf(&report, "\ningest, 256K tiles: store Append %.0f MB/s; WriteTileStream connect %.0f MB/s (%.2fx), grpc %.0f MB/s (%.2fx)\n",
		app, median(res["connect"]), median(res["connect"])/app, median(res["grpc"]), median(res["grpc"])/app)
	t.Log("\n" + report.String())
}
