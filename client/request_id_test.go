package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	ldmserver "github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
)

// TestClient_WriteTile_request_id: WriteTile gives a request without one a
// random 128-bit request id, so sending the same request again stores the
// tile once and answers the original offset; a new request is a new tile.
func TestClient_WriteTile_request_id(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, ldmserver.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Seeds: []string{s.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "v", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}}); err != nil {
		t.Fatal(err)
	}
	req := &ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("once")}}
	a, err := c.WriteTile(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if id := req.GetRequestId(); len(id) != 32 {
		t.Fatalf("request id %q, want 32 hex digits", id)
	}
	b, err := c.WriteTile(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if a.GetOffset() != 0 || b.GetOffset() != 0 {
		t.Fatalf("the same request twice: offsets %d and %d, want 0 and 0", a.GetOffset(), b.GetOffset())
	}
	other, err := c.WriteTile(ctx, &ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("once")}})
	if err != nil {
		t.Fatal(err)
	}
	if other.GetOffset() != 1 {
		t.Fatalf("a new request at %d, want 1", other.GetOffset())
	}
	if a, b := client.NewRequestID(), client.NewRequestID(); a == b {
		t.Fatalf("two request ids are equal: %s", a)
	}
}
