package service_test

import (
	"context"
	"encoding/binary"
	"strings"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// regionVoxel is the uint16 value the region tests store at LOD lod,
// voxel (x, y, z).
func regionVoxel(lod, x, y, z uint32) uint16 {
	return uint16(x*7+y*131+z*1009+lod*5) | 1
}

// regionVolume stores a uint16 volume of the given shape and brick shape
// with two levels whose voxels are regionVoxel (zero in the padding past
// the edge), leaving out the LOD 0 bricks for which skip is true.
func regionVolume(tb testing.TB, store service.Tiles, name string, shape, brick storage.Shape, skip func(storage.BrickKey) bool) storage.VolumeInfo {
	tb.Helper()
	ctx := context.Background()
	info, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: name, Shape: shape, DataType: storage.Uint16, BrickShape: brick, LODCount: 2, Spacing: []float64{0.5, 0.5, 2}})
	if err != nil {
		tb.Fatal(err)
	}
	for lod := range uint32(2) {
		ls, grid := info.LODShape(lod), info.BrickGrid(lod)
		for bz := range grid.Z {
			for by := range grid.Y {
				for bx := range grid.X {
					key := storage.BrickKey{LOD: lod, X: bx, Y: by, Z: bz}
					if lod == 0 && skip != nil && skip(key) {
						continue
					}
					v := make([]byte, int(brick.X*brick.Y*brick.Z)*2)
					for k := range brick.Z {
						for j := range brick.Y {
							for i := range brick.X {
								x, y, z := bx*brick.X+i, by*brick.Y+j, bz*brick.Z+k
								if x < ls.X && y < ls.Y && z < ls.Z {
									binary.LittleEndian.PutUint16(v[((k*brick.Y+j)*brick.X+i)*2:], regionVoxel(lod, x, y, z))
								}
							}
						}
					}
					if _, err := store.Append(ctx, name, storage.Tile{Value: v, HasKey: true, Key: key}); err != nil {
						tb.Fatal(err)
					}
				}
			}
		}
	}
	return info
}

// readRegion calls ReadRegion and assembles the box, failing the test if a
// piece is larger than 4 MiB, lies outside the box or overlaps another.
func readRegion(tb testing.TB, c regionReader, req *ldmv1.ReadRegionRequest) (*ldmv1.ReadRegionResponse, []byte, error) {
	tb.Helper()
	stream, err := c.ReadRegion(context.Background(), connect.NewRequest(req))
	if err != nil {
		return nil, nil, err
	}
	defer stream.Close()
	var first *ldmv1.ReadRegionResponse
	var out []byte
	var covered []bool
	for stream.Receive() {
		m := stream.Msg()
		if first == nil {
			if m.GetVolume() == nil || m.GetBox() == nil || m.GetTotalBytes() == 0 {
				tb.Fatalf("first message lacks the volume, box or size: %v", m)
			}
			first = &ldmv1.ReadRegionResponse{Volume: m.GetVolume(), Box: m.GetBox(), TotalBytes: m.GetTotalBytes()}
			out = make([]byte, m.GetTotalBytes())
			covered = make([]bool, m.GetTotalBytes()/2)
		} else if m.GetVolume() != nil || m.GetBox() != nil {
			tb.Fatalf("a later message repeats the metadata")
		}
		if len(m.GetData()) > 4<<20 || len(m.GetData()) == 0 {
			tb.Fatalf("piece of %d bytes", len(m.GetData()))
		}
		b, p := first.GetBox(), m.GetPiece()
		w, h := uint64(b.GetMax().GetX()-b.GetMin().GetX()), uint64(b.GetMax().GetY()-b.GetMin().GetY())
		lo := [3]uint32{p.GetMin().GetX(), p.GetMin().GetY(), p.GetMin().GetZ()}
		hi := [3]uint32{p.GetMax().GetX(), p.GetMax().GetY(), p.GetMax().GetZ()}
		bl := [3]uint32{b.GetMin().GetX(), b.GetMin().GetY(), b.GetMin().GetZ()}
		bh := [3]uint32{b.GetMax().GetX(), b.GetMax().GetY(), b.GetMax().GetZ()}
		for i := range 3 {
			if lo[i] < bl[i] || hi[i] > bh[i] || lo[i] >= hi[i] {
				tb.Fatalf("piece %v..%v outside the box %v..%v", lo, hi, bl, bh)
			}
		}
		if uint64(len(m.GetData())) != uint64(hi[0]-lo[0])*uint64(hi[1]-lo[1])*uint64(hi[2]-lo[2])*2 {
			tb.Fatalf("piece %v..%v with %d bytes", lo, hi, len(m.GetData()))
		}
		idx := func(x, y, z uint32) uint64 {
			return (uint64(z-bl[2])*h+uint64(y-bl[1]))*w + uint64(x-bl[0])
		}
		if m.GetOffset() != idx(lo[0], lo[1], lo[2]) {
			tb.Fatalf("piece offset %d, its first voxel is %d", m.GetOffset(), idx(lo[0], lo[1], lo[2]))
		}
		d := m.GetData()
		for z := lo[2]; z < hi[2]; z++ {
			for y := lo[1]; y < hi[1]; y++ {
				for x := lo[0]; x < hi[0]; x++ {
					v := idx(x, y, z)
					if covered[v] {
						tb.Fatalf("voxel %d sent twice", v)
					}
					covered[v] = true
					copy(out[v*2:v*2+2], d[:2])
					d = d[2:]
				}
			}
		}
	}
	if err := stream.Err(); err != nil {
		return nil, nil, err
	}
	for i, c := range covered {
		if !c {
			tb.Fatalf("voxel %d never sent", i)
		}
	}
	return first, out, nil
}

