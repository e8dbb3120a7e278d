package service

import (
	"context"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// Leaver is an optional capability of a Tiles value: a cluster node that
// can take itself out of its cluster for good (ClusterService.Leave).
// Without it, Leave fails with FailedPrecondition.
type Leaver interface {
	// Leave hands leadership away if this node leads, has the leader
	// remove it from the configuration and leaves the gossip pool. It
	// succeeds again on a node that left.
	Leave(ctx context.Context) error
	// ID returns the node's id.
	ID() string
	// Leader returns the id and address of the leader as the node knows
	// it (empty when unknown).
	Leader() (id, addr string)
}

// Leave takes the server that answers out of the cluster.
func (h *clusterHandler) Leave(ctx context.Context, req *connect.Request[ldmv1.LeaveRequest]) (*connect.Response[ldmv1.LeaveResponse], error) {
	l, ok := h.s.store.(Leaver)
	if !ok {
		return nil, notClustered(req.Spec().Procedure)
	}
	if err := l.Leave(ctx); err != nil {
		return nil, connectError(err)
	}
	leader, _ := l.Leader()
	return connect.NewResponse(&ldmv1.LeaveResponse{Id: l.ID(), LeaderId: leader}), nil
}
