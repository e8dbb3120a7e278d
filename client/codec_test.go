package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"
	"github.com/klauspost/compress/zstd"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	ldmserver "github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
)

// TestExporter_ExportZarr_zstd exports a zstd volume: the chunks are its
// frames as stored, the metadata names the zstd compressor (the view's and
// package omezarr's alike), and every chunk decodes to the brick written.
// BrickVoxels decodes the same tiles read with GetBrick.
func TestExporter_ExportZarr_zstd(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, ldmserver.Config{})
	hc := &http.Client{Transport: client.NewTransport(nil)}
	vc := ldmv1connect.NewVolumeServiceClient(hc, s.URL(), connect.WithReadMaxBytes(1<<30), client.ZstdCompression(0))
	tc := ldmv1connect.NewTileServiceClient(hc, s.URL())
	ctx := context.Background()
	vol := &ldmv1.Volume{Name: "zs", Shape: &ldmv1.Shape{X: 40, Y: 32, Z: 32}, BrickShape: &ldmv1.Shape{X: 32, Y: 32, Z: 32},
		DataType: ldmv1.DataType_DATA_TYPE_UINT16, Codec: ldmv1.Codec_CODEC_ZSTD, CodecLevel: 4}
	if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: vol})); err != nil {
		t.Fatal(err)
	}
	bricks := map[uint32][]byte{}
	for bx := range uint32(2) {
		b := make([]byte, client.BrickBytes(vol))
		for i := range b {
			b[i] = byte(i/7) + byte(bx)
		}
		bricks[bx] = b
		tile := &ldmv1.Tile{Key: &ldmv1.BrickKey{X: bx}, Value: b}
		if bx == 1 {
			client.CompressTile(tile, 4)
		}
		if _, err := tc.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "zs", Tile: tile})); err != nil {
			t.Fatal(err)
		}
	}
	exportBoth(t, ctx, vc, hc, s.URL(), "zs")

	dir := filepath.Join(t.TempDir(), "zs.zarr")
	if _, err := (client.Exporter{Volumes: vc}).ExportZarr(ctx, "zs", dir); err != nil {
		t.Fatal(err)
	}
	za, err := os.ReadFile(filepath.Join(dir, "0", ".zarray"))
	if err != nil {
		t.Fatal(err)
	}
	var arr struct {
		Compressor map[string]any `json:"compressor"`
	}
	if err := json.Unmarshal(za, &arr); err != nil || arr.Compressor["id"] != "zstd" || arr.Compressor["level"] != float64(4) {
		t.Fatalf(".zarray compressor: %s (%v)", za, err)
	}
	d, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for bx, want := range bricks {
		chunk, err := os.ReadFile(filepath.Join(dir, "0", "0", "0", string(rune('0'+bx))))
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.DecodeAll(chunk, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk 0/0/%d: %v, equal %v", bx, err, bytes.Equal(got, want))
		}
		res, err := vc.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "zs", Key: &ldmv1.BrickKey{X: bx}}))
		if err != nil {
			t.Fatal(err)
		}
		if v, err := client.BrickVoxels(vol, res.Msg.GetTile()); err != nil || !bytes.Equal(v, want) {
			t.Fatalf("BrickVoxels of brick %d: %v", bx, err)
		}
	}
}
