package cluster

import (
	"context"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// Servers lists Members as ClusterService's messages. It is the one place
// cluster meets the API types: the service finds a Node's membership by
// asserting its Membership interface (Servers, RemoveServer,
// TransferLeader) on the value it serves, so the conversion stays here
// until the server assembly hands the service an adapter of Members.
func (n *Node) Servers(ctx context.Context) ([]*ldmv1.Server, error) {
	members, err := n.Members(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*ldmv1.Server, 0, len(members))
	for _, m := range members {
		out = append(out, ServerProto(m))
	}
	return out, nil
}

// ServerProto converts a Member to its API message. A member's Raft
// address is its main port, so RpcAddr and RaftAddr are the same.
func ServerProto(m Member) *ldmv1.Server {
	return &ldmv1.Server{
		Id:       m.ID,
		RpcAddr:  m.Addr,
		RaftAddr: m.Addr,
		IsLeader: m.Leader,
		Voter:    m.Voter,
		Status:   m.Status,
	}
}
