package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// rejoinTimeout bounds how long after its start a node that restarted at
// a new gossip address may take to be alive on every node.
const rejoinTimeout = 10 * time.Second

// gossipOf returns the alive gossip members that announce node id, as n
// sees them, by their gossip address.
func gossipOf(n *Node, id string) []string {
	var out []string
	for _, m := range n.serf.Members() {
		if m.Tags[tagID] == id && m.Status == serf.StatusAlive {
			out = append(out, net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))))
		}
	}
	return out
}

// seenOnceAlive reports whether n's Members lists id exactly once, as a
// voter that gossip sees alive, and every other member too.
func seenOnceAlive(ctx context.Context, n *Node, id string, total int) (bool, string) {
	members, err := n.Members(ctx)
	if err != nil {
		return false, err.Error()
	}
	count, alive := 0, 0
	for _, m := range members {
		if m.ID == id {
			count++
			if !m.Voter {
				return false, fmt.Sprintf("%s is not a voter: %+v", id, members)
			}
		}
		if m.Status == "alive" {
			alive++
		}
	}
	return count == 1 && alive == total && len(members) == total, fmt.Sprintf("%+v", members)
}

// TestNode_RestartNewAddress: a node that stops without leaving (no Leave,
// every connection cut) and starts again under the same id with its gossip
// on a new address, as a Kubernetes pod created again gets a new IP,
// rejoins gossip as alive on every node, is listed once everywhere, and
// keeps its voter: the Raft configuration is not changed, not even after
// its old incarnation is marked left and the leader reconciles. It can
// then lead, with a membership view that is current.
func TestNode_RestartNewAddress(t *testing.T) {
	c := newTestCluster(t)
	_, _, n3 := startThree(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mustCreate(t, c.leader(10*time.Second).node, "vol")

	l := c.leader(10 * time.Second)
	if l == n3 {
		// Keep the leader running: the test restarts a follower.
		for _, n := range c.running() {
			if n != n3 {
				if _, err := l.node.TransferLeader(ctx, n.id); err != nil {
					t.Fatalf("transfer leadership away from n3: %v", err)
				}
				break
			}
		}
		l = c.leader(10 * time.Second)
	}
	f := l.node.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	cfgIndex := f.Index()

	for round, host := range []string{"127.0.0.2", "127.0.0.3"} {
		old, oldName := n3.gossipAddr, n3.node.gossipName
		c.stop(n3)
		n3.gossipAddr = net.JoinHostPort(host, "0")
		c.restart(n3)
		if n3.gossipAddr == old || n3.node.gossipName == oldName {
			t.Fatalf("round %d: n3 gossips as %s at %s, as before", round, n3.node.gossipName, n3.gossipAddr)
		}

		// Every node, n3 included, sees it alive at its new address and
		// lists it once, as a voter; every member is alive. Well before
		// gossip would forget the old address (GossipToTheDeadTime) and
		// take the new one under the old name.
		restarted := time.Now()
		for _, n := range c.running() {
			waitLast(t, rejoinTimeout, fmt.Sprintf("round %d: %s to see n3 alive at %s", round, n.id, n3.gossipAddr), func() (bool, string) {
				addrs := gossipOf(n.node, "n3")
				ok, desc := seenOnceAlive(ctx, n.node, "n3", 3)
				return ok && slices.Contains(addrs, n3.gossipAddr), fmt.Sprintf("alive in gossip at %v; members %s", addrs, desc)
			})
		}
		t.Logf("round %d: n3 alive at %s on every node %v after its start", round, n3.gossipAddr, time.Since(restarted).Round(time.Millisecond))
		c.waitVoters(time.Second, "n1", "n2", "n3")

		// The old incarnation, marked left (as an operator's removal or a
		// leave of that process would), must not remove the live node.
		if err := l.node.serf.RemoveFailedNode(oldName); err != nil {
			t.Fatalf("round %d: mark %s left: %v", round, oldName, err)
		}
		waitLast(t, 30*time.Second, fmt.Sprintf("round %d: the leader to see %s left", round, oldName), func() (bool, string) {
			for _, m := range l.node.serf.Members() {
				if m.Name == oldName {
					return m.Status == serf.StatusLeft, m.Status.String()
				}
			}
			return true, "reaped"
		})
		if err := l.node.reconcile(); err != nil {
			t.Fatalf("round %d: reconcile: %v", round, err)
		}
		c.waitVoters(time.Second, "n1", "n2", "n3")
		f := l.node.Raft().GetConfiguration()
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		if f.Index() != cfgIndex {
			t.Fatalf("round %d: the Raft configuration changed (index %d, was %d): %+v", round, f.Index(), cfgIndex, f.Configuration().Servers)
		}
		if ok, desc := seenOnceAlive(ctx, l.node, "n3", 3); !ok {
			t.Fatalf("round %d: after its old incarnation left, the leader lists %s", round, desc)
		}
	}

	// n3 leads: its own view is current and writes go on.
	if got, err := n3.node.TransferLeader(ctx, "n3"); err != nil || got != "n3" {
		t.Fatalf("transfer leadership to n3: %q, %v", got, err)
	}
	if c.leader(10*time.Second) != n3 {
		t.Fatal("n3 does not lead after the transfer")
	}
	if ok, desc := seenOnceAlive(ctx, n3.node, "n3", 3); !ok {
		t.Fatalf("n3 leading lists %s", desc)
	}
	if err := n3.node.reconcile(); err != nil {
		t.Fatalf("reconcile on n3: %v", err)
	}
	c.waitVoters(time.Second, "n1", "n2", "n3")
	mustAppend(t, n3.node, "vol", storage.Tile{Value: []byte("after n3 restarted")})
	c.converge(20 * time.Second)
}

// waitLast is testutil.WaitFor with a condition that also describes what
// it saw, which the failure reports.
func waitLast(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	last := ""
	ok := false
	defer func() {
		if !ok {
			t.Logf("last seen: %s", last)
		}
	}()
	testutil.WaitFor(t, timeout, what, func() bool {
		var done bool
		done, last = cond()
		return done
	})
	ok = true
}

// TestNode_PrunesEarlierVersionAfterLeave: a node whose previous run was
// the earlier version (gossip name = node id) and left gracefully erases
// that left member from every node's list once it gossips again, so a
// leader of the earlier version, which acts on every member with the id,
// cannot remove the node again for the leave that preceded its restart.
func TestNode_PrunesEarlierVersionAfterLeave(t *testing.T) {
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	n2 := c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")

	// n3 of the earlier version gossips under its id, then leaves; obs
	// stands for a node of the earlier version: Serf without go-ldm's
	// reaping of superseded incarnations.
	serfDir := filepath.Join(c.base, "n3", "raft", "serf")
	if err := os.MkdirAll(serfDir, 0o755); err != nil {
		t.Fatal(err)
	}
	legacy := plainSerf(t, "n3", map[string]string{tagRole: "ldm", tagID: "n3", tagAddr: "127.0.0.1:1", tagRaft: "1"}, filepath.Join(serfDir, "local.snapshot"))
	obs := plainSerf(t, "obs", map[string]string{tagRole: "observer"}, filepath.Join(t.TempDir(), "obs.snapshot"))
	for _, s := range []*serf.Serf{legacy, obs} {
		if _, err := s.Join([]string{n1.gossipAddr}, true); err != nil {
			t.Fatal(err)
		}
	}
	// seen reports whether n1, n2 and obs all list the earlier n3 as st.
	seen := func(st serf.MemberStatus) bool {
		for _, members := range [][]serf.Member{n1.node.serf.Members(), n2.node.serf.Members(), obs.Members()} {
			if !slices.ContainsFunc(members, func(m serf.Member) bool { return m.Name == "n3" && m.Status == st }) {
				return false
			}
		}
		return true
	}
	testutil.WaitFor(t, 20*time.Second, "n1, n2 and obs to see the earlier n3 alive", func() bool { return seen(serf.StatusAlive) })
	if err := legacy.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := legacy.Shutdown(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "n1, n2 and obs to see the earlier n3 left", func() bool { return seen(serf.StatusLeft) })

	// It starts again with this version on the same data directory.
	n3 := c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	waitLast(t, 10*time.Second, "the earlier n3 erased from every list", func() (bool, string) {
		lists := map[string][]serf.Member{"obs": obs.Members()}
		for _, n := range []*testNode{n1, n2, n3} {
			lists[n.id] = n.node.serf.Members()
		}
		var left []string
		for id, members := range lists {
			for _, m := range members {
				if m.Name == "n3" {
					left = append(left, id+": "+m.Status.String())
				}
			}
		}
		return len(left) == 0, fmt.Sprint(left)
	})
	for _, n := range []*testNode{n1, n2, n3} {
		if st := memberStatus(n.node, "n3"); st != serf.StatusAlive {
			t.Fatalf("%s sees n3 %v", n.id, st)
		}
	}
}

// plainSerf starts Serf on a loopback port as go-ldm's earlier version
// configured it (the name is whatever is given, no reaping of superseded
// incarnations), and shuts it down at the end of the test.
func plainSerf(t *testing.T, name string, tags map[string]string, snapshot string) *serf.Serf {
	t.Helper()
	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = name
	sc.Tags = tags
	sc.MemberlistConfig = memberlist.DefaultLocalConfig()
	sc.MemberlistConfig.Name = name
	sc.MemberlistConfig.BindAddr = "127.0.0.1"
	sc.MemberlistConfig.BindPort = 0
	sc.MemberlistConfig.LogOutput = io.Discard
	sc.LogOutput = io.Discard
	sc.SnapshotPath = snapshot
	s, err := serf.Create(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	return s
}
