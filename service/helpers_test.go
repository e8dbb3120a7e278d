package service_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// testServer is a service.Server on a real 127.0.0.1 socket.
type testServer struct {
	URL    string      // http://... (h2c) or https://...
	Addr   string      // host:port
	TLS    *tls.Config // client TLS config trusting the server; nil for h2c
	Store  service.Tiles
	Server *service.Server
}

// serverOptions configures startServer.
type serverOptions struct {
	tls    bool
	store  service.Tiles
	config func(*service.Config)
}

// startServer serves a new service on 127.0.0.1:0 until the test ends.
func startServer(tb testing.TB, o serverOptions) *testServer {
	tb.Helper()
	if o.store == nil {
		o.store = storage.NewMemory(0)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := service.Config{Store: o.store, Logger: slog.New(slog.DiscardHandler), AdvertiseAddr: l.Addr().String()}
	if o.config != nil {
		o.config(&cfg)
	}
	svc, err := service.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ts := &testServer{Addr: l.Addr().String(), Store: o.store, Server: svc}
	var serverTLS *tls.Config
	if o.tls {
		p := testutil.NewPKI(tb)
		serverTLS, ts.TLS = p.ServerConfig(p.ServerCert(tb, "127.0.0.1")), p.ClientConfig()
	}
	srv := service.NewHTTPServer(svc.Handler(), serverTLS, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if serverTLS != nil {
			_ = srv.ServeTLS(l, "", "")
		} else {
			_ = srv.Serve(l)
		}
	}()
	tb.Cleanup(func() {
		svc.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-done
	})
	ts.URL = "http://" + ts.Addr
	if o.tls {
		ts.URL = "https://" + ts.Addr
	}
	return ts
}

// protocol is a connect-go client configuration.
type protocol struct {
	name string
	opts []connect.ClientOption
}

// protocols are the client protocols every RPC is tested with.
var protocols = []protocol{
	{"connect", nil},
	{"connect_json", []connect.ClientOption{connect.WithProtoJSON()}},
	{"grpc", []connect.ClientOption{connect.WithGRPC()}},
	{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
}

// apiClients are the connect-go clients of one server and protocol.
type apiClients struct {
	tiles   ldmv1connect.TileServiceClient
	volumes ldmv1connect.VolumeServiceClient
	cluster ldmv1connect.ClusterServiceClient
	http    *http.Client
}

func (ts *testServer) httpClient(tb testing.TB) *http.Client {
	tb.Helper()
	tr := service.NewTransport(ts.TLS)
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (ts *testServer) clients(tb testing.TB, p protocol) apiClients {
	tb.Helper()
	hc := ts.httpClient(tb)
	opts := append([]connect.ClientOption{connect.WithReadMaxBytes(1 << 30), connect.WithSendMaxBytes(1 << 30)}, p.opts...)
	return apiClients{
		tiles:   ldmv1connect.NewTileServiceClient(hc, ts.URL, opts...),
		volumes: ldmv1connect.NewVolumeServiceClient(hc, ts.URL, opts...),
		cluster: ldmv1connect.NewClusterServiceClient(hc, ts.URL, opts...),
		http:    hc,
	}
}

// countingStore counts the Wait and Read calls in flight and done, to
// observe streams from the outside.
type countingStore struct {
	service.Tiles
	mu      sync.Mutex
	waiting int
	reads   int
}

func (c *countingStore) Wait(ctx context.Context, volume string, offset uint64) error {
	c.mu.Lock()
	c.waiting++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	return c.Tiles.Wait(ctx, volume, offset)
}

func (c *countingStore) Read(volume string, offset uint64) (storage.Tile, error) {
	c.mu.Lock()
	c.reads++
	c.mu.Unlock()
	return c.Tiles.Read(volume, offset)
}

func (c *countingStore) counts() (waiting, reads int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting, c.reads
}

// receiveAll drains a server stream.
func receiveAll[T any](tb testing.TB, s *connect.ServerStreamForClient[T]) []*T {
	tb.Helper()
	var out []*T
	for s.Receive() {
		out = append(out, s.Msg())
	}
	if err := s.Err(); err != nil && !errors.Is(err, io.EOF) {
		tb.Fatalf("stream: %v", err)
	}
	return out
}
