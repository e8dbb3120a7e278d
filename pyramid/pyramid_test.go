package pyramid

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// collect cuts src and returns the bricks by key.
func collect(t *testing.T, src []byte, meta storage.VolumeMeta) map[storage.BrickKey][]byte {
	t.Helper()
	out := map[storage.BrickKey][]byte{}
	if err := Cut(bytes.NewReader(src), meta, func(b Brick) error {
		if _, dup := out[b.Key]; dup {
			t.Fatalf("brick %+v emitted twice", b.Key)
		}
		out[b.Key] = b.Value
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := meta.Normalize(); err != nil {
		t.Fatal(err)
	}
	if len(out) != BrickCount(meta) {
		t.Fatalf("got %d bricks, want %d", len(out), BrickCount(meta))
	}
	return out
}

func TestCut_uint8_pyramid_matches_mean_of_2x2x2(t *testing.T) {
	t.Parallel()
	// 10x6x9: odd sizes exercise edge padding and partial means.
	shape := storage.Shape{X: 10, Y: 6, Z: 9}
	src := make([]byte, 10*6*9)
	for i := range src {
		src[i] = byte(i * 7)
	}
	meta := storage.VolumeMeta{Name: "v", Shape: shape, DataType: storage.Uint8, BrickShape: storage.Shape{X: 4, Y: 4, Z: 2}, LODCount: 3}
	bricks := collect(t, src, meta)

	voxel := func(lod uint32, x, y, z int) float64 {
		// The reference mean, computed independently by averaging over the
		// LOD-0 voxels a level-lod voxel covers, level by level.
		var rec func(l uint32, x, y, z int) (float64, bool)
		rec = func(l uint32, x, y, z int) (float64, bool) {
			if l == 0 {
				if x >= 10 || y >= 6 || z >= 9 {
					return 0, false
				}
				return float64(src[(z*6+y)*10+x]), true
			}
			var sum float64
			n := 0
			for dz := range 2 {
				for dy := range 2 {
					for dx := range 2 {
						if v, ok := rec(l-1, 2*x+dx, 2*y+dy, 2*z+dz); ok {
							sum += math.Round(v)
							n++
						}
					}
				}
			}
			if n == 0 {
				return 0, false
			}
			return sum / float64(n), true
		}
		v, _ := rec(lod, x, y, z)
		return math.Round(v)
	}
	for lod := uint32(0); lod < 3; lod++ {
		s := meta.LODShape(lod)
		for z := 0; z < int(s.Z); z++ {
			for y := 0; y < int(s.Y); y++ {
				for x := 0; x < int(s.X); x++ {
					key := storage.BrickKey{LOD: lod, X: uint32(x / 4), Y: uint32(y / 4), Z: uint32(z / 2)}
					b := bricks[key]
					got := b[((z%2)*4+(y%4))*4+(x%4)]
					if want := voxel(lod, x, y, z); float64(got) != want {
						t.Fatalf("lod %d voxel (%d,%d,%d) = %d, want %v", lod, x, y, z, got, want)
					}
				}
			}
		}
	}
	// Voxels outside the volume are zero: brick (0,2,1,4) covers x 8..11.
	b := bricks[storage.BrickKey{LOD: 0, X: 2, Y: 1, Z: 4}]
	for z := range 2 {
		for y := range 4 {
			for x := range 4 {
				outside := 8+x >= 10 || 4+y >= 6 || 8+z >= 9
				if v := b[(z*4+y)*4+x]; outside && v != 0 {
					t.Fatalf("padding voxel (%d,%d,%d) = %d, want 0", x, y, z, v)
				}
			}
		}
	}
}

func TestDownsample_float32_and_int16(t *testing.T) {
	t.Parallel()
	f := Raw{Shape: storage.Shape{X: 2, Y: 2, Z: 2}, DataType: storage.Float32, Data: make([]byte, 32)}
	for i := range 8 {
		binary.LittleEndian.PutUint32(f.Data[i*4:], math.Float32bits(float32(i)+0.25))
	}
	got := math.Float32frombits(binary.LittleEndian.Uint32(Downsample(f).Data))
	if got != 3.75 {
		t.Fatalf("float32 mean = %v, want 3.75", got)
	}
	s := Raw{Shape: storage.Shape{X: 2, Y: 1, Z: 1}, DataType: storage.Int16, Data: make([]byte, 4)}
	binary.LittleEndian.PutUint16(s.Data[0:], uint16(0xFFFF&-1000))
	binary.LittleEndian.PutUint16(s.Data[2:], uint16(0xFFFF&-3001))
	if got := int16(binary.LittleEndian.Uint16(Downsample(s).Data)); got != -2001 {
		t.Fatalf("int16 mean = %d, want -2001 (rounded)", got)
	}
}

func TestPhantom_structures_at_documented_coordinates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		x, y, z int
		want    uint8
	}{
		{0, 0, 0, PhantomBackground},
		{128, 128, 128, PhantomCore},
		{128, 128, 200, PhantomBody},
		{176, 128, 100, PhantomRod},
		{128, 128, 220, PhantomBody},
		{80, 80, 80, PhantomCube},
		{160, 88, 176, PhantomBead},
		{255, 255, 255, PhantomBackground},
		{-1, 0, 0, PhantomBackground},
	}
	for _, c := range cases {
		if got := PhantomValue(c.x, c.y, c.z); got != c.want {
			t.Errorf("PhantomValue(%d,%d,%d) = %d, want %d", c.x, c.y, c.z, got, c.want)
		}
	}
	meta := PhantomMeta("demo")
	var lod2 []byte
	err := Cut(Phantom(), meta, func(b Brick) error {
		if b.Key == (storage.BrickKey{LOD: 2}) {
			lod2 = b.Value
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// LOD 2 voxel (32,32,32) covers LOD-0 voxels 128..131: the core.
	if v := lod2[(32*64+32)*64+32]; v != PhantomCore {
		t.Fatalf("LOD 2 centre = %d, want %d", v, PhantomCore)
	}
}

func TestLevelsToFit_Shapes(t *testing.T) {
	t.Parallel()
	b := storage.Shape{X: 32, Y: 32, Z: 16}
	for _, tc := range []struct {
		shape storage.Shape
		want  uint32
	}{
		{storage.Shape{X: 32, Y: 32, Z: 16}, 1},
		{storage.Shape{X: 70, Y: 40, Z: 33}, 3}, // 70 -> 35 -> 18
		{storage.Shape{X: 1, Y: 1, Z: 17}, 2},
		{storage.Shape{X: 1 << 31, Y: 1, Z: 1}, 27},
		{storage.Shape{X: math.MaxUint32, Y: 1, Z: 1}, 28},
	} {
		if got := LevelsToFit(tc.shape, b); got != tc.want {
			t.Errorf("LevelsToFit(%v, %v) = %d, want %d", tc.shape, b, got, tc.want)
		}
	}
	if got := LevelsToFit(storage.Shape{X: 4, Y: 4, Z: 4}, storage.Shape{}); got != 3 {
		t.Errorf("LevelsToFit with a zero brick = %d, want 3 (brick axes of 1)", got)
	}
}
