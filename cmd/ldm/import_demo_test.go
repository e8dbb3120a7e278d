package main

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// decodeVoxel returns voxel i of little-endian bricks of type dt.
func decodeVoxel(b []byte, i int, dt storage.DataType) float64 {
	switch dt {
	case storage.Uint16:
		return float64(binary.LittleEndian.Uint16(b[2*i:]))
	case storage.Int16:
		return float64(int16(binary.LittleEndian.Uint16(b[2*i:])))
	case storage.Uint32:
		return float64(binary.LittleEndian.Uint32(b[4*i:]))
	case storage.Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return float64(b[i])
}

// TestCLI_import_demo_shape imports procedural volumes with `ldm import
// --demo --shape` and checks every voxel of every level against
// pyramid.Procedural.Value.
func TestCLI_import_demo_shape(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := context.Background()
	for _, tc := range []struct {
		name, shape, dtype string
	}{
		{"proc8", "90x70x50", "uint8"},
		{"proc16", "41x33x29", "int16"},
		{"procf", "33x17x40", "float32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, err := ldmCmd(t, "", "import", "--demo", "--shape", tc.shape, "--dtype", tc.dtype, "--brick", "16x16x16", tc.name, "--server", base)
			if err != nil || !strings.Contains(errOut, "imported "+tc.name+":") {
				t.Fatalf("import: %v\n%s%s", err, out, errOut)
			}
			res, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: tc.name}))
			if err != nil {
				t.Fatal(err)
			}
			meta := apiconv.MetaFromAPI(res.Msg.GetVolume())
			if err := meta.Normalize(); err != nil {
				t.Fatal(err)
			}
			if meta.Labels["source"] != "go-ldm procedural phantom" || meta.LODCount != pyramid.LevelsToFit(meta.Shape, meta.BrickShape) {
				t.Fatalf("volume %+v", meta)
			}
			p, err := pyramid.NewProcedural(meta.Shape, meta.DataType)
			if err != nil {
				t.Fatal(err)
			}
			b := meta.BrickShape
			for lod := range meta.LODCount {
				g, s := meta.BrickGrid(lod), meta.LODShape(lod)
				for bz := range g.Z {
					for by := range g.Y {
						for bx := range g.X {
							r, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: tc.name, Key: &ldmv1.BrickKey{Lod: lod, X: bx, Y: by, Z: bz}}))
							if err != nil {
								t.Fatal(err)
							}
							v, err := client.BrickVoxels(res.Msg.GetVolume(), r.Msg.GetTile()) // zstd:1, the default
							if err != nil {
								t.Fatal(err)
							}
							for k := range b.Z {
								for j := range b.Y {
									for i := range b.X {
										x, y, z := int(bx*b.X+i), int(by*b.Y+j), int(bz*b.Z+k)
										got := decodeVoxel(v, int((k*b.Y+j)*b.X+i), meta.DataType)
										want, ok := p.Value(lod, x, y, z)
										if !ok {
											want = 0 // padding outside the level
										}
										if got != want {
											t.Fatalf("lod %d voxel (%d,%d,%d) of %v: %v, Value %v", lod, x, y, z, s, got, want)
										}
									}
								}
							}
						}
					}
				}
			}
		})
	}
	t.Run("bad_requests", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"import", "--demo", "--shape", "64x64x64"}, "name the procedural volume"},
			{[]string{"import", "--demo", "--shape", "64x64x0", "zero"}, "--shape"},
			{[]string{"import", "--demo", "--shape", "8x8x8", "--name", "a", "b"}, "named twice"},
		} {
			_, _, err := ldmCmd(t, "", append(tc.args, "--server", base)...)
			if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v: %v (exit %d), want a usage error about %q", tc.args, err, exitCode(err), tc.want)
			}
		}
	})
}

