package service_test

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// wantField fails unless err is InvalidArgument with a BadRequest detail
// naming field.
func wantField(tb testing.TB, what string, err error, field string) {
	tb.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
		tb.Fatalf("%s: %v, want invalid_argument", what, err)
	}
	if got := badRequestField(tb, ce); got != field {
		tb.Fatalf("%s: BadRequest names %q, want %q (%v)", what, got, field, err)
	}
}

// TestService_BrickKeys writes and reads brick keys outside the volume's
// levels and grid over every protocol: each fails with InvalidArgument
// naming the field and stores nothing.
func TestService_BrickKeys(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			store := storage.NewMemory(0)
			ts := startServer(t, serverOptions{store: store})
			c := ts.clients(t, p)
			ctx := context.Background()
			// One level of 2x1x1 bricks of 64 voxels.
			if _, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
				Name: "one", Shape: &ldmv1.Shape{X: 100, Y: 64, Z: 1}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
			}})); err != nil {
				t.Fatal(err)
			}
			write := func(key *ldmv1.BrickKey) error {
				_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "one", Tile: &ldmv1.Tile{Value: []byte{1}, Key: key}}))
				return err
			}
			wantField(t, "WriteTile lod 40", write(&ldmv1.BrickKey{Lod: 40}), "tile.key.lod")
			wantField(t, "WriteTile x=2", write(&ldmv1.BrickKey{X: 2}), "tile.key.x")
			wantField(t, "WriteTile y=1", write(&ldmv1.BrickKey{X: 1, Y: 1}), "tile.key.y")
			wantField(t, "WriteTile z=1", write(&ldmv1.BrickKey{Z: 1}), "tile.key.z")
			if err := write(&ldmv1.BrickKey{X: 1}); err != nil {
				t.Fatalf("WriteTile of the last brick: %v", err)
			}
			if err := write(nil); err != nil {
				t.Fatalf("WriteTile without a key: %v", err)
			}

			_, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "one", Key: &ldmv1.BrickKey{Lod: 40}}))
			wantField(t, "GetBrick lod 40", err, "key.lod")
			_, err = c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "one", Key: &ldmv1.BrickKey{X: 5}}))
			wantField(t, "GetBrick x=5", err, "key.x")

			// A stream names the volume once; its third message is out of
			// the grid and ends it, after the two before were stored.
			ws := c.tiles.WriteTileStream(ctx)
			for i, k := range []*ldmv1.BrickKey{{X: 0}, {X: 1}, {Lod: 1}} {
				req := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: []byte{byte(i)}, Key: k}}
				if i == 0 {
					req.Volume = "one"
				}
				if err := ws.Send(req); err != nil {
					break // the server ended the stream; Receive says why
				}
			}
			_ = ws.CloseRequest()
			for {
				if _, err = ws.Receive(); err != nil {
					break
				}
			}
			_ = ws.CloseResponse()
			wantField(t, "WriteTileStream lod 1", err, "tile.key.lod")
			info, err := store.Volume("one")
			if err != nil || info.NextOffset != 4 {
				t.Fatalf("volume after the writes: %d tiles (want 4), %v", info.NextOffset, err)
			}
		})
	}
}

// TestService_CreateVolumePyramid refuses level counts that halving
// cannot give, naming the field.
func TestService_CreateVolumePyramid(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	c := ts.clients(t, protocols[0])
	ctx := context.Background()
	create := func(name string, shape, brick *ldmv1.Shape, lods uint32, dt ldmv1.DataType) error {
		_, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: name, Shape: shape, BrickShape: brick, LodCount: lods, DataType: dt,
		}}))
		return err
	}
	u8 := ldmv1.DataType_DATA_TYPE_UINT8
	// 1x1x1 has one level; 256 in x has nine (256, 128, ..., 1).
	wantField(t, "two levels of one voxel", create("a", &ldmv1.Shape{X: 1, Y: 1, Z: 1}, nil, 2, u8), "volume.lod_count")
	wantField(t, "ten levels of 256", create("b", &ldmv1.Shape{X: 256, Y: 3, Z: 1}, nil, 10, u8), "volume.lod_count")
	if err := create("c", &ldmv1.Shape{X: 256, Y: 3, Z: 1}, nil, 9, u8); err != nil {
		t.Fatalf("nine levels of 256: %v", err)
	}
	if err := create("d", &ldmv1.Shape{X: 1, Y: 1, Z: 1}, nil, 1, u8); err != nil {
		t.Fatalf("one level of one voxel: %v", err)
	}
}