// regionReader is the part of the volume client readRegion uses.
type regionReader interface {
	ReadRegion(context.Context, *connect.Request[ldmv1.ReadRegionRequest]) (*connect.ServerStreamForClient[ldmv1.ReadRegionResponse], error)
}

func box(x0, y0, z0, x1, y1, z1 uint32) *ldmv1.Region {
	return &ldmv1.Region{Min: &ldmv1.Shape{X: x0, Y: y0, Z: z0}, Max: &ldmv1.Shape{X: x1, Y: y1, Z: z1}}
}

func TestVolumeHandler_ReadRegion(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{config: func(c *service.Config) { c.MaxRegionBytes = 8 << 20 }})
	shape, brick := storage.Shape{X: 150, Y: 130, Z: 70}, storage.Shape{X: 64, Y: 64, Z: 32}
	missing := storage.BrickKey{X: 1, Y: 1, Z: 1}
	regionVolume(t, ts.Store, "r", shape, brick, func(k storage.BrickKey) bool { return k == missing })

	// want is the voxel the box should hold at level lod, voxel (x, y, z).
	want := func(lod, x, y, z uint32) uint16 {
		if lod == 0 && x/brick.X == missing.X && y/brick.Y == missing.Y && z/brick.Z == missing.Z {
			return 0
		}
		return regionVoxel(lod, x, y, z)
	}
	cases := []struct {
		name    string
		lod     uint32
		box     *ldmv1.Region
		wantBox [6]uint32
	}{
		{"whole_level", 0, nil, [6]uint32{0, 0, 0, 150, 130, 70}},
		{"unaligned_inner_box_across_bricks", 0, box(3, 60, 30, 140, 129, 67), [6]uint32{3, 60, 30, 140, 129, 67}},
		{"one_voxel", 0, box(149, 129, 69, 150, 130, 70), [6]uint32{149, 129, 69, 150, 130, 70}},
		{"clipped_to_the_level", 0, box(100, 0, 60, 1000, 9, 1000), [6]uint32{100, 0, 60, 150, 9, 70}},
		{"inside_the_missing_brick", 0, box(70, 70, 40, 80, 75, 45), [6]uint32{70, 70, 40, 80, 75, 45}},
		{"coarser_level", 1, box(10, 0, 5, 75, 65, 35), [6]uint32{10, 0, 5, 75, 65, 35}},
	}
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			c := ts.clients(t, p).volumes
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					first, data, err := readRegion(t, c, &ldmv1.ReadRegionRequest{Volume: "r", Lod: tc.lod, Box: tc.box})
					if err != nil {
						t.Fatal(err)
					}
					b := first.GetBox()
					got := [6]uint32{b.GetMin().GetX(), b.GetMin().GetY(), b.GetMin().GetZ(), b.GetMax().GetX(), b.GetMax().GetY(), b.GetMax().GetZ()}
					if got != tc.wantBox {
						t.Fatalf("box %v, want %v", got, tc.wantBox)
					}
					if first.GetVolume().GetDataType() != ldmv1.DataType_DATA_TYPE_UINT16 || len(first.GetVolume().GetTransform()) != 16 {
						t.Fatalf("volume %v", first.GetVolume())
					}
					w, h := got[3]-got[0], got[4]-got[1]
					i := 0
					for z := got[2]; z < got[5]; z++ {
						for y := got[1]; y < got[4]; y++ {
							for x := got[0]; x < got[3]; x++ {
								if v := binary.LittleEndian.Uint16(data[i*2:]); v != want(tc.lod, x, y, z) {
									t.Fatalf("voxel (%d,%d,%d) = %d, want %d (box %dx%d)", x, y, z, v, want(tc.lod, x, y, z), w, h)
								}
								i++
							}
						}
					}
				})
			}
		})
	}

	c := ts.clients(t, protocols[0]).volumes
	for _, tc := range []struct {
		name string
		req  *ldmv1.ReadRegionRequest
		code connect.Code
		msg  string
	}{
		{"unknown_volume", &ldmv1.ReadRegionRequest{Volume: "nope"}, connect.CodeNotFound, "nope"},
		{"level_past_the_pyramid", &ldmv1.ReadRegionRequest{Volume: "r", Lod: 2}, connect.CodeInvalidArgument, "2 levels"},
		{"empty_box", &ldmv1.ReadRegionRequest{Volume: "r", Box: box(5, 0, 0, 5, 10, 10)}, connect.CodeInvalidArgument, "empty in x"},
		{"box_past_the_level", &ldmv1.ReadRegionRequest{Volume: "r", Box: box(150, 0, 0, 200, 10, 10)}, connect.CodeInvalidArgument, "empty in x"},
		{"above_the_cap", &ldmv1.ReadRegionRequest{Volume: "r", Box: box(0, 0, 0, 150, 130, 70)}, connect.CodeResourceExhausted, "cap of 8388608 bytes"},
		{"other_generation", &ldmv1.ReadRegionRequest{Volume: "r", Generation: 1}, connect.CodeFailedPrecondition, "generation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "above_the_cap" {
				// 150*130*70*2 bytes is 2.7 MB: under the cap. Ask the server
				// with the smaller cap below instead.
				small := startServer(t, serverOptions{store: ts.Store, config: func(c *service.Config) { c.MaxRegionBytes = 1 << 20 }})
				c := small.clients(t, protocols[0]).volumes
				_, _, err := readRegion(t, c, tc.req)
				if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), "cap of 1048576 bytes") {
					t.Fatalf("err %v, want %v with the cap", err, tc.code)
				}
				return
			}
			_, _, err := readRegion(t, c, tc.req)
			if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want %v mentioning %q", err, tc.code, tc.msg)
			}
		})
	}
	if n := service.ReadBytesHeld(ts.Server); n != 0 {
		t.Fatalf("%d bytes of the read budget still held after the streams", n)
	}
}

