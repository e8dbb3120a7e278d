package client_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/xcheng85/go-ldm/client"
	"github.com/xcheng85/go-ldm/cluster"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// server is one cluster node serving the ldm.v1 API on 127.0.0.1.
type server struct {
	id    string
	addr  string
	node  *cluster.Node
	srv   *http.Server
	done  chan struct{}
	mu    sync.Mutex
	calls map[string]int // RPC path -> count
}

func (s *server) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[path]
}

func (s *server) stop() {
	if s.node == nil {
		return
	}
	s.srv.Close()
	<-s.done
	s.node.Close()
	s.node = nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}

func startServer(tb testing.TB, id string, bootstrap bool, join []string) (*server, string) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	st, err := storage.Open(filepath.Join(dir, "data"), storage.Config{Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	node, err := cluster.New(cluster.Config{
		NodeID: id, Dir: filepath.Join(dir, "raft"), AdvertiseAddr: ln.Addr().String(), Bootstrap: bootstrap,
		GossipAddr: "127.0.0.1:0", Join: join, LocalGossip: true,
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		ReconcileInterval: 200 * time.Millisecond, Logger: quietLogger(),
	}, cluster.FileStore(st))
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := service.New(service.Config{Store: node, Logger: quietLogger(), AdvertiseAddr: ln.Addr().String(), NodeID: id})
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{id: id, addr: ln.Addr().String(), node: node, done: make(chan struct{}), calls: map[string]int{}}
	mux := http.NewServeMux()
	for _, p := range svc.Paths() {
		mux.Handle(p, svc.Handler())
	}
	mux.Handle(cluster.HandlerPrefix, node.Handler())
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.URL.Path]++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	})
	s.srv = service.NewHTTPServer(counted, nil, quietLogger())
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	tb.Cleanup(s.stop)
	return s, node.GossipAddr()
}

// startCluster starts three servers and waits until they form one
// cluster with a leader.
func startCluster(tb testing.TB) []*server {
	tb.Helper()
	s1, g1 := startServer(tb, "n1", true, nil)
	s2, _ := startServer(tb, "n2", false, []string{g1})
	s3, _ := startServer(tb, "n3", false, []string{g1})
	servers := []*server{s1, s2, s3}
	waitFor(tb, 20*time.Second, "three voters and a leader, as every server sees it", func() bool {
		for _, srv := range servers {
			list, err := srv.node.Servers(context.Background())
			if err != nil || len(list) != 3 {
				return false
			}
			leaders := 0
			for _, s := range list {
				if !s.GetVoter() {
					return false
				}
				if s.GetIsLeader() {
					leaders++
				}
			}
			if leaders != 1 {
				return false
			}
		}
		return true
	})
	return servers
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func leaderOf(servers []*server) *server {
	for _, s := range servers {
		if s.node != nil && s.node.IsLeader() {
			return s
		}
	}
	return nil
}

func TestClient_RoutesAndSurvivesLeaderLoss(t *testing.T) {
	servers := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Seeds: []string{"http://" + servers[2].addr}, Attempts: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leader := leaderOf(servers)
	if c.Leader() != leader.addr {
		t.Fatalf("client sees leader %q, want %s", c.Leader(), leader.addr)
	}
	if _, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{Name: "v", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8}}); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		res, err := c.WriteTile(ctx, &ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: fmt.Appendf(nil, "tile-%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		if res.GetOffset() != uint64(i) {
			t.Fatalf("offset %d, want %d", res.GetOffset(), i)
		}
	}
	for i := range 6 {
		res, err := c.ReadTile(ctx, &ldmv1.ReadTileRequest{Volume: "v", Offset: uint64(i), Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE})
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Appendf(nil, "tile-%d", i); !bytes.Equal(res.GetTile().GetValue(), want) {
			t.Fatalf("offset %d: %q, want %q", i, res.GetTile().GetValue(), want)
		}
	}
	writes, reads := ldmv1connect.TileServiceWriteTileProcedure, ldmv1connect.TileServiceReadTileProcedure
	for _, s := range servers {
		switch {
		case s == leader && (s.count(writes) != 6 || s.count(reads) != 0):
			t.Errorf("leader %s served %d writes and %d reads, want 6 and 0", s.id, s.count(writes), s.count(reads))
		case s != leader && (s.count(writes) != 0 || s.count(reads) != 3):
			t.Errorf("follower %s served %d writes and %d reads, want 0 and 3", s.id, s.count(writes), s.count(reads))
		}
	}

	// The leader dies: the client finds the new one and carries on. A
	// write whose outcome is unknown comes back to the caller, who
	// retries it (here with distinct bytes per attempt).
	leader.stop()
	var res *ldmv1.WriteTileResponse
	for attempt := 0; ; attempt++ {
		res, err = c.WriteTile(ctx, &ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: fmt.Appendf(nil, "after-%d", attempt)}})
		if err == nil {
			break
		}
		if attempt == 20 {
			t.Fatalf("write after the leader died: %v", err)
		}
	}
	if res.GetOffset() < 6 {
		t.Fatalf("offset %d after the leader died", res.GetOffset())
	}
	// The client's view follows the new leader.
	waitFor(t, 10*time.Second, "the client to see the new leader", func() bool {
		if err := c.Refresh(ctx); err != nil {
			return false
		}
		return c.Leader() != "" && c.Leader() != leader.addr
	})
}

func TestGRPCResolver_WritesToLeaderReadsFromFollowers(t *testing.T) {
	servers := startCluster(t)
	target := fmt.Sprintf("%s:///%s,%s,%s", client.Scheme, servers[0].addr, servers[1].addr, servers[2].addr)
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	create := &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{Name: "g", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8}}
	if err := conn.Invoke(ctx, ldmv1connect.VolumeServiceCreateVolumeProcedure, create, &ldmv1.CreateVolumeResponse{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}
	// Wait until every server is connected, so reads can spread.
	leader := leaderOf(servers)
	for i := range 6 {
		var res ldmv1.WriteTileResponse
		req := &ldmv1.WriteTileRequest{Volume: "g", Tile: &ldmv1.Tile{Value: fmt.Appendf(nil, "g-%d", i)}}
		if err := conn.Invoke(ctx, ldmv1connect.TileServiceWriteTileProcedure, req, &res, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		var res ldmv1.ReadTileResponse
		req := &ldmv1.ReadTileRequest{Volume: "g", Offset: uint64(i % 6), Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE}
		if err := conn.Invoke(ctx, ldmv1connect.TileServiceReadTileProcedure, req, &res, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Appendf(nil, "g-%d", i%6); !bytes.Equal(res.GetTile().GetValue(), want) {
			t.Fatalf("read %d: %q, want %q", i, res.GetTile().GetValue(), want)
		}
	}
	writes, reads := ldmv1connect.TileServiceWriteTileProcedure, ldmv1connect.TileServiceReadTileProcedure
	if leader.count(reads) != 0 {
		t.Errorf("the leader served %d reads", leader.count(reads))
	}
	totalWrites, followerReads := 0, 0
	for _, s := range servers {
		totalWrites += s.count(writes)
		if s != leader {
			followerReads += s.count(reads)
		}
	}
	if followerReads != 20 {
		t.Errorf("followers served %d reads, want 20", followerReads)
	}
	// Until the picker knows every connection is ready, a write may go to
	// a follower, which forwards it; once ready, writes go to the leader.
	if leader.count(writes) == 0 || totalWrites != 6 {
		t.Errorf("leader served %d of %d writes", leader.count(writes), totalWrites)
	}
}
