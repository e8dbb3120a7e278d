package server_test

import (
	"context"
	"errors"
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

// TestServer_ClusterFollowerValidatesBrickKeys writes through the follower
// of a two-node cluster, whose writes are forwarded to the leader: a brick
// key outside the volume's grid is InvalidArgument there and is stored
// nowhere, while a valid key is forwarded and stored.
func TestServer_ClusterFollowerValidatesBrickKeys(t *testing.T) {
	t.Parallel()
	g1 := testutil.FixedAddr(t)
	n1, _ := startNode(t, "n1", g1, true, server.Config{})
	n2, _ := startNode(t, "n2", g1, false, server.Config{})
	hc := &http.Client{Transport: client.NewTransport(nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := ldmv1connect.NewClusterServiceClient(hc, n1.URL())
	testutil.WaitFor(t, 30*time.Second, "n1 and n2 voters with a leader", func() bool {
		ids, leader := clusterView(ctx, cc)
		return leader != "" && len(ids) == 2
	})
	// Find the follower.
	leader, follower := n1, n2
	res, err := cc.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Msg.GetServers() {
		if s.GetIsLeader() && s.GetId() == "n2" {
			leader, follower = n2, n1
		}
	}
	if _, err := ldmv1connect.NewVolumeServiceClient(hc, leader.URL()).CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "v", Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		t.Fatal(err)
	}
	fv := ldmv1connect.NewVolumeServiceClient(hc, follower.URL())
	testutil.WaitFor(t, 30*time.Second, "the volume on the follower", func() bool {
		_, err := fv.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"}))
		return err == nil
	})
	ft := ldmv1connect.NewTileServiceClient(hc, follower.URL())
	_, err = ft.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte{1}, Key: &ldmv1.BrickKey{Lod: 40}}}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		t.Fatalf("WriteTile of lod 40 through the follower: %v, want invalid_argument", err)
	}
	w, err := ft.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte{2}, Key: &ldmv1.BrickKey{}}}))
	if err != nil || w.Msg.GetOffset() != 0 {
		t.Fatalf("WriteTile of a valid key through the follower: %v, %v (want offset 0: nothing stored before)", w, err)
	}
	// The leader acknowledged the write, so it applied it: one tile.
	info, err := ldmv1connect.NewVolumeServiceClient(hc, leader.URL()).GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"}))
	if err != nil || info.Msg.GetVolume().GetNextOffset() != 1 {
		t.Fatalf("the leader's volume after the writes: %v, %v (want one tile)", info, err)
	}
}
