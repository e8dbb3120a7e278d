package service_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// grpcConn dials ts with grpc-go (h2c or TLS as ts serves).
func grpcConn(tb testing.TB, ts *testServer) *grpc.ClientConn {
	tb.Helper()
	creds := insecure.NewCredentials()
	if ts.TLS != nil {
		creds = credentials.NewTLS(ts.TLS)
	}
	conn, err := grpc.NewClient(ts.Addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<30), grpc.MaxCallSendMsgSize(1<<30)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

var (
	serverStreamDesc = &grpc.StreamDesc{ServerStreams: true}
	bidiStreamDesc   = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
)

// TestService_GRPCGo calls every RPC with grpc-go and the generated
// messages, over h2c and over TLS.
func TestService_GRPCGo(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		name := "h2c"
		if useTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{tls: useTLS})
			conn := grpcConn(t, ts)
			ctx := context.Background()
			invoke := func(method string, req, res any) error {
				return conn.Invoke(ctx, method, req, res)
			}

			var cv ldmv1.CreateVolumeResponse
			if err := invoke("/ldm.v1.VolumeService/CreateVolume", &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
				Name: "g", Shape: &ldmv1.Shape{X: 128, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8, LodCount: 2,
			}}, &cv); err != nil || cv.GetVolume().GetBrickShape().GetX() != 64 {
				t.Fatalf("CreateVolume: %v %v", &cv, err)
			}
			brick := tileBytes(64*64*64, 3)
			var wt ldmv1.WriteTileResponse
			if err := invoke("/ldm.v1.TileService/WriteTile", &ldmv1.WriteTileRequest{Volume: "g", Tile: &ldmv1.Tile{Value: brick, Key: &ldmv1.BrickKey{Lod: 1}}}, &wt); err != nil {
				t.Fatal(err)
			}
			var rt ldmv1.ReadTileResponse
			if err := invoke("/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "g", Offset: wt.GetOffset()}, &rt); err != nil || !bytes.Equal(rt.GetTile().GetValue(), brick) {
				t.Fatalf("ReadTile: %v", err)
			}

			// Bidi: WriteTileStream with two LOD 0 bricks.
			ws, err := conn.NewStream(ctx, bidiStreamDesc, "/ldm.v1.TileService/WriteTileStream")
			if err != nil {
				t.Fatal(err)
			}
			for x := range uint32(2) {
				req := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: tileBytes(len(brick), byte(x)), Key: &ldmv1.BrickKey{X: x}}}
				if x == 0 {
					req.Volume = "g"
				}
				if err := ws.SendMsg(req); err != nil {
					t.Fatal(err)
				}
			}
			if err := ws.CloseSend(); err != nil {
				t.Fatal(err)
			}
			for want := uint64(1); want <= 2; want++ {
				var res ldmv1.WriteTileStreamResponse
				if err := ws.RecvMsg(&res); err != nil || res.GetOffset() != want {
					t.Fatalf("WriteTileStream answer %d: %v %v", want, &res, err)
				}
			}
			if err := ws.RecvMsg(&ldmv1.WriteTileStreamResponse{}); !errors.Is(err, io.EOF) {
				t.Fatalf("WriteTileStream end: %v", err)
			}

			// Server streams.
			recvAll := func(method string, req any, newRes func() interface{ GetTile() *ldmv1.Tile }) []*ldmv1.Tile {
				s, err := conn.NewStream(ctx, serverStreamDesc, method)
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendMsg(req); err != nil {
					t.Fatal(err)
				}
				if err := s.CloseSend(); err != nil {
					t.Fatal(err)
				}
				var out []*ldmv1.Tile
				for {
					res := newRes()
					if err := s.RecvMsg(res); err != nil {
						if !errors.Is(err, io.EOF) {
							t.Fatalf("%s: %v", method, err)
						}
						return out
					}
					out = append(out, res.GetTile())
				}
			}
			tiles := recvAll("/ldm.v1.TileService/ReadTileStream", &ldmv1.ReadTileStreamRequest{Volume: "g"},
				func() interface{ GetTile() *ldmv1.Tile } { return &ldmv1.ReadTileStreamResponse{} })
			if len(tiles) != 3 || tiles[2].GetOffset() != 2 {
				t.Fatalf("ReadTileStream: %d tiles", len(tiles))
			}
			bricks := recvAll("/ldm.v1.VolumeService/StreamBricks", &ldmv1.StreamBricksRequest{Volume: "g", Focus: &ldmv1.Point{X: 127}},
				func() interface{ GetTile() *ldmv1.Tile } { return &ldmv1.StreamBricksResponse{} })
			if len(bricks) != 3 || bricks[0].GetKey().GetLod() != 1 || bricks[1].GetKey().GetX() != 1 {
				t.Fatalf("StreamBricks order: %v", bricks)
			}

			var gb ldmv1.GetBrickResponse
			if err := invoke("/ldm.v1.VolumeService/GetBrick", &ldmv1.GetBrickRequest{Volume: "g", Key: &ldmv1.BrickKey{X: 1}}, &gb); err != nil || gb.GetTile().GetOffset() != 2 {
				t.Fatalf("GetBrick: %v", err)
			}
			var gv ldmv1.GetVolumeResponse
			if err := invoke("/ldm.v1.VolumeService/GetVolume", &ldmv1.GetVolumeRequest{Name: "g"}, &gv); err != nil || gv.GetVolume().GetNextOffset() != 3 {
				t.Fatalf("GetVolume: %v", err)
			}
			var lv ldmv1.ListVolumesResponse
			if err := invoke("/ldm.v1.VolumeService/ListVolumes", &ldmv1.ListVolumesRequest{}, &lv); err != nil || len(lv.GetVolumes()) != 1 {
				t.Fatalf("ListVolumes: %v", err)
			}
			var gs ldmv1.GetServersResponse
			if err := invoke("/ldm.v1.ClusterService/GetServers", &ldmv1.GetServersRequest{}, &gs); err != nil || len(gs.GetServers()) != 1 {
				t.Fatalf("GetServers: %v", err)
			}
			err = invoke("/ldm.v1.ClusterService/TransferLeader", &ldmv1.TransferLeaderRequest{}, &ldmv1.TransferLeaderResponse{})
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("TransferLeader: %v", err)
			}
			err = invoke("/ldm.v1.ClusterService/RemoveServer", &ldmv1.RemoveServerRequest{Id: "x"}, &ldmv1.RemoveServerResponse{})
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("RemoveServer: %v", err)
			}
			err = invoke("/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "g", Offset: 99}, &ldmv1.ReadTileResponse{})
			if status.Code(err) != codes.OutOfRange {
				t.Fatalf("ReadTile past the end: %v", err)
			}
			err = invoke("/ldm.v1.TileService/ReadTile", &ldmv1.ReadTileRequest{Volume: "No"}, &ldmv1.ReadTileResponse{})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("ReadTile of a bad name: %v", err)
			}
			if err := invoke("/ldm.v1.VolumeService/DeleteVolume", &ldmv1.DeleteVolumeRequest{Name: "g"}, &ldmv1.DeleteVolumeResponse{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
