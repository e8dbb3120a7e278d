package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

func TestBootstrapPlan(t *testing.T) {
	fresh := func(id string) bootCandidate { return bootCandidate{id: id, addr: id + ":1", expect: 3} }
	for _, tc := range []struct {
		name    string
		self    string
		members []bootCandidate
		want    []string // ids to bootstrap with; nil: wait
		reason  string   // part of the reason to wait
	}{
		{"too_few", "a", []bootCandidate{fresh("a"), fresh("b")}, nil, "2 of 3"},
		{"lowest_bootstraps", "a", []bootCandidate{fresh("c"), fresh("a"), fresh("b")}, []string{"a", "b", "c"}, ""},
		{"others_wait", "b", []bootCandidate{fresh("c"), fresh("a"), fresh("b")}, nil, "a, the member with the lowest id"},
		{"more_than_expected", "a", []bootCandidate{fresh("a"), fresh("b"), fresh("c"), fresh("d")}, []string{"a", "b", "c", "d"}, ""},
		{"member_with_state", "a", []bootCandidate{fresh("a"), fresh("b"), fresh("c"), {id: "z", hasState: true}}, nil, "z already has Raft state"},
		{"conflicting_expect", "a", []bootCandidate{fresh("a"), fresh("b"), fresh("c"), {id: "d", expect: 5}}, nil, "expects 5"},
		{"without_expect_ignored", "b", []bootCandidate{{id: "a"}, fresh("b"), fresh("c"), fresh("d")}, []string{"b", "c", "d"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan, reason := bootstrapPlan(tc.self, 3, tc.members)
			var got []string
			for _, m := range plan {
				got = append(got, m.id)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("plan %v (reason %q), want %v", got, reason, tc.want)
			}
			if !strings.Contains(reason, tc.reason) {
				t.Fatalf("reason %q, want it to mention %q", reason, tc.reason)
			}
		})
	}
}

func TestResolveJoin(t *testing.T) {
	lookup := func(_ context.Context, host string) ([]string, error) {
		switch host {
		case "ldm.test":
			return []string{"10.0.0.2", "10.0.0.1", "fd00::1"}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	got, err := resolveJoin(context.Background(), []string{"ldm.test", "ldm.test:9000", "10.0.0.9:7000", "10.0.0.1"}, "7946", lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.1:7946", "10.0.0.1:9000", "10.0.0.2:7946", "10.0.0.2:9000", "10.0.0.9:7000", "[fd00::1]:7946", "[fd00::1]:9000"}
	if !slices.Equal(got, want) {
		t.Fatalf("resolved %v, want %v", got, want)
	}
	got, err = resolveJoin(context.Background(), []string{"missing.test", "10.0.0.3"}, "7946", lookup)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !slices.Equal(got, []string{"10.0.0.3:7946"}) {
		t.Fatalf("with an unknown name: %v, %v", got, err)
	}
}

// stubDNS answers one name with the hosts it is given, like a headless
// service that publishes the addresses of pods that are not ready; it
// fails while the list is empty.
type stubDNS struct {
	mu      sync.Mutex
	name    string
	hosts   []string
	lookups atomic.Int64
}

func (d *stubDNS) set(hosts ...string) {
	d.mu.Lock()
	d.hosts = hosts
	d.mu.Unlock()
}

func (d *stubDNS) lookup(_ context.Context, host string) ([]string, error) {
	d.lookups.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	if host != d.name || len(d.hosts) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(d.hosts), nil
}

// expectCluster is an in-process cluster whose nodes have their own
// loopback IPs and one gossip port, found through one DNS name.
type expectCluster struct {
	c    *testCluster
	dns  *stubDNS
	port string
	net  string // 127.x.y.
}

func newExpectCluster(t *testing.T) *expectCluster {
	c := newTestCluster(t)
	_, port, _ := net.SplitHostPort(testutil.FixedAddr(t))
	e := &expectCluster{c: c, dns: &stubDNS{name: "ldm.test"}, port: port,
		net: fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))}
	c.tune = func(cfg *Config) {
		cfg.BootstrapExpect = 3
		cfg.Join = []string{"ldm.test"}
		cfg.LookupHost = e.dns.lookup
	}
	return e
}

func (e *expectCluster) ip(i int) string { return e.net + fmt.Sprint(10+i) }

// node adds node i (not started).
func (e *expectCluster) node(i int) *testNode {
	n := &testNode{id: fmt.Sprintf("ldm-%d", i), dir: filepath.Join(e.c.base, fmt.Sprint(i)),
		addr: net.JoinHostPort(e.ip(i), "0"), gossipAddr: net.JoinHostPort(e.ip(i), e.port)}
	e.c.mu.Lock()
	e.c.nodes[n.id] = n
	e.c.mu.Unlock()
	return n
}

// describe returns, per node, its leader and configuration as it sees
// them.
func describe(nodes []*testNode) string {
	var b strings.Builder
	for _, n := range nodes {
		id, _ := n.node.Leader()
		f := n.node.Raft().GetConfiguration()
		var ids []string
		if f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				ids = append(ids, string(s.ID))
			}
		}
		fmt.Fprintf(&b, "%s: leader %q voters %v; ", n.id, id, ids)
	}
	return b.String()
}

