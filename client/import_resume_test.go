package client_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

// wholePyramid is the reference an import must match: every level made
// from the whole volume with pyramid.Downsample, cut into zero-padded
// bricks.
func wholePyramid(raw []byte, meta storage.VolumeMeta) map[storage.BrickKey][]byte {
	if err := meta.Normalize(); err != nil {
		panic(err)
	}
	vs := meta.DataType.Size()
	b := meta.BrickShape
	out := map[storage.BrickKey][]byte{}
	lvl := pyramid.Raw{Shape: meta.Shape, DataType: meta.DataType, Data: raw}
	for lod := range meta.LODCount {
		if lod > 0 {
			lvl = pyramid.Downsample(lvl)
		}
		s := lvl.Shape
		g := meta.BrickGrid(lod)
		for bz := range g.Z {
			for by := range g.Y {
				for bx := range g.X {
					v := make([]byte, int(b.X*b.Y*b.Z)*vs)
					for k := range b.Z {
						for j := range b.Y {
							for i := range b.X {
								x, y, z := bx*b.X+i, by*b.Y+j, bz*b.Z+k
								if x >= s.X || y >= s.Y || z >= s.Z {
									continue
								}
								src := ((int(z)*int(s.Y)+int(y))*int(s.X) + int(x)) * vs
								dst := ((int(k)*int(b.Y)+int(j))*int(b.X) + int(i)) * vs
								copy(v[dst:dst+vs], lvl.Data[src:src+vs])
							}
						}
					}
					out[storage.BrickKey{LOD: lod, X: bx, Y: by, Z: bz}] = v
				}
			}
		}
	}
	return out
}

// serverBricks reads every brick ListBricks lists for volume with GetBrick,
// decoded to voxels (client.BrickVoxels).
func serverBricks(tb testing.TB, volumes ldmv1connect.VolumeServiceClient, volume string) (map[storage.BrickKey][]byte, uint64) {
	tb.Helper()
	ctx := context.Background()
	gv, err := volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: volume}))
	if err != nil {
		tb.Fatal(err)
	}
	s, err := volumes.ListBricks(ctx, connect.NewRequest(&ldmv1.ListBricksRequest{Volume: volume}))
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	out := map[storage.BrickKey][]byte{}
	var expected uint64
	for s.Receive() {
		if e := s.Msg().GetExpected(); e != 0 {
			expected = e
		}
		for _, k := range s.Msg().GetKeys() {
			res, err := volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: volume, Key: k}))
			if err != nil {
				tb.Fatal(err)
			}
			vox, err := client.BrickVoxels(gv.Msg.GetVolume(), res.Msg.GetTile())
			if err != nil {
				tb.Fatal(err)
			}
			out[apiconv.KeyFromAPI(k)] = vox
		}
	}
	if err := s.Err(); err != nil {
		tb.Fatal(err)
	}
	return out, expected
}

func sameBricks(tb testing.TB, got, want map[storage.BrickKey][]byte) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d bricks, want %d", len(got), len(want))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			tb.Fatalf("brick %+v differs", k)
		}
	}
}

func procVolume(tb testing.TB, name string, s storage.Shape, dt storage.DataType) (*ldmv1.Volume, *pyramid.Procedural) {
	tb.Helper()
	p, err := pyramid.NewProcedural(s, dt)
	if err != nil {
		tb.Fatal(err)
	}
	return &ldmv1.Volume{Name: name, Shape: apiconv.ShapeToAPI(s), DataType: ldmv1.DataType(dt),
		BrickShape: &ldmv1.Shape{X: 16, Y: 16, Z: 8}, LodCount: pyramid.LevelsToFit(s, storage.Shape{X: 16, Y: 16, Z: 8})}, p
}

