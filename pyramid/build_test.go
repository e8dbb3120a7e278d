package pyramid

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// randomVolume returns deterministic voxels of every value of dt,
// finite floats of mixed magnitude included.
func randomVolume(s storage.Shape, dt storage.DataType, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, int(s.X*s.Y*s.Z)*dt.Size())
	if dt == storage.Float32 {
		put := writer(dt)
		for i := 0; i < len(b); i += 4 {
			put(b[i:], (r.Float64()-0.5)*math.Pow(10, float64(r.IntN(12)-6)))
		}
		return b
	}
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func buildAll(t *testing.T, src io.Reader, meta storage.VolumeMeta, opts BuildOptions) map[storage.BrickKey][]byte {
	t.Helper()
	b, err := NewBuilder(meta, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := map[storage.BrickKey][]byte{}
	err = b.Build(src, func(br Brick) error {
		if _, dup := out[br.Key]; dup {
			return fmt.Errorf("brick %+v emitted twice", br.Key)
		}
		out[br.Key] = bytes.Clone(br.Value)
		b.Recycle(br.Value) // reused buffers must not leak old voxels
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBuilder_Build_matches_whole_volume_cut(t *testing.T) {
	t.Parallel()
	cases := []struct {
		shape, brick storage.Shape
		lods         uint32
	}{
		{storage.Shape{X: 10, Y: 6, Z: 9}, storage.Shape{X: 4, Y: 4, Z: 2}, 3},
		{storage.Shape{X: 37, Y: 29, Z: 41}, storage.Shape{X: 8, Y: 8, Z: 8}, 0},
		{storage.Shape{X: 37, Y: 29, Z: 41}, storage.Shape{X: 5, Y: 3, Z: 7}, 0}, // odd brick sides
		{storage.Shape{X: 1, Y: 1, Z: 50}, storage.Shape{X: 4, Y: 4, Z: 4}, 0},   // 1-voxel-thin
		{storage.Shape{X: 33, Y: 1, Z: 17}, storage.Shape{X: 8, Y: 8, Z: 8}, 0},
		{storage.Shape{X: 70, Y: 65, Z: 1}, storage.Shape{X: 16, Y: 16, Z: 16}, 0},
		{storage.Shape{X: 1, Y: 1, Z: 1}, storage.Shape{X: 2, Y: 2, Z: 2}, 1},
		{storage.Shape{X: 64, Y: 64, Z: 64}, storage.Shape{X: 16, Y: 16, Z: 16}, 2},  // fewer levels than fit
		{storage.Shape{X: 150, Y: 70, Z: 40}, storage.Shape{X: 64, Y: 64, Z: 16}, 0}, // 64-byte rows (uint8)
		{storage.Shape{X: 100, Y: 40, Z: 20}, storage.Shape{X: 32, Y: 16, Z: 8}, 0},  // 64-byte rows (uint16)
	}
	for _, c := range cases {
		for _, dt := range allTypes {
			t.Run(fmt.Sprintf("%dx%dx%d_brick%dx%dx%d_%v", c.shape.X, c.shape.Y, c.shape.Z, c.brick.X, c.brick.Y, c.brick.Z, dt), func(t *testing.T) {
				t.Parallel()
				lods := c.lods
				if lods == 0 {
					lods = LevelsToFit(c.shape, c.brick)
				}
				meta := storage.VolumeMeta{Name: "v", Shape: c.shape, DataType: dt, BrickShape: c.brick, LODCount: lods}
				src := randomVolume(c.shape, dt, uint64(c.shape.X*31+c.shape.Z))
				want := map[storage.BrickKey][]byte{}
				if err := wholeCut(bytes.NewReader(src), meta, func(b Brick) error { want[b.Key] = b.Value; return nil }); err != nil {
					t.Fatal(err)
				}
				// A tiny read-ahead makes the reader wait for the cutter.
				got := buildAll(t, bytes.NewReader(src), meta, BuildOptions{ReadAhead: 1, RecycledBricks: 3})
				if len(got) != len(want) {
					t.Fatalf("%d bricks, the whole-volume cut has %d", len(got), len(want))
				}
				for k, v := range want {
					if !bytes.Equal(got[k], v) {
						t.Fatalf("brick %+v differs from the whole-volume cut", k)
					}
				}
			})
		}
	}
}

func TestBuilder_Build_skips_bricks(t *testing.T) {
	t.Parallel()
	s := storage.Shape{X: 40, Y: 30, Z: 50}
	meta := storage.VolumeMeta{Name: "v", Shape: s, DataType: storage.Uint16, BrickShape: storage.Shape{X: 8, Y: 8, Z: 8}}
	meta.LODCount = 4
	src := randomVolume(s, storage.Uint16, 1)
	all := buildAll(t, bytes.NewReader(src), meta, BuildOptions{})
	skip := func(k storage.BrickKey) bool { return (k.X+k.Y+k.Z+k.LOD)%2 == 0 }
	some := buildAll(t, bytes.NewReader(src), meta, BuildOptions{Skip: skip})
	n := 0
	for k, v := range all {
		if skip(k) {
			if _, ok := some[k]; ok {
				t.Fatalf("brick %+v emitted though skipped", k)
			}
			continue
		}
		n++
		if !bytes.Equal(some[k], v) {
			t.Fatalf("brick %+v differs when others are skipped", k)
		}
	}
	if len(some) != n {
		t.Fatalf("%d bricks, want %d", len(some), n)
	}
}

func TestBuilder_Build_short_source(t *testing.T) {
	t.Parallel()
	s := storage.Shape{X: 16, Y: 16, Z: 32}
	meta := storage.VolumeMeta{Name: "v", Shape: s, DataType: storage.Uint8, BrickShape: storage.Shape{X: 8, Y: 8, Z: 8}, LODCount: 2}
	for _, n := range []int{0, 16 * 16 * 17, 16*16*20 + 5, 16*16*32 - 1} {
		b, err := NewBuilder(meta, BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		err = b.Build(bytes.NewReader(make([]byte, n)), func(Brick) error { got++; return nil })
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%d bytes: Build = %v, want io.ErrUnexpectedEOF", n, err)
		}
		// Only whole brick rows are cut: at level 0, 8 planes of 4 bricks;
		// at level 1, 16 level-0 planes make one brick.
		planes := n / (16 * 16)
		if want := planes/8*4 + planes/16; got != want {
			t.Fatalf("%d bytes: %d bricks emitted, want %d", n, got, want)
		}
	}
}

func TestBuilder_Build_emit_error_stops(t *testing.T) {
	t.Parallel()
	s := storage.Shape{X: 64, Y: 64, Z: 256}
	meta := storage.VolumeMeta{Name: "v", Shape: s, DataType: storage.Uint8, BrickShape: storage.Shape{X: 16, Y: 16, Z: 16}, LODCount: 3}
	p, err := NewProcedural(s, storage.Uint8)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBuilder(meta, BuildOptions{ReadAhead: 1})
	if err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	src := &countingReader{r: p.Reader()}
	n := 0
	err = b.Build(src, func(Brick) error {
		if n++; n == 5 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 5 {
		t.Fatalf("Build = %v after %d bricks, want the emit error after 5", err, n)
	}
	// The reader stopped within the budget, far from the end.
	if src.n >= int64(s.X*s.Y*s.Z)/2 {
		t.Fatalf("read %d bytes after emit failed, want the reader stopped early", src.n)
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// BenchmarkBuilder_Build builds the pyramid of a procedural 2048x2048 uint8
// volume (64^3 bricks, every level) and reports MB/s of level-0 voxels and
// the builder's memory bound.
func BenchmarkBuilder_Build(b *testing.B) {
	for _, z := range []uint32{128, 512} {
		b.Run(fmt.Sprintf("2048x2048x%d", z), func(b *testing.B) {
			s := storage.Shape{X: 2048, Y: 2048, Z: z}
			p, err := NewProcedural(s, storage.Uint8)
			if err != nil {
				b.Fatal(err)
			}
			meta := ProceduralMeta("bench", s, storage.Uint8)
			bd, err := NewBuilder(meta, BuildOptions{})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(s.X) * int64(s.Y) * int64(s.Z))
			for b.Loop() {
				if err := bd.Build(p.Reader(), func(br Brick) error { bd.Recycle(br.Value); return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(bd.MemoryBound())/(1<<20), "bound-MiB")
		})
	}
}
