package pyramid

import (
	"bytes"
	"io"
	"math"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

var allTypes = []storage.DataType{storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32}

// voxelAt decodes the voxel at index i of little-endian data of type dt.
func voxelAt(b []byte, i int, dt storage.DataType) float64 {
	return reader(dt)(b[i*dt.Size():])
}

func TestProcedural_Row_matches_Intensity(t *testing.T) {
	t.Parallel()
	for _, s := range []storage.Shape{{X: 1, Y: 1, Z: 1}, {X: 97, Y: 61, Z: 45}, {X: 1, Y: 40, Z: 33}, {X: 130, Y: 1, Z: 7}, {X: 256, Y: 200, Z: 3}} {
		p, err := NewProcedural(s, storage.Uint8)
		if err != nil {
			t.Fatal(err)
		}
		row := make([]uint8, s.X)
		seen := map[uint8]bool{}
		for z := range int(s.Z) {
			for y := range int(s.Y) {
				p.Row(row, y, z)
				for x, v := range row {
					if w := p.Intensity(x, y, z); v != w {
						t.Fatalf("%v: Row(%d,%d)[%d] = %d, Intensity %d", s, y, z, x, v, w)
					}
					seen[v] = true
				}
			}
		}
		if s.X > 64 && s.Y > 64 && len(seen) < 6 {
			t.Fatalf("%v: only %d distinct intensities: not a structured phantom", s, len(seen))
		}
	}
}

func TestProcedural_Reader_gives_Voxel_in_every_type(t *testing.T) {
	t.Parallel()
	s := storage.Shape{X: 37, Y: 23, Z: 19}
	for _, dt := range allTypes {
		p, err := NewProcedural(s, dt)
		if err != nil {
			t.Fatal(err)
		}
		// Odd read sizes exercise the row buffer.
		var buf bytes.Buffer
		if _, err := io.CopyBuffer(&buf, struct{ io.Reader }{p.Reader()}, make([]byte, 1001)); err != nil {
			t.Fatal(err)
		}
		data := buf.Bytes()
		if len(data) != int(s.X*s.Y*s.Z)*dt.Size() {
			t.Fatalf("%v: %d bytes", dt, len(data))
		}
		i := 0
		for z := range int(s.Z) {
			for y := range int(s.Y) {
				for x := range int(s.X) {
					if got, want := voxelAt(data, i, dt), p.Voxel(x, y, z); got != want {
						t.Fatalf("%v: voxel (%d,%d,%d) = %v, want %v", dt, x, y, z, got, want)
					}
					i++
				}
			}
		}
	}
}

func TestProcedural_Value_matches_Cut_at_every_level(t *testing.T) {
	t.Parallel()
	s := storage.Shape{X: 45, Y: 38, Z: 27}
	for _, dt := range allTypes {
		p, err := NewProcedural(s, dt)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(p.Reader())
		if err != nil {
			t.Fatal(err)
		}
		meta := storage.VolumeMeta{Name: "p", Shape: s, DataType: dt, BrickShape: storage.Shape{X: 8, Y: 8, Z: 4}, LODCount: 4}
		bricks := collect(t, data, meta)
		for lod := range uint32(4) {
			ls := meta.LODShape(lod)
			for z := range int(ls.Z) {
				for y := range int(ls.Y) {
					for x := range int(ls.X) {
						b := bricks[storage.BrickKey{LOD: lod, X: uint32(x / 8), Y: uint32(y / 8), Z: uint32(z / 4)}]
						got := voxelAt(b, ((z%4)*8+y%8)*8+x%8, dt)
						want, ok := p.Value(lod, x, y, z)
						if !ok || got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
							t.Fatalf("%v lod %d (%d,%d,%d): brick %v, Value %v", dt, lod, x, y, z, got, want)
						}
					}
				}
			}
		}
	}
}

func TestNewProcedural_rejects_bad_shapes(t *testing.T) {
	t.Parallel()
	for _, s := range []storage.Shape{{X: 0, Y: 1, Z: 1}, {X: 1, Y: 1 << 21, Z: 1}} {
		if _, err := NewProcedural(s, storage.Uint8); err == nil {
			t.Fatalf("NewProcedural(%v) succeeded", s)
		}
	}
	if _, err := NewProcedural(storage.Shape{X: 1, Y: 1, Z: 1}, storage.DataType(99)); err == nil {
		t.Fatal("NewProcedural with an unknown type succeeded")
	}
}

func BenchmarkProcedural_Fill(b *testing.B) {
	for _, dt := range []storage.DataType{storage.Uint8, storage.Uint16} {
		b.Run(dt.String(), func(b *testing.B) {
			s := storage.Shape{X: 2048, Y: 2048, Z: 256}
			p, err := NewProcedural(s, dt)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, int(s.X)*int(s.Y)*dt.Size())
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			z := 0
			for b.Loop() {
				p.Fill(buf, 0, z)
				z = (z + 1) % int(s.Z)
			}
		})
	}
}
