package cluster

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// memberStatus returns how the node's gossip sees node id (the
// incarnation that stands for it).
func memberStatus(n *Node, id string) serf.MemberStatus {
	for _, m := range nodeMembers(n.serf.Members()) {
		if memberNodeID(m) == id {
			return m.Status
		}
	}
	return serf.StatusNone
}

// TestNode_Membership: a failed node stays a voter until an operator
// removes it; a node that leaves gracefully is removed by the leader; a
// removal is forwarded from a follower; leadership can be handed over.
func TestNode_Membership(t *testing.T) {
	c := newTestCluster(t)
	_, _, n3 := startThree(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// n3 crashes: gossip marks it failed, yet it stays a voter.
	c.stop(n3)
	l := c.leader(15 * time.Second)
	testutil.WaitFor(t, 20*time.Second, "gossip to mark n3 failed", func() bool { return memberStatus(l.node, "n3") == serf.StatusFailed })
	if err := l.node.reconcile(); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	c.waitVoters(time.Second, "n1", "n2", "n3")
	members, err := l.node.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.ID == "n3" && (m.Status != "failed" || !m.Voter) {
			t.Fatalf("n3 after its crash: %+v", m)
		}
	}

	// The operator removes it, through the follower.
	var follower *testNode
	for _, n := range c.running() {
		if n != l {
			follower = n
		}
	}
	if err := follower.node.RemoveServer(ctx, "n3"); err != nil {
		t.Fatalf("remove n3 via %s: %v", follower.id, err)
	}
	c.waitVoters(10*time.Second, "n1", "n2")
	if err := follower.node.RemoveServer(ctx, "nope"); !errorsIs(err, storage.ErrNotFound) {
		t.Fatalf("remove an unknown server: %v", err)
	}

	// A new node joins and then leaves gracefully.
	n4 := c.add("n4")
	c.waitVoters(15*time.Second, "n1", "n2", "n4")
	if err := n4.node.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	c.waitVoters(15*time.Second, "n1", "n2")
	c.stop(n4)

	// Leadership moves on request, from a follower.
	l = c.leader(10 * time.Second)
	for _, n := range c.running() {
		if n != l {
			follower = n
		}
	}
	got, err := follower.node.TransferLeader(ctx, follower.id)
	if err != nil {
		t.Fatalf("transfer to %s: %v", follower.id, err)
	}
	if got != follower.id {
		t.Fatalf("new leader %s, want %s", got, follower.id)
	}
	if l2 := c.leader(10 * time.Second); l2 != follower {
		t.Fatalf("leader is %s, want %s", l2.id, follower.id)
	}
	if _, err := follower.node.Append(ctx, "missing", storage.Tile{Value: []byte("x")}); !errorsIs(err, storage.ErrNotFound) {
		t.Fatalf("write after the transfer: %v", err)
	}
}

// TestNode_GossipKey: members that share the gossip key form a cluster; a
// node with another key cannot join the gossip pool, so the leader never
// makes it a voter.
func TestNode_GossipKey(t *testing.T) {
	c := newTestCluster(t)
	key := bytes.Repeat([]byte{7}, 32)
	c.tune = func(cfg *Config) {
		cfg.GossipKey = key
		if cfg.NodeID == "intruder" {
			cfg.GossipKey = bytes.Repeat([]byte{8}, 32)
		}
	}
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")

	x := c.add("intruder")
	if joined, err := x.node.serf.Join([]string{n1.gossipAddr}, true); err == nil || joined != 0 {
		t.Fatalf("a node with another gossip key joined (%d contacted, err %v)", joined, err)
	}
	if st := memberStatus(n1.node, "intruder"); st != serf.StatusNone {
		t.Fatalf("n1 sees the intruder as %v", st)
	}
	c.waitVoters(time.Second, "n1", "n2")

	if _, err := New(Config{NodeID: "bad", Dir: t.TempDir(), AdvertiseAddr: "127.0.0.1:1", GossipKey: []byte("short")}, NewMemoryStore()); !errorsIs(err, storage.ErrInvalidArgument) {
		t.Fatalf("a 5-byte gossip key: %v, want ErrInvalidArgument", err)
	}
}
