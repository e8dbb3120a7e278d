package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// testClients returns Connect clients of a test server (plain HTTP, no
// client hooks).
func testClients(tb testing.TB, base string) *clients {
	tb.Helper()
	hc := &http.Client{Transport: client.NewTransport(nil)}
	opts := []connect.ClientOption{connect.WithReadMaxBytes(1<<31 - 1), connect.WithSendMaxBytes(1<<31 - 1)}
	c := &clients{
		baseURL: base,
		tiles:   ldmv1connect.NewTileServiceClient(hc, base, opts...),
		volumes: ldmv1connect.NewVolumeServiceClient(hc, base, opts...),
		cluster: ldmv1connect.NewClusterServiceClient(hc, base, opts...),
		http:    hc,
	}
	tb.Cleanup(c.close)
	return c
}

// voxelValue is the test pattern of the import tests at (x, y, z), as a
// float to be converted to each data type.
func voxelValue(x, y, z int) float64 { return float64(x + 10*y + 100*z) }

// encodeVoxels returns the pattern of shape s (plus t extra time points,
// each offset by 1000*t) as dt in byte order bo.
func encodeVoxels(dt storage.DataType, bo binary.ByteOrder, s storage.Shape, times int) []byte {
	var out []byte
	b := make([]byte, dt.Size())
	for t := 0; t < times; t++ {
		for z := 0; z < int(s.Z); z++ {
			for y := 0; y < int(s.Y); y++ {
				for x := 0; x < int(s.X); x++ {
					v := voxelValue(x, y, z) + 1000*float64(t)
					switch dt {
					case storage.Uint8:
						b[0] = byte(int(v) % 256)
					case storage.Uint16:
						bo.PutUint16(b, uint16(v))
					case storage.Int16:
						bo.PutUint16(b, uint16(int16(v-900)))
					case storage.Uint32:
						bo.PutUint32(b, uint32(v*70000))
					case storage.Float32:
						bo.PutUint32(b, math.Float32bits(float32(v)/4-7))
					}
					out = append(out, b...)
				}
			}
		}
	}
	return out
}

// niftiBytes builds a NIfTI-1 header (magic "n+1" with the voxels at 352, or
// "ni1" for a .hdr file) in byte order bo.
func niftiBytes(bo binary.ByteOrder, sizeofHdr int32, code int16, dims []int16, spacing [3]float32, pair bool) []byte {
	h := make([]byte, 348)
	bo.PutUint32(h[0:], uint32(sizeofHdr))
	bo.PutUint16(h[40:], uint16(len(dims)))
	for i, d := range dims {
		bo.PutUint16(h[42+2*i:], uint16(d))
	}
	bo.PutUint16(h[70:], uint16(code))
	bits := map[int16]int16{2: 8, 4: 16, 512: 16, 768: 32, 16: 32, 64: 64}[code]
	bo.PutUint16(h[72:], uint16(bits))
	for i, s := range spacing {
		bo.PutUint32(h[80+4*i:], math.Float32bits(s))
	}
	if pair {
		copy(h[344:], "ni1\x00")
		return h
	}
	bo.PutUint32(h[108:], math.Float32bits(352))
	copy(h[344:], "n+1\x00")
	return append(h, 0, 0, 0, 0)
}

