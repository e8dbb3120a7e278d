package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// postApply sends an encoded command to a node's apply endpoint as an
// outsider would, with the given ClusterAuthHeader (none when empty).
func postApply(t *testing.T, addr, authHeader string, cmd []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+pathApply, bytes.NewReader(cmd))
	if err != nil {
		t.Fatal(err)
	}
	if authHeader != "" {
		req.Header.Set(ClusterAuthHeader, authHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestNode_ClusterKey: with a cluster key, nodes replicate as before, and
// an anonymous caller, or one with another key, can neither apply a
// command, change membership nor open a Raft stream.
func TestNode_ClusterKey(t *testing.T) {
	c := newTestCluster(t)
	c.tune = func(cfg *Config) { cfg.Key = testKey }
	n1, n2, _ := startThree(t, c)
	mustCreate(t, n2.node, "vol")
	mustAppend(t, n2.node, "vol", storage.Tile{Value: []byte("through a follower")})
	c.converge(15 * time.Second)
	sameLogs(t, c, "vol")
	l := c.leader(10 * time.Second)

	create, err := encodeCreate(storage.VolumeMeta{Name: "intruder", CreatedAt: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := signHeader([]byte("another key, not the cluster's.."), "n9", http.MethodPost, pathApply, time.Now())
	stale := signHeader(testKey, "n9", http.MethodPost, pathApply, time.Now().Add(-time.Hour))
	otherPath := signHeader(testKey, "n9", http.MethodPost, pathReadIndex, time.Now())

	t.Run("anonymous_apply_refused", func(t *testing.T) {
		for name, h := range map[string]string{"none": "", "wrong_key": wrongKey, "stale": stale, "other_path": otherPath, "garbage": "v1 x y z"} {
			if resp := postApply(t, l.addr, h, create); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: POST %s answered %s, want 403", name, pathApply, resp.Status)
			}
		}
		if _, err := l.node.Volume("intruder"); !errorsIs(err, storage.ErrNotFound) {
			t.Fatalf("volume created by an anonymous apply: %v", err)
		}
	})
	t.Run("membership_refused", func(t *testing.T) {
		for _, p := range []string{pathRemove, pathTransfer} {
			resp, err := http.Post("http://"+l.addr+p, "application/json", strings.NewReader(`{"id":"`+n1.id+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s answered %s, want 403", p, resp.Status)
			}
		}
		c.waitVoters(5*time.Second, "n1", "n2", "n3")
	})
	t.Run("raft_upgrade_refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for name, h := range map[string]string{"none": "", "wrong_key": signHeader([]byte("another key, not the cluster's.."), "n9", http.MethodGet, RaftPath, time.Now())} {
			conn, err := dialUpgrade(ctx, (&net.Dialer{}).DialContext, nil, l.addr, h)
			if err == nil {
				conn.Close()
				t.Fatalf("%s: raft upgrade accepted", name)
			}
			if !strings.Contains(err.Error(), "403") {
				t.Fatalf("%s: raft upgrade: %v, want 403", name, err)
			}
		}
		// The right key opens a stream: the check is the key, not the path.
		conn, err := dialUpgrade(ctx, (&net.Dialer{}).DialContext, nil, l.addr, signHeader(testKey, "n9", http.MethodGet, RaftPath, time.Now()))
		if err != nil {
			t.Fatalf("raft upgrade with the cluster key: %v", err)
		}
		conn.Close()
	})
}

// fakeMember joins a cluster's gossip pool with go-ldm's tags, as any
// process that reaches the gossip port can, announcing id at addr.
func fakeMember(t *testing.T, id, addr, join string) {
	t.Helper()
	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = id
	sc.Tags = map[string]string{tagRole: "ldm", tagID: id, tagAddr: addr}
	sc.MemberlistConfig = memberlist.DefaultLocalConfig()
	sc.MemberlistConfig.Name = id
	sc.MemberlistConfig.BindAddr = "127.0.0.1"
	sc.MemberlistConfig.BindPort = 0
	sc.MemberlistConfig.LogOutput = io.Discard
	sc.LogOutput = io.Discard
	sc.SnapshotPath = filepath.Join(t.TempDir(), "serf.snapshot")
	s, err := serf.Create(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown() })
	if _, err := s.Join([]string{join}, true); err != nil {
		t.Fatal(err)
	}
}

// impostor serves the identify endpoint (and anything else) at a loopback
// address: it claims to be id, with an invalid MAC, and counts the
// connections made to it.
func impostor(t *testing.T, id string, useTLS *tls.Config) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int64)
	addr = ln.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close") // one connection per attempt
			_ = json.NewEncoder(w).Encode(identifyReply{ID: id, Addr: addr, MAC: strings.Repeat("00", 32)})
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		TLSConfig: useTLS,
	}
	go func() {
		if useTLS != nil {
			_ = srv.ServeTLS(ln, "", "")
		} else {
			_ = srv.Serve(ln)
		}
	}()
	t.Cleanup(func() { srv.Close() })
	return addr, conns
}