// TestCLI_import_resume completes, with --resume, an import of a raw file
// that was interrupted, and checks the result against an uninterrupted
// import of the same file.
func TestCLI_import_resume(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := context.Background()
	shape := storage.Shape{X: 100, Y: 60, Z: 70}
	p, err := pyramid.NewProcedural(shape, storage.Uint16)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "vol.raw")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrom(p.Reader()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	args := func(name string, more ...string) []string {
		return append([]string{"import", file, "--name", name, "--shape", "100x60x70", "--dtype", "uint16", "--brick", "32x32x16", "-q", "--server", base}, more...)
	}
	if _, errOut, err := ldmCmd(t, "", args("whole", "--codec", "raw")...); err != nil {
		t.Fatalf("import: %v\n%s", err, errOut)
	}
	// An interrupted import of the first half of the file: its context
	// ends once it has stored bricks and the source runs dry.
	src, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	acked := make(chan struct{})
	half := &cancelAtEnd{f: src, left: int64(shape.X * shape.Y * shape.Z) /* half of the uint16 bytes */, acked: acked, cancel: cancel, ctx: ictx}
	im := client.Importer{Tiles: c.tiles, Volumes: c.volumes}
	vol := &ldmv1.Volume{Name: "part", Shape: apiconv.ShapeToAPI(shape), DataType: ldmv1.DataType(storage.Uint16), BrickShape: &ldmv1.Shape{X: 32, Y: 32, Z: 16},
		LodCount: pyramid.LevelsToFit(shape, storage.Shape{X: 32, Y: 32, Z: 16})}
	_, err = im.ImportReader(ictx, half, vol, client.ImportOptions{Progress: func(pr client.Progress) {
		if pr.BricksDone == 8 {
			close(acked)
		}
	}})
	var ie *client.ImportError
	if !errors.As(err, &ie) || !ie.Kept {
		t.Fatalf("interrupted import: %v, want the volume kept", err)
	}
	// Without --resume the command says how to go on.
	if _, _, err := ldmCmd(t, "", args("part")...); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("import into the incomplete volume without --resume: %v, want a hint at --resume", err)
	}
	_, errOut, err := ldmCmd(t, "", args("part", "--resume")...)
	if err != nil || !strings.Contains(errOut, "resumed:") {
		t.Fatalf("import --resume: %v\n%s", err, errOut)
	}
	_, errOut, err = ldmCmd(t, "", args("part", "--resume")...)
	if err != nil || !strings.Contains(errOut, "complete already") {
		t.Fatalf("import --resume of a complete volume: %v\n%s", err, errOut)
	}
	// The volume is raw: --resume with another --codec is a usage error
	// that names both; with its own codec it resumes.
	_, _, err = ldmCmd(t, "", args("part", "--resume", "--codec", "zstd")...)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "zstd:3") || !strings.Contains(err.Error(), "stored in raw") {
		t.Fatalf("import --resume --codec zstd of a raw volume: %v (exit %d), want a usage error naming zstd:3 and raw", err, exitCode(err))
	}
	_, errOut, err = ldmCmd(t, "", args("part", "--resume", "--codec", "raw")...)
	if err != nil || !strings.Contains(errOut, "complete already") {
		t.Fatalf("import --resume --codec raw of a raw volume: %v\n%s", err, errOut)
	}
	meta := apiconv.MetaFromAPI(vol)
	if err := meta.Normalize(); err != nil {
		t.Fatal(err)
	}
	for lod := range meta.LODCount {
		g := meta.BrickGrid(lod)
		for z := range g.Z {
			for y := range g.Y {
				for x := range g.X {
					k := &ldmv1.BrickKey{Lod: lod, X: x, Y: y, Z: z}
					a, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "whole", Key: k}))
					if err != nil {
						t.Fatal(err)
					}
					b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "part", Key: k}))
					if err != nil {
						t.Fatalf("brick %v of the resumed volume: %v", k, err)
					}
					if string(a.Msg.GetTile().GetValue()) != string(b.Msg.GetTile().GetValue()) {
						t.Fatalf("brick %v differs", k)
					}
				}
			}
		}
	}
}

// cancelAtEnd reads left bytes of f, then waits for acked and cancels the
// import's context (an interrupt while the source stalls).
type cancelAtEnd struct {
	f      *os.File
	left   int64
	acked  chan struct{}
	cancel context.CancelFunc
	ctx    context.Context
}

func (r *cancelAtEnd) Read(b []byte) (int, error) {
	if r.left <= 0 {
		select { // bounded: the test fails below if nothing was acknowledged
		case <-r.acked:
		case <-time.After(30 * time.Second):
		}
		r.cancel()
		return 0, r.ctx.Err()
	}
	if int64(len(b)) > r.left {
		b = b[:r.left]
	}
	n, err := r.f.Read(b)
	r.left -= int64(n)
	return n, err
}