func gz(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func writeTestFile(tb testing.TB, path string, b []byte) string {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// readVolume assembles the LOD 0 voxels of a volume from its bricks.
func readVolume(tb testing.TB, c *clients, name string) (*ldmv1.Volume, []byte) {
	tb.Helper()
	ctx := context.Background()
	res, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name}))
	if err != nil {
		tb.Fatal(err)
	}
	v := res.Msg.GetVolume()
	s, b := v.GetShape(), v.GetBrickShape()
	size := storage.DataType(v.GetDataType()).Size()
	out := make([]byte, int(s.X*s.Y*s.Z)*size)
	for bz := uint32(0); bz*b.Z < s.Z; bz++ {
		for by := uint32(0); by*b.Y < s.Y; by++ {
			for bx := uint32(0); bx*b.X < s.X; bx++ {
				r, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: name, Key: &ldmv1.BrickKey{X: bx, Y: by, Z: bz}}))
				if err != nil {
					tb.Fatalf("brick %d,%d,%d: %v", bx, by, bz, err)
				}
				val, err := client.BrickVoxels(v, r.Msg.GetTile()) // the default codec is zstd
				if err != nil {
					tb.Fatalf("brick %d,%d,%d: %v", bx, by, bz, err)
				}
				if len(val) != int(b.X*b.Y*b.Z)*size {
					tb.Fatalf("brick %d,%d,%d has %d bytes", bx, by, bz, len(val))
				}
				for z := uint32(0); z < b.Z && bz*b.Z+z < s.Z; z++ {
					for y := uint32(0); y < b.Y && by*b.Y+y < s.Y; y++ {
						n := min(b.X, s.X-bx*b.X)
						src := int((z*b.Y+y)*b.X) * size
						dst := int(bx*b.X+s.X*(by*b.Y+y+s.Y*(bz*b.Z+z))) * size
						copy(out[dst:dst+int(n)*size], val[src:src+int(n)*size])
					}
				}
			}
		}
	}
	return v, out
}

