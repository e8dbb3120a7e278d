package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/client"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
)

// TestServer_BootstrapExpect: three servers started together with
// BootstrapExpect 3 and one DNS name (Config.Cluster.LookupHost, a stub
// that lists them all) form one cluster of three voters; a leader stopped
// gracefully hands leadership away before it stops, so the others have a
// leader at once, without waiting for an election timeout.
func TestServer_BootstrapExpect(t *testing.T) {
	_, port, _ := net.SplitHostPort(testutil.FixedAddr(t))
	prefix := fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))
	ips := []string{prefix + "10", prefix + "11", prefix + "12"}
	lookup := func(_ context.Context, host string) ([]string, error) {
		if host != "ldm.test" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return slices.Clone(ips), nil
	}
	type node struct {
		s    *server.Server
		stop func() error
		cc   ldmv1connect.ClusterServiceClient
	}
	hc := &http.Client{Transport: client.NewTransport(nil)}
	var nodes []node
	for i, ip := range ips {
		cfg := server.Config{Addr: net.JoinHostPort(ip, "0"), DataDir: t.TempDir(), Logger: quiet}
		cfg.Cluster = server.ClusterConfig{
			NodeID: fmt.Sprintf("n%d", i), GossipAddr: net.JoinHostPort(ip, port), LocalGossip: true,
			Join: []string{"ldm.test"}, BootstrapExpect: 3, LookupHost: lookup,
		}
		s, stop := serve(t, cfg)
		nodes = append(nodes, node{s: s, stop: stop, cc: ldmv1connect.NewClusterServiceClient(hc, s.URL())})
	}
	// oneCluster reports the leader's address when every node in ns knows
	// the same leader and voters want.
	oneCluster := func(ns []node, want ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		leader := ""
		for _, n := range ns {
			voters, l := clusterView(ctx, n.cc)
			slices.Sort(voters)
			if l == "" || (leader != "" && l != leader) || !slices.Equal(voters, want) {
				return ""
			}
			leader = l
		}
		return leader
	}
	var leader string
	testutil.WaitFor(t, 30*time.Second, "one cluster of n0, n1 and n2", func() bool {
		leader = oneCluster(nodes, "n0", "n1", "n2")
		return leader != ""
	})

	var rest []node
	for _, n := range nodes {
		if n.s.URL() == "http://"+leader {
			if err := n.stop(); err != nil {
				t.Fatalf("stop the leader: %v", err)
			}
			continue
		}
		rest = append(rest, n)
	}
	if len(rest) != 2 {
		t.Fatalf("leader %s is none of the servers", leader)
	}
	// Without the hand-off the others would not even start an election
	// before a heartbeat timeout.
	testutil.WaitFor(t, raft.DefaultConfig().HeartbeatTimeout/2, "a new leader right after the old one stopped", func() bool {
		l := oneCluster(rest, "n0", "n1", "n2")
		return l != "" && l != leader
	})
}