// TestVolumeHandler_ReadRegion_pieces reads boxes whose brick rows, and
// whose lines, are larger than a message: they are split into pieces of
// rows and of parts of lines.
func TestVolumeHandler_ReadRegion_pieces(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	brick := storage.Shape{X: 1024, Y: 64, Z: 1}
	regionVolume(t, ts.Store, "wide", storage.Shape{X: 33792, Y: 64, Z: 2}, brick, nil)
	first, data, err := readRegion(t, ts.clients(t, protocols[0]).volumes, &ldmv1.ReadRegionRequest{Volume: "wide"})
	if err != nil {
		t.Fatal(err)
	}
	if first.GetTotalBytes() != 33792*64*2*2 {
		t.Fatalf("total %d", first.GetTotalBytes())
	}
	for _, p := range [][3]uint32{{0, 0, 0}, {33791, 63, 1}, {4096, 17, 1}} {
		i := (p[2]*64+p[1])*33792 + p[0]
		if v := binary.LittleEndian.Uint16(data[i*2:]); v != regionVoxel(0, p[0], p[1], p[2]) {
			t.Fatalf("voxel %v = %d", p, v)
		}
	}
	// Lines longer than a piece are split along x.
	regionVolume(t, ts.Store, "long", storage.Shape{X: 300000, Y: 2, Z: 1}, storage.Shape{X: 1024, Y: 1, Z: 1}, nil)
	_, data, err = readRegion(t, ts.clients(t, protocols[0]).volumes, &ldmv1.ReadRegionRequest{Volume: "long", Box: box(5, 0, 0, 299999, 2, 1)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]uint32{{5, 0}, {262150, 0}, {299998, 1}} {
		i := p[1]*(299999-5) + p[0] - 5
		if v := binary.LittleEndian.Uint16(data[i*2:]); v != regionVoxel(0, p[0], p[1], 0) {
			t.Fatalf("voxel %v = %d", p, v)
		}
	}
}
