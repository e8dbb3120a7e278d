package server_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
)

// TestServer_cluster_WriteTile_request_id: on a three-node cluster, a
// WriteTile applied through the leader and sent again with the same
// request id to another node after the leader stopped is answered with
// the original offset, and every surviving node holds the tile once.
func TestServer_cluster_WriteTile_request_id(t *testing.T) {
	t.Parallel()
	g1 := testutil.FixedAddr(t)
	type node struct {
		s    *server.Server
		stop func() error
	}
	var nodes []node
	for i, id := range []string{"n1", "n2", "n3"} {
		s, stop := startNode(t, id, g1, i == 0, server.Config{})
		nodes = append(nodes, node{s, stop})
	}
	hc := &http.Client{Transport: client.NewTransport(nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	leaderOf := func(s *server.Server) (string, int) {
		ids, leader := clusterView(ctx, ldmv1connect.NewClusterServiceClient(hc, s.URL()))
		return leader, len(ids)
	}
	var leader string
	testutil.WaitFor(t, 60*time.Second, "three voters and a leader", func() bool {
		var voters int
		leader, voters = leaderOf(nodes[0].s)
		return leader != "" && voters == 3
	})
	var li int
	for i, n := range nodes {
		if n.s.Addr().String() == leader {
			li = i
		}
	}
	lv := ldmv1connect.NewVolumeServiceClient(hc, nodes[li].s.URL())
	if _, err := lv.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "v", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		t.Fatal(err)
	}
	req := &ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("exactly once")}, RequestId: client.NewRequestID()}
	first, err := ldmv1connect.NewTileServiceClient(hc, nodes[li].s.URL()).WriteTile(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatal(err)
	}
	if err := nodes[li].stop(); err != nil {
		t.Fatal(err)
	}
	rest := append(append([]node{}, nodes[:li]...), nodes[li+1:]...)
	testutil.WaitFor(t, 60*time.Second, "a new leader", func() bool {
		l, _ := leaderOf(rest[0].s)
		return l != "" && l != leader
	})
	for _, n := range rest {
		tc := ldmv1connect.NewTileServiceClient(hc, n.s.URL())
		var again *connect.Response[ldmv1.WriteTileResponse]
		testutil.WaitFor(t, 30*time.Second, "the retry to be answered", func() bool {
			again, err = tc.WriteTile(ctx, connect.NewRequest(req))
			return err == nil
		})
		if again.Msg.GetOffset() != first.Msg.GetOffset() {
			t.Fatalf("retry through %s: offset %d, want %d", n.s.Addr(), again.Msg.GetOffset(), first.Msg.GetOffset())
		}
	}
	for _, n := range rest {
		vc := ldmv1connect.NewVolumeServiceClient(hc, n.s.URL())
		res, err := vc.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"}))
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Msg.GetVolume().GetNextOffset(); got != 1 {
			t.Fatalf("%s holds %d tiles, want 1", n.s.Addr(), got)
		}
	}
}