func TestImporter_ImportReader_resume_equals_uninterrupted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	im := s.importer(t)
	shape := storage.Shape{X: 75, Y: 50, Z: 61}
	for _, tc := range []struct {
		dt    storage.DataType
		codec ldmv1.Codec
	}{{storage.Uint8, ldmv1.Codec_CODEC_RAW}, {storage.Int16, ldmv1.Codec_CODEC_RAW}, {storage.Uint8, ldmv1.Codec_CODEC_ZSTD}, {storage.Int16, ldmv1.Codec_CODEC_ZSTD}} {
		dt := tc.dt
		name := dt.String() + "-" + codecLabel(tc.codec)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// Only the import that creates a volume names its codec: a
			// resumed one keeps the volume's.
			codec := client.ImportOptions{Codec: tc.codec}
			whole, p := procVolume(t, "whole-"+name, shape, dt)
			if _, err := im.ImportReader(ctx, p.Reader(), whole, codec); err != nil {
				t.Fatal(err)
			}
			var wire wireLog
			im := s.importer(t, connect.WithInterceptors(&wire))
			part, _ := procVolume(t, "part-"+name, shape, dt)
			// Interrupt twice: the source stalls after a third and after two
			// thirds of the volume, and once 20 bricks are acknowledged the
			// import's context is cancelled (a user's Ctrl-C).
			size := int64(shape.X*shape.Y*shape.Z) * int64(dt.Size())
			for round := range 2 {
				ictx, cancel := context.WithCancel(ctx)
				acked := make(chan struct{})
				src := &stallingReader{r: p.Reader(), left: size * int64(round+1) / 3, stall: func() error {
					select {
					case <-acked:
					case <-time.After(10 * time.Second):
					}
					cancel()
					return ictx.Err()
				}}
				opts := client.ImportOptions{Resume: round > 0, Progress: func(pr client.Progress) {
					if pr.BricksDone == 20 {
						close(acked)
					}
				}}
				if round == 0 {
					opts.Codec = tc.codec
				}
				st, err := im.ImportReader(ictx, src, part, opts)
				cancel()
				var ie *client.ImportError
				if !errors.As(err, &ie) || !ie.Kept || ie.Created == (round > 0) || ie.Resumed != (round > 0) || ie.DeleteErr != nil {
					t.Fatalf("round %d: interrupted import = %v, want an *ImportError that kept the volume", round, err)
				}
				if st.Bricks < 20 {
					t.Fatalf("round %d: %d bricks acknowledged, want at least 20", round, st.Bricks)
				}
				// The kept volume does not look complete.
				have, expected := serverBricks(t, im.Volumes, part.Name)
				if uint64(len(have)) >= expected {
					t.Fatalf("round %d: an interrupted volume lists %d of %d bricks", round, len(have), expected)
				}
			}
			var log progressLog
			st, err := im.ImportReader(ctx, p.Reader(), part, client.ImportOptions{Resume: true, Progress: log.record})
			if err != nil {
				t.Fatal(err)
			}
			log.check(t, st, true)
			meta := apiconv.MetaFromAPI(st.Volume)
			if err := meta.Normalize(); err != nil {
				t.Fatal(err)
			}
			if st.Skipped < 40 || st.Bricks+st.Skipped != pyramid.BrickCount(meta) {
				t.Fatalf("resume sent %d and skipped %d of %d bricks", st.Bricks, st.Skipped, pyramid.BrickCount(meta))
			}
			got, expected := serverBricks(t, im.Volumes, part.Name)
			want, _ := serverBricks(t, im.Volumes, whole.Name)
			if uint64(len(got)) != expected {
				t.Fatalf("resumed volume lists %d of %d bricks", len(got), expected)
			}
			sameBricks(t, got, want)
			raw, err := io.ReadAll(p.Reader())
			if err != nil {
				t.Fatal(err)
			}
			sameBricks(t, got, wholePyramid(raw, meta))
			wire.only(t, tc.codec)
			storedCodec(t, im.Volumes, part.Name, tc.codec)

			// Resuming a complete volume sends nothing.
			st, err = im.ImportReader(ctx, p.Reader(), part, client.ImportOptions{Resume: true})
			if err != nil || st.Bricks != 0 || st.Skipped != pyramid.BrickCount(meta) {
				t.Fatalf("resume of a complete volume: %+v, %v", st, err)
			}
		})
	}
}

func TestImporter_ImportReader_resume_needs_the_same_layout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	im := s.importer(t)
	vol, p := procVolume(t, "v", storage.Shape{X: 20, Y: 20, Z: 20}, storage.Uint8)
	if _, err := im.ImportReader(ctx, p.Reader(), vol, client.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	other, q := procVolume(t, "v", storage.Shape{X: 20, Y: 20, Z: 21}, storage.Uint8)
	_, err := im.ImportReader(ctx, q.Reader(), other, client.ImportOptions{Resume: true})
	var ie *client.ImportError
	if !errors.As(err, &ie) || ie.Created || ie.Resumed || !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("resume with another shape = %v, want an invalid-argument *ImportError", err)
	}
	if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"})); err != nil {
		t.Fatalf("the existing volume: %v", err)
	}
}

