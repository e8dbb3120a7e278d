package service_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// followerStore is a store on a cluster follower: writes and linearizable
// reads are refused with the leader's address; membership is known.
type followerStore struct {
	service.Tiles
	barriers atomic.Int64
}

var notLeader = &storage.NotLeaderError{LeaderID: "n1", LeaderAddr: "10.0.0.1:8080"}

func (f *followerStore) Append(context.Context, string, ...storage.Tile) (uint64, error) {
	return 0, notLeader
}

func (f *followerStore) ReadBarrier(context.Context) error {
	f.barriers.Add(1)
	return notLeader
}

func (f *followerStore) Servers(context.Context) ([]*ldmv1.Server, error) {
	return []*ldmv1.Server{
		{Id: "n1", RpcAddr: "10.0.0.1:8080", IsLeader: true, Voter: true, Status: "alive"},
		{Id: "n2", RpcAddr: "10.0.0.2:8080", Voter: true, Status: "alive"},
	}, nil
}

func (f *followerStore) RemoveServer(_ context.Context, id string) error {
	if id != "n3" {
		return storage.ErrNotFound
	}
	return nil
}

func (f *followerStore) TransferLeader(_ context.Context, id string) (string, error) {
	if id == "" {
		return "n2", nil
	}
	return id, nil
}

// TestService_ClusterCapabilities checks the optional capabilities of a
// Tiles value: NOT_LEADER errors carry the leader, linearizable reads call
// ReadBarrier (local reads do not), and ClusterService uses Membership.
func TestService_ClusterCapabilities(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	seedVolume(t, mem, 10)
	store := &followerStore{Tiles: mem}
	ts := startServer(t, serverOptions{store: store})
	for _, p := range protocols {
		c := ts.clients(t, p)
		ctx := context.Background()
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("x")}}))
		ce := assertCode(t, err, connect.CodeUnavailable)
		if !strings.Contains(ce.Message(), "10.0.0.1:8080") || ce.Meta().Get(service.LeaderHeader) != "10.0.0.1:8080" {
			t.Fatalf("%s: NOT_LEADER message %q, header %q", p.name, ce.Message(), ce.Meta().Get(service.LeaderHeader))
		}
		var info *errdetails.ErrorInfo
		for _, d := range ce.Details() {
			if v, err := d.Value(); err == nil {
				if i, ok := v.(*errdetails.ErrorInfo); ok {
					info = i
				}
			}
		}
		if info == nil || info.GetReason() != service.ReasonNotLeader || info.GetMetadata()["leader_addr"] != "10.0.0.1:8080" {
			t.Fatalf("%s: ErrorInfo %v", p.name, info)
		}

		before := store.barriers.Load()
		if _, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"})); err != nil {
			t.Fatalf("%s: local read on a follower: %v", p.name, err)
		}
		_, err = c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{}, Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE}))
		assertCode(t, err, connect.CodeUnavailable)
		_, err = c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE}))
		assertCode(t, err, connect.CodeUnavailable)
		if n := store.barriers.Load() - before; n != 2 {
			t.Fatalf("%s: %d read barriers, want 2", p.name, n)
		}

		gs, err := c.cluster.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
		if err != nil || len(gs.Msg.GetServers()) != 2 || !gs.Msg.GetServers()[0].GetIsLeader() {
			t.Fatalf("%s: GetServers %v %v", p.name, gs, err)
		}
		tl, err := c.cluster.TransferLeader(ctx, connect.NewRequest(&ldmv1.TransferLeaderRequest{}))
		if err != nil || tl.Msg.GetLeaderId() != "n2" {
			t.Fatalf("%s: TransferLeader %v %v", p.name, tl, err)
		}
		if _, err := c.cluster.RemoveServer(ctx, connect.NewRequest(&ldmv1.RemoveServerRequest{Id: "n3"})); err != nil {
			t.Fatalf("%s: RemoveServer: %v", p.name, err)
		}
		_, err = c.cluster.RemoveServer(ctx, connect.NewRequest(&ldmv1.RemoveServerRequest{Id: "n9"}))
		assertCode(t, err, connect.CodeNotFound)
		_, err = c.cluster.RemoveServer(ctx, connect.NewRequest(&ldmv1.RemoveServerRequest{}))
		assertCode(t, err, connect.CodeInvalidArgument)
	}
}

// TestNew_ValidatesConfig checks the errors of service.New.
func TestNew_ValidatesConfig(t *testing.T) {
	t.Parallel()
	bad := []service.Config{
		{},
		{Store: storage.NewMemory(0), MaxTileBytes: -1},
		{Store: storage.NewMemory(0), Interceptors: []connect.Interceptor{nil}},
		{Store: storage.NewMemory(0), CORSOrigins: []string{""}},
	}
	for i, cfg := range bad {
		if _, err := service.New(cfg); err == nil {
			t.Errorf("config %d: New accepted %+v", i, cfg)
		}
	}
	if _, err := service.New(service.Config{Store: storage.NewMemory(0)}); err != nil {
		t.Fatalf("a Config with only Store: %v", err)
	}
}
