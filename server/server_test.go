package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/storage"
)

var quiet = slog.New(slog.DiscardHandler)

// serve builds a server from cfg and serves it; stop ends it and returns
// what Serve returned.
func serve(tb testing.TB, cfg server.Config) (s *server.Server, stop func() error) {
	tb.Helper()
	s, err := server.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var stopped bool
	var result error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	tb.Cleanup(func() { _ = stop() })
	return s, stop
}

func volumeClient(s *server.Server, opts ...connect.ClientOption) ldmv1connect.VolumeServiceClient {
	hc := &http.Client{Transport: client.NewTransport(nil)}
	return ldmv1connect.NewVolumeServiceClient(hc, s.URL(), opts...)
}

// TestServer_New_assembles_every_part serves the API in every protocol, the
// demo volume and the viewer from one Config.
func TestServer_New_assembles_every_part(t *testing.T) {
	t.Parallel()
	s, stop := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true, Logger: quiet})
	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || s.URL() != "http://"+s.Addr().String() {
		t.Fatalf("URL %q, Addr %v", s.URL(), s.Addr())
	}
	for name, opt := range map[string]connect.ClientOption{"connect": connect.WithProtoJSON(), "grpc": connect.WithGRPC(), "grpcweb": connect.WithGRPCWeb()} {
		res, err := volumeClient(s, opt).GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: server.DemoVolume}))
		if err != nil || res.Msg.GetVolume().GetNextOffset() != 73 {
			t.Fatalf("%s: GetVolume(demo) = %v, %v", name, res, err)
		}
	}
	resp, err := http.Get(s.URL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(strings.ToLower(string(page)), "<!doctype html>") {
		t.Fatalf("GET /: %d %.100q", resp.StatusCode, page)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// TestServer_Serve_releases_everything checks that after Serve returns the
// store is closed (its directory can be opened again) and the port is free.
func TestServer_Serve_releases_everything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, stop := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: quiet})
	addr := s.Addr().String()
	if _, err := storage.Open(dir, storage.Config{}); !errors.Is(err, storage.ErrLocked) {
		t.Fatalf("open while serving: %v, want ErrLocked", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatalf("open after Serve returned: %v", err)
	}
	st.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port is still held: %v", err)
	}
	l.Close()
}

// TestServer_New_failure_releases_the_store fails New after the store is
// open (the address is taken): the store is closed again and the error
// says what to do.
func TestServer_New_failure_releases_the_store(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	_, err = server.New(context.Background(), server.Config{Addr: busy.Addr().String(), DataDir: dir, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "--addr") || errors.Is(err, server.ErrInvalidConfig) {
		t.Fatalf("New on a busy address: %v", err)
	}
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatalf("the store was left open: %v", err)
	}
	st.Close()
}

// TestServer_Close_without_Serve releases what New opened.
func TestServer_Close_without_Serve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := server.New(context.Background(), server.Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatalf("the store was left open: %v", err)
	}
	st.Close()
}

// TestServer_New_invalid_config rejects inconsistent or unsafe Configs
// with ErrInvalidConfig before anything is opened.
func TestServer_New_invalid_config(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		cfg  server.Config
		want string
	}{
		{"cert_without_key", server.Config{TLS: server.TLSConfig{CertFile: "c.pem"}}, "--tls-key"},
		{"client_ca_without_tls", server.Config{TLS: server.TLSConfig{ClientCAFile: "ca.pem"}}, "--client-ca needs TLS"},
		{"require_without_ca", server.Config{TLS: server.TLSConfig{CertFile: "c", KeyFile: "k", RequireClientCert: true}}, "--require-client-cert"},
		{"cluster_fields_without_node_id", server.Config{Cluster: server.ClusterConfig{Join: []string{"127.0.0.1:7946"}}}, "--node-id"},
		{"tiles_with_cluster", server.Config{Tiles: storage.NewMemory(0), Cluster: server.ClusterConfig{NodeID: "n1"}}, "file store"},
		{"gossip_key_length", server.Config{Cluster: server.ClusterConfig{NodeID: "n1", GossipKey: make([]byte, 7)}}, "--gossip-key"},
		{"peer_files_without_tls", server.Config{Cluster: server.ClusterConfig{NodeID: "n1", PeerCAFile: "ca.pem"}}, "--peer-ca"},
		{"negative_max_tile", server.Config{MaxTileBytes: -1}, "--max-tile-bytes"},
		{"network_without_tls", server.Config{Addr: "0.0.0.0:0", Tiles: storage.NewMemory(0)}, "refusing to serve"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.Logger = quiet
			if cfg.Tiles == nil && cfg.DataDir == "" {
				cfg.DataDir = t.TempDir()
			}
			s, err := server.New(context.Background(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("New accepted it")
			}
			if !errors.Is(err, server.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want ErrInvalidConfig mentioning %q", err, tt.want)
			}
		})
	}
}

// TestServer_Tiles_passed_in serves a store the caller owns and leaves it
// open when Serve returns.
func TestServer_Tiles_passed_in(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	s, stop := serve(t, server.Config{Addr: "127.0.0.1:0", Tiles: mem, Demo: true, Logger: quiet})
	if _, err := volumeClient(s).GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: server.DemoVolume})); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Append(context.Background(), server.DemoVolume, storage.Tile{Value: []byte("after")}); err != nil {
		t.Fatalf("the caller's store was closed: %v", err)
	}
}

// TestServer_cluster_node runs a one-node cluster from Config: it elects
// itself, reports itself as leader through GetServers, takes writes, and
// stops cleanly with its store closed.
func TestServer_cluster_node(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, stop := serve(t, server.Config{
		Addr: "127.0.0.1:0", DataDir: dir, Logger: quiet,
		Cluster: server.ClusterConfig{NodeID: "n1", GossipAddr: "127.0.0.1:0", LocalGossip: true},
	})
	hc := &http.Client{Transport: client.NewTransport(nil)}
	cc := ldmv1connect.NewClusterServiceClient(hc, s.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := cc.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
		if err == nil && len(res.Msg.GetServers()) == 1 && res.Msg.GetServers()[0].GetIsLeader() {
			if got := res.Msg.GetServers()[0]; got.GetId() != "n1" || got.GetRpcAddr() != s.Addr().String() {
				t.Fatalf("GetServers: %v", got)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no leader: %v %v", res, err)
		case <-tick.C:
		}
	}
	vc := volumeClient(s)
	if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "v", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	st, err := storage.Open(dir, storage.Config{})
	if err != nil {
		t.Fatalf("the store was left open: %v", err)
	}
	defer st.Close()
	if _, err := st.Volume("v"); err != nil {
		t.Fatalf("the replicated volume is not in the store: %v", err)
	}
}