func TestImporter_ImportReader_truncated_source_creates_nothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	im := s.importer(t)
	vol, p := procVolume(t, "short", storage.Shape{X: 40, Y: 30, Z: 50}, storage.Uint16)
	// The source ends after 33 of 50 planes: two brick rows were sent.
	src := io.LimitReader(p.Reader(), 40*30*2*33)
	st, err := im.ImportReader(ctx, src, vol, client.ImportOptions{})
	var ie *client.ImportError
	if !errors.As(err, &ie) || !errors.Is(err, io.ErrUnexpectedEOF) || ie.Kept || !ie.Created || ie.DeleteErr != nil || st.Bricks == 0 {
		t.Fatalf("Import of a short source = %v (%d bricks sent), want an *ImportError wrapping io.ErrUnexpectedEOF that removed the volume", err, st.Bricks)
	}
	if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "short"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetVolume after a truncated source: %v, want NotFound", err)
	}
}

// TestImporter_ImportFile_gzip_streams checks gzip NIfTI-1 and NRRD files
// of every type and an odd shape against the whole-volume pyramid, and that
// a truncated gzip file leaves nothing behind.
func TestImporter_ImportFile_gzip_streams(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	im := s.importer(t)
	shape := storage.Shape{X: 37, Y: 21, Z: 19}
	for _, dt := range []storage.DataType{storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32} {
		for _, format := range []string{"nii.gz", "nrrd"} {
			t.Run(dt.String()+"_"+format, func(t *testing.T) {
				t.Parallel()
				p, err := pyramid.NewProcedural(shape, dt)
				if err != nil {
					t.Fatal(err)
				}
				raw, err := io.ReadAll(p.Reader())
				if err != nil {
					t.Fatal(err)
				}
				dir := t.TempDir()
				path := filepath.Join(dir, "v."+format)
				if format == "nii.gz" {
					writeGzipNIfTI(t, path, shape, dt, raw)
				} else {
					writeGzipNRRD(t, path, shape, dt, raw)
				}
				name := fmt.Sprintf("v-%s-%s", dt, format[:3])
				vol := &ldmv1.Volume{Name: name, BrickShape: &ldmv1.Shape{X: 8, Y: 8, Z: 4}}
				st, err := im.ImportFile(ctx, path, vol, client.ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
				meta := apiconv.MetaFromAPI(st.Volume)
				got, _ := serverBricks(t, im.Volumes, name)
				sameBricks(t, got, wholePyramid(raw, meta))

				// Half the compressed file: the import fails and removes
				// the volume.
				full, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				cut := filepath.Join(dir, "cut."+format)
				if err := os.WriteFile(cut, full[:len(full)*3/4], 0o644); err != nil {
					t.Fatal(err)
				}
				_, err = im.ImportFile(ctx, cut, &ldmv1.Volume{Name: name + "-cut", BrickShape: vol.BrickShape}, client.ImportOptions{})
				if !errors.Is(err, volfile.ErrTruncated) && !errors.Is(err, volfile.ErrFormat) {
					t.Fatalf("import of a truncated file = %v, want ErrTruncated", err)
				}
				if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: name + "-cut"})); connect.CodeOf(err) != connect.CodeNotFound {
					t.Fatalf("GetVolume after a truncated file: %v, want NotFound", err)
				}
			})
		}
	}
}

// writeGzipNIfTI writes a gzip-compressed NIfTI-1 file of raw voxels with
// volfile.Create.
func writeGzipNIfTI(tb testing.TB, path string, s storage.Shape, dt storage.DataType, raw []byte) {
	tb.Helper()
	plain := filepath.Join(filepath.Dir(path), "plain.nii")
	w, err := volfile.Create(plain, volfile.Header{Shape: s, DataType: dt, Spacing: [3]float64{1, 1, 1}, Transform: storage.Affine{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.WriteAt(raw, 0); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(plain)
	if err != nil {
		tb.Fatal(err)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// writeGzipNRRD writes an attached-header NRRD file with gzip encoding.
func writeGzipNRRD(tb testing.TB, path string, s storage.Shape, dt storage.DataType, raw []byte) {
	tb.Helper()
	names := map[storage.DataType]string{storage.Uint8: "uint8", storage.Uint16: "uint16", storage.Int16: "int16", storage.Uint32: "uint32", storage.Float32: "float"}
	var b bytes.Buffer
	fmt.Fprintf(&b, "NRRD0004\ntype: %s\ndimension: 3\nsizes: %d %d %d\nendian: little\nencoding: gzip\n\n", names[dt], s.X, s.Y, s.Z)
	zw := gzip.NewWriter(&b)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// stallingReader reads r until left bytes are read, then stalls: its next
// read returns the error of stall (which ends the import's context).
type stallingReader struct {
	r     io.Reader
	left  int64
	stall func() error
}

func (s *stallingReader) Read(b []byte) (int, error) {
	if s.left <= 0 {
		return 0, s.stall()
	}
	if int64(len(b)) > s.left {
		b = b[:s.left]
	}
	n, err := s.r.Read(b)
	s.left -= int64(n)
	return n, err
}