// waitOneCluster waits until every running node knows the same leader and
// holds the same configuration of exactly ids as voters.
func waitOneCluster(tb testing.TB, c *testCluster, timeout time.Duration, ids ...string) {
	tb.Helper()
	want := slices.Clone(ids)
	slices.Sort(want)
	last := ""
	defer func() {
		if tb.Failed() {
			tb.Logf("last seen: %s", last)
		}
	}()
	testutil.WaitFor(tb, timeout, fmt.Sprintf("one cluster of voters %v", ids), func() bool {
		nodes := c.running()
		last = describe(nodes)
		if len(nodes) != len(ids) {
			return false
		}
		leader := ""
		for _, n := range nodes {
			id, _ := n.node.Leader()
			if id == "" || (leader != "" && id != leader) {
				return false
			}
			leader = id
			f := n.node.Raft().GetConfiguration()
			if f.Error() != nil {
				return false
			}
			var got []string
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					got = append(got, string(s.ID))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return false
			}
		}
		return true
	})
}

// TestNode_BootstrapExpect: three nodes started together with
// BootstrapExpect 3 and one DNS name that lists them all (and at first
// nothing) form one cluster of three voters; they keep it across a restart
// of all of them; a fourth node started later with the same settings is
// added to it instead of forming another.
func TestNode_BootstrapExpect(t *testing.T) {
	e := newExpectCluster(t)
	nodes := []*testNode{e.node(0), e.node(1), e.node(2)}
	for _, n := range slices.Backward(nodes) {
		e.c.start(n, false, nil)
	}
	// The name resolves only after each node looked it up a few times
	// (longer than bootstrapSettle), as a headless service publishes pods
	// some time after they were created: joins must retry, and a node that
	// sees only itself must not bootstrap.
	testutil.WaitFor(t, 20*time.Second, "the join loops to look the name up", func() bool { return e.dns.lookups.Load() >= 12 })
	e.dns.set(e.ip(0), e.ip(1), e.ip(2))
	waitOneCluster(t, e.c, 30*time.Second, "ldm-0", "ldm-1", "ldm-2")
	// One node wrote the initial configuration, the same one every node
	// holds at index 1: Raft's log matching would never repair a second
	// bootstrap, whose first entry has the same term and index.
	for _, n := range nodes {
		var first raft.Log
		if err := n.node.wal.GetLog(1, &first); err != nil {
			t.Fatalf("%s: entry 1: %v", n.id, err)
		}
		if first.Type != raft.LogConfiguration {
			t.Fatalf("%s: entry 1 is %v, want the bootstrap configuration", n.id, first.Type)
		}
		cfg := raft.DecodeConfiguration(first.Data)
		var ids []string
		for _, s := range cfg.Servers {
			ids = append(ids, string(s.ID))
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []string{"ldm-0", "ldm-1", "ldm-2"}) {
			t.Fatalf("%s: bootstrapped with %v, want all three nodes", n.id, ids)
		}
	}

	t.Run("restart_all", func(t *testing.T) {
		for _, n := range nodes {
			e.c.stop(n)
		}
		for _, n := range nodes {
			e.c.start(n, false, nil)
		}
		waitOneCluster(t, e.c, 30*time.Second, "ldm-0", "ldm-1", "ldm-2")
	})
	t.Run("scale_up", func(t *testing.T) {
		n := e.node(3)
		e.dns.set(e.ip(0), e.ip(1), e.ip(2), e.ip(3))
		e.c.start(n, false, nil)
		waitOneCluster(t, e.c, 30*time.Second, "ldm-0", "ldm-1", "ldm-2", "ldm-3")
	})
}
