package service_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

func TestVolumeService_ListBricks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := storage.NewMemory(0)
	ts := startServer(t, serverOptions{store: store})
	// 130x70x3 voxels in 1x1x1 bricks, 2 levels: 27300 bricks at level 0
	// (several responses of 4096 keys), 65x35x2 at level 1.
	meta := storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 130, Y: 70, Z: 3}, DataType: storage.Uint8,
		BrickShape: storage.Shape{X: 1, Y: 1, Z: 1}, LODCount: 2}
	if _, err := store.CreateVolume(ctx, meta); err != nil {
		t.Fatal(err)
	}
	// Every level-0 brick but (5, 6, 1), written in reverse order; one
	// level-1 brick, twice.
	var tiles []storage.Tile
	for z := 2; z >= 0; z-- {
		for y := 69; y >= 0; y-- {
			for x := 129; x >= 0; x-- {
				if x == 5 && y == 6 && z == 1 {
					continue
				}
				k := storage.BrickKey{X: uint32(x), Y: uint32(y), Z: uint32(z)}
				tiles = append(tiles, storage.Tile{Value: []byte{1}, HasKey: true, Key: k})
			}
		}
	}
	k1 := storage.BrickKey{LOD: 1, X: 3, Y: 4, Z: 1}
	tiles = append(tiles, storage.Tile{Value: []byte{2}, HasKey: true, Key: k1}, storage.Tile{Value: []byte{3}, HasKey: true, Key: k1})
	if _, err := store.Append(ctx, "v", tiles...); err != nil {
		t.Fatal(err)
	}
	list := func(t *testing.T, c apiClients, req *ldmv1.ListBricksRequest) ([]storage.BrickKey, uint64, int, error) {
		t.Helper()
		s, err := c.volumes.ListBricks(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, 0, 0, err
		}
		defer s.Close()
		var keys []storage.BrickKey
		var expected uint64
		n := 0
		for s.Receive() {
			if n == 0 {
				expected = s.Msg().GetExpected()
			} else if s.Msg().GetExpected() != 0 {
				t.Fatalf("response %d carries expected", n)
			}
			if len(s.Msg().GetKeys()) > 4096 {
				t.Fatalf("response %d has %d keys", n, len(s.Msg().GetKeys()))
			}
			for _, k := range s.Msg().GetKeys() {
				keys = append(keys, apiconv.KeyFromAPI(k))
			}
			n++
		}
		return keys, expected, n, s.Err()
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := ts.clients(t, p)
			keys, expected, n, err := list(t, c, &ldmv1.ListBricksRequest{Volume: "v"})
			if err != nil {
				t.Fatal(err)
			}
			if expected != 130*70*3+65*35*2 || n < 7 {
				t.Fatalf("expected %d in %d responses", expected, n)
			}
			if len(keys) != 130*70*3 {
				t.Fatalf("%d keys, want %d", len(keys), 130*70*3)
			}
			// Level by level, then z, y, x; the missing brick left out.
			i := 0
			for z := range 3 {
				for y := range 70 {
					for x := range 130 {
						if x == 5 && y == 6 && z == 1 {
							continue
						}
						if w := (storage.BrickKey{X: uint32(x), Y: uint32(y), Z: uint32(z)}); keys[i] != w {
							t.Fatalf("key %d = %+v, want %+v", i, keys[i], w)
						}
						i++
					}
				}
			}
			if keys[i] != k1 {
				t.Fatalf("last key %+v, want %+v", keys[i], k1)
			}

			one := uint32(1)
			keys, expected, _, err = list(t, c, &ldmv1.ListBricksRequest{Volume: "v", MinLod: &one, MaxLod: &one,
				Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE})
			if err != nil || len(keys) != 1 || keys[0] != k1 || expected != 65*35*2 {
				t.Fatalf("level 1: %v %d, %v", keys, expected, err)
			}

			if _, _, _, err := list(t, c, &ldmv1.ListBricksRequest{Volume: "nope"}); connect.CodeOf(err) != connect.CodeNotFound {
				t.Fatalf("unknown volume: %v, want NotFound", err)
			}
			two := uint32(2)
			if _, _, _, err := list(t, c, &ldmv1.ListBricksRequest{Volume: "v", MinLod: &two}); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("min_lod 2: %v, want InvalidArgument", err)
			}
			zero := uint32(0)
			if _, _, _, err := list(t, c, &ldmv1.ListBricksRequest{Volume: "v", MinLod: &one, MaxLod: &zero}); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("min_lod above max_lod: %v, want InvalidArgument", err)
			}
		})
	}
}
