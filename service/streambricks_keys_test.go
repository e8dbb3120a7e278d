package service_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// keysVolume creates a 2-level volume of 256x128x64 voxels in 64^3 bricks
// (LOD 0: 4x2x1 bricks, LOD 1: 2x1x1) and writes every brick but LOD 0
// (3, 1, 0); each brick's first byte is 10*lod + x + 4*y.
func keysVolume(tb testing.TB, c apiClients, name string) {
	tb.Helper()
	ctx := context.Background()
	if _, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: name, Shape: &ldmv1.Shape{X: 256, Y: 128, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		BrickShape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, LodCount: 2,
	}})); err != nil {
		tb.Fatal(err)
	}
	write := func(lod, x, y uint32) {
		v := make([]byte, 64*64*64)
		v[0] = byte(10*lod + x + 4*y)
		if _, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: name, Tile: &ldmv1.Tile{
			Value: v, Key: &ldmv1.BrickKey{Lod: lod, X: x, Y: y},
		}})); err != nil {
			tb.Fatal(err)
		}
	}
	for y := range uint32(2) {
		for x := range uint32(4) {
			if x != 3 || y != 1 {
				write(0, x, y)
			}
		}
	}
	write(1, 0, 0)
	write(1, 1, 0)
}

// TestStreamBricks_Keys asks for an exact set of bricks over every
// protocol: the bricks come in the order asked, region and level range are
// ignored, and a key with no brick is reported in its place.
func TestStreamBricks_Keys(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{})
			c := ts.clients(t, p)
			keysVolume(t, c, "k")
			keys := []*ldmv1.BrickKey{
				{Lod: 1, X: 1},       // present
				{Lod: 0, X: 3, Y: 1}, // never written
				{Lod: 0, X: 2, Y: 1}, // present
				{Lod: 0, X: 9},       // outside the grid
				{Lod: 0},             // present
				{Lod: 0},             // asked twice: sent twice
				{Lod: 1, X: 1, Y: 1}, // outside the grid
				{Lod: 1},             // present
				{Lod: 0, X: 3},       // present
				{Lod: 0, Y: 63},      // outside the grid
				{Lod: 0, X: 1, Y: 1}, // present
			}
			exists := func(k *ldmv1.BrickKey) bool {
				if k.GetLod() == 1 {
					return k.GetY() == 0 && k.GetX() < 2 && k.GetZ() == 0
				}
				return k.GetX() < 4 && k.GetY() < 2 && k.GetZ() == 0 && (k.GetX() != 3 || k.GetY() != 1)
			}
			// A region and level range that would select nothing: keys win.
			s, err := c.volumes.StreamBricks(context.Background(), connect.NewRequest(&ldmv1.StreamBricksRequest{
				Volume: "k", Keys: keys, MinLod: ptr(uint32(1)), MaxLod: ptr(uint32(1)),
				Region: &ldmv1.Region{Min: &ldmv1.Shape{X: 250, Y: 120, Z: 60}, Max: &ldmv1.Shape{X: 251, Y: 121, Z: 61}},
			}))
			if err != nil {
				t.Fatal(err)
			}
			got := receiveAll(t, s)
			if len(got) != len(keys) {
				t.Fatalf("%d responses for %d keys", len(got), len(keys))
			}
			for i, r := range got {
				k := keys[i]
				if r.GetIndex() != uint32(i) || r.GetTotal() != uint32(len(keys)) {
					t.Fatalf("response %d: index %d of %d, want %d of %d", i, r.GetIndex(), r.GetTotal(), i, len(keys))
				}
				if !exists(k) {
					if r.GetTile() != nil || r.GetMissing().GetLod() != k.GetLod() || r.GetMissing().GetX() != k.GetX() || r.GetMissing().GetY() != k.GetY() || r.GetMissing().GetZ() != k.GetZ() {
						t.Fatalf("response %d for missing key %v: tile %v, missing %v", i, k, r.GetTile().GetKey(), r.GetMissing())
					}
					continue
				}
				tk := r.GetTile().GetKey()
				if r.GetMissing() != nil || tk.GetLod() != k.GetLod() || tk.GetX() != k.GetX() || tk.GetY() != k.GetY() || tk.GetZ() != k.GetZ() {
					t.Fatalf("response %d: brick %v (missing %v), want %v", i, tk, r.GetMissing(), k)
				}
				if v := r.GetTile().GetValue(); len(v) != 64*64*64 || v[0] != byte(10*k.GetLod()+k.GetX()+4*k.GetY()) {
					t.Fatalf("response %d: brick %v holds the wrong voxels", i, k)
				}
			}
		})
	}
}

// TestStreamBricks_KeysInvalid checks the bounds of StreamBricksRequest.keys
// over every protocol: too many keys and a level the volume lacks fail
// with InvalidArgument naming keys, before any brick is sent.
func TestStreamBricks_KeysInvalid(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{})
			c := ts.clients(t, p)
			keysVolume(t, c, "k")
			stream := func(keys []*ldmv1.BrickKey) ([]*ldmv1.StreamBricksResponse, error) {
				s, err := c.volumes.StreamBricks(context.Background(), connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "k", Keys: keys}))
				if err != nil {
					return nil, err
				}
				defer s.Close()
				var got []*ldmv1.StreamBricksResponse
				for s.Receive() {
					got = append(got, s.Msg())
				}
				return got, s.Err()
			}
			many := make([]*ldmv1.BrickKey, 4097)
			for i := range many {
				many[i] = &ldmv1.BrickKey{X: 99} // missing: cheap to send
			}
			got, err := stream(many)
			wantField(t, "4097 keys", err, "keys")
			if len(got) != 0 {
				t.Fatalf("4097 keys: %d bricks sent before the error", len(got))
			}
			got, err = stream([]*ldmv1.BrickKey{{Lod: 0}, {Lod: 2}})
			wantField(t, "lod 2 of 2 levels", err, "keys")
			if len(got) != 0 {
				t.Fatalf("lod 2: %d bricks sent before the error", len(got))
			}
			// The bound itself is allowed.
			if got, err = stream(many[:4096]); err != nil || len(got) != 4096 {
				t.Fatalf("4096 keys: %d responses, %v", len(got), err)
			}
		})
	}
}