// hasServer reports whether id is in the leader's Raft configuration.
func hasServer(t *testing.T, n *Node, id string) bool {
	t.Helper()
	f := n.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) {
			return true
		}
	}
	return false
}

// TestNode_VoterProvesIdentity: a process that joins gossip but cannot
// prove it is a node (no node certificate under TLS, no cluster key
// without TLS) is never made a voter, and the cluster keeps its leader
// and its writes.
func TestNode_VoterProvesIdentity(t *testing.T) {
	t.Run("tls_without_gossip_key", func(t *testing.T) {
		c := newTestCluster(t)
		c.pki = testutil.NewPKI(t)
		n1, n2, _ := startThree(t, c)
		// A TLS server whose certificate no node trusts.
		other := testutil.NewPKI(t)
		addr, conns := impostor(t, "evil", other.ServerConfig(other.NodeCert(t, "evil")))
		fakeMember(t, "evil", addr, n1.gossipAddr)
		l := c.leader(10 * time.Second)
		// Two identity checks mean a whole reconcile pass ran after the
		// first one.
		testutil.WaitFor(t, 15*time.Second, "two identity checks of the impostor", func() bool { return conns.Load() >= 2 })
		if hasServer(t, l.node, "evil") {
			t.Fatal("a gossip member without a node certificate was made a voter")
		}
		mustAppend(t, n2.node, mustCreateRet(t, n2.node, "vol"), storage.Tile{Value: []byte("still writable")})
	})
	t.Run("cluster_key", func(t *testing.T) {
		c := newTestCluster(t)
		c.tune = func(cfg *Config) { cfg.Key = testKey }
		n1 := c.add("n1")
		c.leader(10 * time.Second)
		addr, conns := impostor(t, "evil", nil)
		fakeMember(t, "evil", addr, n1.gossipAddr)
		testutil.WaitFor(t, 15*time.Second, "two identity checks of the impostor", func() bool { return conns.Load() >= 2 })
		if hasServer(t, n1.node, "evil") {
			t.Fatal("a gossip member that does not hold the cluster key was made a voter")
		}
		mustAppend(t, n1.node, mustCreateRet(t, n1.node, "vol"), storage.Tile{Value: []byte("still writable")})
	})
	t.Run("another_nodes_address", func(t *testing.T) {
		// A member that announces a real node's address under another id
		// is refused by that node's answer.
		c := newTestCluster(t)
		n1, n2 := c.add("n1"), (*testNode)(nil)
		c.leader(10 * time.Second)
		n2 = c.add("n2")
		c.waitVoters(15*time.Second, "n1", "n2")
		l := c.leader(10 * time.Second)
		fakeMember(t, "evil", n2.addr, n1.gossipAddr)
		err := l.node.identify(context.Background(), "evil", n2.addr)
		if err == nil || !strings.Contains(err.Error(), `"n2"`) {
			t.Fatalf("identify of an impostor at n2's address: %v, want a mismatch naming n2", err)
		}
		if err := l.node.identify(context.Background(), "n2", n2.addr); err != nil {
			t.Fatalf("identify n2: %v", err)
		}
	})
}

func mustCreateRet(t *testing.T, n *Node, name string) string {
	t.Helper()
	mustCreate(t, n, name)
	return name
}

// TestNode_VoterRetriesIdentity: a member that could not be reached when
// it joined (its server did not answer yet) is checked again after a short
// backoff, so it becomes a voter long before the next periodic reconcile.
func TestNode_VoterRetriesIdentity(t *testing.T) {
	c := newTestCluster(t)
	c.tune = func(cfg *Config) { cfg.ReconcileInterval = time.Hour }
	c.add("n1")
	c.leader(10 * time.Second)
	c.net.partition([]string{"n1"}, []string{"n2"})
	c.add("n2")
	testutil.WaitFor(t, 10*time.Second, "the leader to fail to reach n2", func() bool { return c.net.refused.Load() > 0 })
	c.net.heal()
	c.waitVoters(10*time.Second, "n1", "n2")
}
