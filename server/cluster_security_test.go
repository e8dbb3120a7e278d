package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/service/auth"
)

// rootToken writes a token file with one token of the administrator root
// and returns its path and the token.
func rootToken(tb testing.TB) (file, token string) {
	tb.Helper()
	token, err := auth.NewToken()
	if err != nil {
		tb.Fatal(err)
	}
	file = filepath.Join(tb.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(auth.HashToken(token)+" root\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return file, token
}

// bearer adds a bearer token to every call.
func bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+token)
			return next(ctx, req)
		}
	}))
}

// TestServer_cluster_refuses_open_node_endpoints: a plaintext cluster with
// authentication on needs a cluster key; with one, an anonymous caller can
// neither apply a command nor open a Raft stream, while the nodes form the
// cluster.
func TestServer_cluster_refuses_open_node_endpoints(t *testing.T) {
	t.Parallel()
	tokens, token := rootToken(t)

	t.Run("plaintext_with_auth_needs_key", func(t *testing.T) {
		s, err := server.New(context.Background(), server.Config{
			Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet,
			Auth:    server.AuthConfig{TokensFile: tokens},
			Cluster: server.ClusterConfig{NodeID: "n1", GossipAddr: "127.0.0.1:0", LocalGossip: true},
		})
		if err == nil {
			s.Close()
			t.Fatal("New started a plaintext cluster with authentication and no --cluster-key")
		}
		if !errors.Is(err, server.ErrInvalidConfig) || !strings.Contains(err.Error(), "--cluster-key") {
			t.Fatalf("New: %v, want ErrInvalidConfig naming --cluster-key", err)
		}
	})

	t.Run("cluster_key", func(t *testing.T) {
		key := []byte("a cluster key of at least 16 bytes")
		g1 := testutil.FixedAddr(t)
		node := func(id string) *server.Server {
			s, _ := startNode(t, id, g1, id == "n1", server.Config{
				Auth:    server.AuthConfig{TokensFile: tokens},
				Cluster: server.ClusterConfig{Key: key},
			})
			return s
		}
		s1 := node("n1")
		node("n2")
		hc := &http.Client{Transport: client.NewTransport(nil)}
		cc := ldmv1connect.NewClusterServiceClient(hc, s1.URL(), bearer(token))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		testutil.WaitFor(t, 30*time.Second, "two voters with a leader", func() bool {
			ids, leader := clusterView(ctx, cc)
			return leader != "" && len(ids) == 2
		})

		// An anonymous apply of a volume creation (command type 2).
		cmd := append([]byte{2}, `{"name":"intruder","shape":[8,8,8],"data_type":"uint8"}`...)
		resp, err := http.Post(s1.URL()+"/_ldm/cluster/apply", "application/octet-stream", bytes.NewReader(cmd))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("anonymous POST /_ldm/cluster/apply: %s, want 403", resp.Status)
		}
		vc := volumeClient(s1, bearer(token))
		if _, err := vc.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "intruder"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetVolume of the intruder's volume: %v, want NotFound", err)
		}
		for _, p := range []string{"/_ldm/cluster/transfer", "/_ldm/cluster/remove"} {
			resp, err := http.Post(s1.URL()+p, "application/json", strings.NewReader(`{"id":"n2"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("anonymous POST %s: %s, want 403", p, resp.Status)
			}
		}

		// A hand-made Raft upgrade, as the first step of an AppendEntries.
		conn, err := net.Dial("tcp", s1.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = conn.Write([]byte("GET /_ldm/raft HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ldm-raft/1\r\n\r\n"))
		rr, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		if rr.StatusCode != http.StatusForbidden {
			t.Fatalf("anonymous raft upgrade: %s, want 403", rr.Status)
		}
	})
}

// TestServer_cluster_peer_ca: nodes whose certificates a peer CA signed
// (--peer-ca) that differs from the users' CA (--client-ca) form a
// cluster, and a node whose certificate the peer CA did not sign is never
// made a voter, so the cluster keeps its quorum.
func TestServer_cluster_peer_ca(t *testing.T) {
	t.Parallel()
	users, nodes, strangers := testutil.NewPKI(t), testutil.NewPKI(t), testutil.NewPKI(t)
	tokens, token := rootToken(t)
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	g1 := testutil.FixedAddr(t)
	node := func(id string, ca *testutil.PKI) *server.Server {
		cert, key := ca.WriteServerFiles(t, id, "127.0.0.1")
		s, _ := startNode(t, id, g1, id == "n1", server.Config{
			Logger:  log.With("node", id),
			TLS:     server.TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: users.CAFile},
			Auth:    server.AuthConfig{TokensFile: tokens},
			Cluster: server.ClusterConfig{PeerCAFile: nodes.CAFile},
		})
		return s
	}
	s1 := node("n1", nodes)
	node("n2", nodes)
	hc := &http.Client{Transport: client.NewTransport(&tls.Config{RootCAs: nodes.Pool(), MinVersion: tls.VersionTLS12})}
	cc := ldmv1connect.NewClusterServiceClient(hc, s1.URL(), bearer(token))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	testutil.WaitFor(t, 30*time.Second, "n1 and n2 voters with a leader", func() bool {
		ids, leader := clusterView(ctx, cc)
		return leader != "" && len(ids) == 2
	})

	// A node whose certificate another CA signed joins gossip: its
	// handshakes fail, and it must not become a voter.
	node("n3", strangers)
	testutil.WaitFor(t, 30*time.Second, "the leader to refuse n3", func() bool {
		return strings.Contains(logs.String(), "could not prove it is a node") && strings.Contains(logs.String(), "id=n3")
	})
	ids, leader := clusterView(ctx, cc)
	if leader == "" || len(ids) != 2 {
		t.Fatalf("voters %v (leader %q), want n1 and n2 with a leader", ids, leader)
	}
	vc := ldmv1connect.NewVolumeServiceClient(hc, s1.URL(), bearer(token))
	if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "v", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		t.Fatalf("the cluster lost its quorum: %v", err)
	}
}

// TestServer_cluster_open_node_endpoints_warning: without authentication,
// TLS or a cluster key (a trusted network), a node starts, and says so
// when peers reach it on an address that is not loopback.
func TestServer_cluster_open_node_endpoints_warning(t *testing.T) {
	t.Parallel()
	for name, advertise := range map[string]string{"loopback": "", "network": "192.0.2.1:8080"} {
		t.Run(name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			s, err := server.New(context.Background(), server.Config{
				Addr: "127.0.0.1:0", DataDir: t.TempDir(),
				Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
				Cluster: server.ClusterConfig{NodeID: "n1", Advertise: advertise, GossipAddr: "127.0.0.1:0", LocalGossip: true},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			warned := strings.Contains(logs.String(), "--cluster-key")
			if warned != (advertise != "") {
				t.Fatalf("warning logged: %v, want %v; logs:\n%s", warned, advertise != "", logs.String())
			}
		})
	}
}
