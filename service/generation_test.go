package service_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// TestReadTile_generation: a volume deleted and created again under the
// same name has another generation; the old ETags do not validate (no
// 304), reads that name the old generation fail with FailedPrecondition,
// and only a GET that names the generation is cached as immutable.
func TestReadTile_generation(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	c := ts.clients(t, protocols[0])
	ctx := context.Background()
	create := func() uint64 {
		t.Helper()
		res, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: "v", Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		}}))
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"}))
		if err != nil {
			t.Fatal(err)
		}
		if g := res.Msg.GetVolume().GetGeneration(); g == 0 || g != got.Msg.GetVolume().GetGeneration() {
			t.Fatalf("generation %d from CreateVolume, %d from GetVolume", g, got.Msg.GetVolume().GetGeneration())
		}
		if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{
			Value: []byte(fmt.Sprint("tile of generation ", res.Msg.GetVolume().GetGeneration())), Key: &ldmv1.BrickKey{},
		}})); err != nil {
			t.Fatal(err)
		}
		return res.Msg.GetVolume().GetGeneration()
	}
	get := func(procedure, msg, ifNoneMatch string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, getURL(ts.URL, procedure, msg), nil)
		if ifNoneMatch != "" {
			req.Header.Set("If-None-Match", ifNoneMatch)
		}
		res, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res
	}
	const readTile, getBrick = "/ldm.v1.TileService/ReadTile", "/ldm.v1.VolumeService/GetBrick"

	old := create()
	oldTile := fmt.Sprintf(`{"volume":"v","offset":0,"generation":"%d"}`, old)
	oldBrick := fmt.Sprintf(`{"volume":"v","key":{},"generation":"%d"}`, old)
	res := get(readTile, oldTile, "")
	if res.StatusCode != 200 || res.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Fatalf("GET ReadTile with the generation: %s, Cache-Control %q, want 200 immutable", res.Status, res.Header.Get("Cache-Control"))
	}
	tileTag := res.Header.Get("ETag")
	brickTag := get(getBrick, oldBrick, "").Header.Get("ETag")
	if r := get(readTile, oldTile, tileTag); r.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation of the same generation: %s, want 304", r.Status)
	}

	if _, err := c.volumes.DeleteVolume(ctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: "v"})); err != nil {
		t.Fatal(err)
	}
	cur := create()
	if cur == old {
		t.Fatalf("the re-created volume kept generation %d", old)
	}

	t.Run("old_etag_does_not_validate", func(t *testing.T) {
		for _, tc := range []struct{ procedure, msg, tag string }{
			{readTile, `{"volume":"v","offset":0}`, tileTag},
			{getBrick, `{"volume":"v","key":{}}`, brickTag},
		} {
			if r := get(tc.procedure, tc.msg, tc.tag); r.StatusCode != 200 || r.Header.Get("ETag") == tc.tag {
				t.Fatalf("GET %s with the old volume's ETag %s: %s, ETag %q, want 200 with a new ETag", tc.procedure, tc.tag, r.Status, r.Header.Get("ETag"))
			}
		}
	})
	t.Run("old_generation_fails", func(t *testing.T) {
		for _, p := range protocols {
			cl := ts.clients(t, p)
			_, err := cl.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Generation: old}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "GetVolume") {
				t.Fatalf("%s: ReadTile of the old generation: %v, want FailedPrecondition", p.name, err)
			}
			_, err = cl.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "v", Key: &ldmv1.BrickKey{}, Generation: old}))
			if connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Fatalf("%s: GetBrick of the old generation: %v, want FailedPrecondition", p.name, err)
			}
			if _, err := cl.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Generation: cur})); err != nil {
				t.Fatalf("%s: ReadTile of the current generation: %v", p.name, err)
			}
		}
		// The old GET URL fails too, through connect-go's GET support.
		gc := ldmv1connect.NewTileServiceClient(c.http, ts.URL, connect.WithHTTPGet())
		if _, err := gc.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Generation: old})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("GET ReadTile of the old generation: %v, want FailedPrecondition", err)
		}
		if r := get(readTile, oldTile, ""); r.StatusCode == 200 {
			t.Fatalf("plain GET of the old generation's URL: %s", r.Status)
		}
	})
}