func TestImport_formats(t *testing.T) {
	base := startTestServer(t)
	c := testClients(t, base)
	shape := storage.Shape{X: 10, Y: 9, Z: 7}
	dims := []int16{10, 9, 7}
	le, be := binary.LittleEndian, binary.BigEndian

	type file struct {
		name    string
		dt      storage.DataType
		spacing []float64
		format  string
		order   string
		write   func(dir string) string // returns the path to import
		flags   []string
		times   int // the pattern's time point expected in the volume
	}
	nrrd := func(dt, enc, endian, extra string) string {
		return "NRRD0004\n# test\ntype: " + dt + "\ndimension: 3\nsizes: 10 9 7\nendian: " + endian + "\nencoding: " + enc + "\n" + extra
	}
	files := []file{
		{name: "nii-uint16-le", dt: storage.Uint16, spacing: []float64{0.5, 0.5, 2}, format: "nifti-1", write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "a.nii"), append(niftiBytes(le, 348, 512, dims, [3]float32{0.5, 0.5, 2}, false), encodeVoxels(storage.Uint16, le, shape, 1)...))
		}},
		{name: "nii-int16-be-gz", dt: storage.Int16, spacing: []float64{1, 1.5, 3}, format: "nifti-1", order: "big-endian", write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "b.nii.gz"), gz(t, append(niftiBytes(be, 348, 4, dims, [3]float32{1, 1.5, 3}, false), encodeVoxels(storage.Int16, be, shape, 1)...)))
		}},
		{name: "nii-float32-be-pair", dt: storage.Float32, spacing: []float64{2, 2, 2}, format: "nifti-1", order: "big-endian", write: func(dir string) string {
			writeTestFile(t, filepath.Join(dir, "c.img"), encodeVoxels(storage.Float32, be, shape, 1))
			return writeTestFile(t, filepath.Join(dir, "c.hdr"), niftiBytes(be, 348, 16, dims, [3]float32{2, 2, 2}, true))
		}},
		{name: "nii-uint8-4d", dt: storage.Uint8, spacing: []float64{1, 1, 1}, format: "nifti-1", times: 2, flags: []string{"--time", "2"}, write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "d.nii"), append(niftiBytes(le, 348, 2, append(dims, 3), [3]float32{1, 1, 1}, false), encodeVoxels(storage.Uint8, le, shape, 3)...))
		}},
		{name: "nrrd-uint32-be-raw", dt: storage.Uint32, spacing: []float64{0.25, 0.5, 0.75}, format: "nrrd", order: "big-endian", write: func(dir string) string {
			h := nrrd("uint", "raw", "big", "space directions: (0.25,0,0) (0,0.5,0) (0,0,0.75)\n\n")
			return writeTestFile(t, filepath.Join(dir, "e.nrrd"), append([]byte(h), encodeVoxels(storage.Uint32, be, shape, 1)...))
		}},
		{name: "nrrd-uint16-le-gzip-detached", dt: storage.Uint16, spacing: []float64{1, 2, 3}, format: "nrrd", write: func(dir string) string {
			writeTestFile(t, filepath.Join(dir, "f.raw.gz"), gz(t, encodeVoxels(storage.Uint16, le, shape, 1)))
			return writeTestFile(t, filepath.Join(dir, "f.nhdr"), []byte(nrrd("ushort", "gzip", "little", "spacings: 1 2 3\ndata file: f.raw.gz\n")))
		}},
		{name: "nrrd-float32-le-gzip", dt: storage.Float32, spacing: []float64{1, 1, 1}, format: "nrrd", write: func(dir string) string {
			h := nrrd("float", "gzip", "little", "\n")
			return writeTestFile(t, filepath.Join(dir, "g.nrrd"), append([]byte(h), gz(t, encodeVoxels(storage.Float32, le, shape, 1))...))
		}},
	}
	for _, f := range files {
		t.Run(f.name, func(t *testing.T) {
			p := f.write(t.TempDir())
			args := append([]string{"import", p, "--server", base, "--name", f.name, "--brick", "4x4x4", "-q"}, f.flags...)
			if err := run(context.Background(), args); err != nil {
				t.Fatalf("ldm %s: %v", strings.Join(args, " "), err)
			}
			v, got := readVolume(t, c, f.name)
			if s := v.GetShape(); s.X != shape.X || s.Y != shape.Y || s.Z != shape.Z || storage.DataType(v.GetDataType()) != f.dt {
				t.Fatalf("volume %v", v)
			}
			if fmt.Sprint(v.GetSpacing()) != fmt.Sprint(f.spacing) {
				t.Fatalf("spacing %v, want %v", v.GetSpacing(), f.spacing)
			}
			if l := v.GetLabels(); l["source.format"] != f.format || l["source.file"] != filepath.Base(p) || l["source.byte_order"] != map[string]string{"big-endian": "big-endian"}[f.order] {
				t.Fatalf("labels %v", l)
			}
			all := encodeVoxels(f.dt, le, shape, f.times+1)
			want := all[len(all)-len(got):]
			if !bytes.Equal(got, want) {
				t.Fatalf("voxels differ from the file's")
			}
			if v.GetLodCount() < 2 {
				t.Fatalf("lod_count %d: want a pyramid", v.GetLodCount())
			}
		})
	}

	t.Run("name_from_file", func(t *testing.T) {
		p := writeTestFile(t, filepath.Join(t.TempDir(), "Brain T1.nii.gz"), gz(t, append(niftiBytes(le, 348, 2, dims, [3]float32{1, 1, 1}, false), encodeVoxels(storage.Uint8, le, shape, 1)...)))
		if err := run(context.Background(), []string{"import", p, "--server", base, "-q"}); err != nil {
			t.Fatal(err)
		}
		readVolume(t, c, "brain-t1")
	})

	// Failures: each names the problem and leaves no volume behind.
	for _, tc := range []struct {
		name, want string
		sentinel   error
		write      func(dir string) string
		flags      []string
	}{
		{name: "truncated-nifti", want: "voxel bytes", sentinel: volfile.ErrTruncated, write: func(dir string) string {
			b := append(niftiBytes(le, 348, 512, dims, [3]float32{1, 1, 1}, false), encodeVoxels(storage.Uint16, le, shape, 1)...)
			return writeTestFile(t, filepath.Join(dir, "t.nii"), b[:len(b)-100])
		}},
		{name: "truncated-nrrd-gzip", sentinel: volfile.ErrTruncated, write: func(dir string) string {
			z := gz(t, encodeVoxels(storage.Uint16, be, shape, 1))
			return writeTestFile(t, filepath.Join(dir, "t.nrrd"), append([]byte(nrrd("ushort", "gzip", "big", "\n")), z[:len(z)/2]...))
		}},
		{name: "nifti2", want: "sizeof_hdr", sentinel: volfile.ErrUnsupported, write: func(dir string) string {
			b := make([]byte, 600)
			binary.LittleEndian.PutUint32(b, 540)
			return writeTestFile(t, filepath.Join(dir, "n2.nii"), b)
		}},
		{name: "float64", want: "datatype", sentinel: volfile.ErrUnsupported, write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "f64.nii"), append(niftiBytes(le, 348, 64, dims, [3]float32{1, 1, 1}, false), make([]byte, 8*630)...))
		}},
		{name: "4d-without-time", want: "dim[4]", sentinel: volfile.ErrUnsupported, write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "4d.nii"), append(niftiBytes(le, 348, 2, append(dims, 2), [3]float32{1, 1, 1}, false), make([]byte, 1260)...))
		}},
		{name: "nrrd-ascii", want: "encoding", sentinel: volfile.ErrUnsupported, write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "a.nrrd"), []byte(nrrd("uchar", "ascii", "little", "\n1 2 3\n")))
		}},
		{name: "time-wraps", want: "--time", write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "4d.nii"), append(niftiBytes(le, 348, 2, append(dims, 2), [3]float32{1, 1, 1}, false), make([]byte, 1260)...))
		}, flags: []string{"--time", "4294967296"}},
		{name: "time-negative", want: "--time", write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "4d.nii"), append(niftiBytes(le, 348, 2, append(dims, 2), [3]float32{1, 1, 1}, false), make([]byte, 1260)...))
		}, flags: []string{"--time", "-2"}},
		{name: "shape-flag", want: "--shape", write: func(dir string) string {
			return writeTestFile(t, filepath.Join(dir, "s.nii"), append(niftiBytes(le, 348, 2, dims, [3]float32{1, 1, 1}, false), encodeVoxels(storage.Uint8, le, shape, 1)...))
		}, flags: []string{"--shape", "10x9x7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.write(t.TempDir())
			name := "bad-" + tc.name
			err := run(context.Background(), append([]string{"import", p, "--server", base, "--name", name, "-q"}, tc.flags...))
			if err == nil {
				t.Fatal("import succeeded")
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Fatalf("error %v does not wrap %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
			if _, gerr := c.volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name})); connect.CodeOf(gerr) != connect.CodeNotFound {
				t.Fatalf("after a failed import GetVolume(%s) = %v, want NotFound", name, gerr)
			}
		})
	}
}

