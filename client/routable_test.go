package client

import (
	"testing"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// TestClient_RoutesOnlyToVoters: reads never go to a member that gossip
// knows but Raft does not yet (it holds no data), nor to a failed one.
func TestClient_RoutesOnlyToVoters(t *testing.T) {
	c := &Client{scheme: "http", endpoints: map[string]*endpoint{}}
	c.adopt([]*ldmv1.Server{
		{Id: "n1", RpcAddr: "127.0.0.1:1", IsLeader: true, Voter: true, Status: "alive"},
		{Id: "n2", RpcAddr: "127.0.0.1:2", Voter: true, Status: "alive"},
		{Id: "n3", RpcAddr: "127.0.0.1:3", Voter: false, Status: "alive"}, // joining
		{Id: "n4", RpcAddr: "127.0.0.1:4", Voter: true, Status: "failed"},
	})
	for range 10 {
		if e := c.pick(false); e == nil || e.addr != "127.0.0.1:2" {
			t.Fatalf("read routed to %v, want the only routable follower 127.0.0.1:2", e)
		}
	}
	if e := c.pick(true); e == nil || e.addr != "127.0.0.1:1" {
		t.Fatalf("write routed to %v, want the leader", e)
	}
}
