package server_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/server"
)

// startNode serves cfg as cluster node id on a free loopback port: with
// first it owns the gossip address g1, otherwise it joins g1. Empty
// DataDir and Logger get a fresh directory and a discarding logger.
func startNode(tb testing.TB, id, g1 string, first bool, cfg server.Config) (*server.Server, func() error) {
	tb.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.DataDir == "" {
		cfg.DataDir = tb.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	cfg.Cluster.NodeID, cfg.Cluster.LocalGossip = id, true
	if first {
		cfg.Cluster.GossipAddr = g1
	} else {
		cfg.Cluster.GossipAddr, cfg.Cluster.Join = "127.0.0.1:0", []string{g1}
	}
	return serve(tb, cfg)
}

// clusterView asks a server for its servers and returns the voters' ids
// and the leader's RPC address ("" without a leader or on error).
func clusterView(ctx context.Context, cc ldmv1connect.ClusterServiceClient) (voters []string, leader string) {
	res, err := cc.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
	if err != nil {
		return nil, ""
	}
	for _, s := range res.Msg.GetServers() {
		if s.GetVoter() {
			voters = append(voters, s.GetId())
		}
		if s.GetIsLeader() {
			leader = s.GetRpcAddr()
		}
	}
	return voters, leader
}