// TestImport_formats_removesPartialVolume checks that a volume whose bricks
// the server refuses part-way is deleted, not left half written.
func TestImport_formats_removesPartialVolume(t *testing.T) {
	base := startTestServer(t, "--max-tile-bytes", "1000")
	c := testClients(t, base)
	shape := storage.Shape{X: 10, Y: 9, Z: 7}
	// 4x4x4 uint32 bricks are 256 bytes (accepted), 8x8x8 are 2048 (refused).
	p := writeTestFile(t, filepath.Join(t.TempDir(), "big.nii"), append(niftiBytes(binary.LittleEndian, 348, 768, []int16{10, 9, 7}, [3]float32{1, 1, 1}, false), encodeVoxels(storage.Uint32, binary.LittleEndian, shape, 1)...))
	err := run(context.Background(), []string{"import", p, "--server", base, "--name", "partial", "--brick", "8x8x8", "-q"})
	if err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("import: %v, want a failure that says the incomplete volume was removed", err)
	}
	if _, gerr := c.volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "partial"})); connect.CodeOf(gerr) != connect.CodeNotFound {
		t.Fatalf("GetVolume(partial) = %v, want NotFound", gerr)
	}
	if err := run(context.Background(), []string{"import", p, "--server", base, "--name", "small-bricks", "--brick", "4x4x4", "-q"}); err != nil {
		t.Fatalf("import with small bricks: %v", err)
	}
}
