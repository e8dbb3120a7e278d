package client_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// single is one ldm server on 127.0.0.1 over a memory store. It records the
// HTTP major version of every request it receives.
type single struct {
	base string
	mu   sync.Mutex
	prot map[int]int // ProtoMajor -> requests
}

func (s *single) protos() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int]int{}
	for k, v := range s.prot {
		out[k] = v
	}
	return out
}

func startSingle(tb testing.TB, maxTileBytes int) *single {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	svc, err := service.New(service.Config{Store: storage.NewMemory(maxTileBytes), MaxTileBytes: maxTileBytes,
		Logger: quietLogger(), AdvertiseAddr: ln.Addr().String()})
	if err != nil {
		tb.Fatal(err)
	}
	s := &single{base: "http://" + ln.Addr().String(), prot: map[int]int{}}
	h := svc.Handler()
	srv := service.NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.prot[r.ProtoMajor]++
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	}), nil, quietLogger())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Close()
		<-done
	})
	return s
}

// importer returns an Importer for s over client.NewTransport.
func (s *single) importer(tb testing.TB, opts ...connect.ClientOption) client.Importer {
	tb.Helper()
	tr := client.NewTransport(nil)
	tb.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return client.Importer{
		Tiles:   ldmv1connect.NewTileServiceClient(hc, s.base, opts...),
		Volumes: ldmv1connect.NewVolumeServiceClient(hc, s.base, opts...),
	}
}

// pattern returns a uint16 raw volume whose voxel i is i mod 65536.
func pattern(x, y, z int) []byte {
	raw := make([]byte, x*y*z*2)
	for i := range x * y * z {
		binary.LittleEndian.PutUint16(raw[2*i:], uint16(i))
	}
	return raw
}

// progressLog records the Progress calls of an import.
type progressLog struct{ calls []client.Progress }

func (p *progressLog) record(pr client.Progress) { p.calls = append(p.calls, pr) }

// check verifies that the calls start at zero, only grow, and end at the
// totals of st.
func (p *progressLog) check(tb testing.TB, st client.ImportStats, complete bool) {
	tb.Helper()
	if len(p.calls) == 0 {
		tb.Fatal("Progress was never called")
	}
	first, last := p.calls[0], p.calls[len(p.calls)-1]
	if first.BricksDone != 0 || first.BytesDone != 0 {
		tb.Fatalf("first Progress %+v, want nothing done", first)
	}
	for i := 1; i < len(p.calls); i++ {
		if p.calls[i].BricksDone != p.calls[i-1].BricksDone+1 || p.calls[i].Bricks != first.Bricks || p.calls[i].Bytes != first.Bytes ||
			p.calls[i].BytesSent <= p.calls[i-1].BytesSent {
			tb.Fatalf("Progress %d = %+v after %+v", i, p.calls[i], p.calls[i-1])
		}
	}
	if last.BricksDone != st.Bricks || last.BytesDone != st.Bytes || last.BytesDone != int64(last.BricksDone)*st.BrickBytes || last.BytesSent != st.BytesSent {
		tb.Fatalf("last Progress %+v, stats %+v", last, st)
	}
	if complete && (last.BricksDone != last.Bricks || last.BytesDone != last.Bytes) {
		tb.Fatalf("last Progress %+v of a complete import", last)
	}
}

// wantBricks checks that the server holds exactly the bricks pyramid.Cut
// makes of src for the volume v.
func wantBricks(tb testing.TB, volumes ldmv1connect.VolumeServiceClient, v *ldmv1.Volume, src io.ReaderAt) int {
	tb.Helper()
	meta := apiconv.MetaFromAPI(v)
	n := 0
	err := pyramid.Cut(src, meta, func(b pyramid.Brick) error {
		res, err := volumes.GetBrick(context.Background(), connect.NewRequest(&ldmv1.GetBrickRequest{Volume: v.GetName(), Key: apiconv.KeyToAPI(b.Key)}))
		if err != nil {
			return fmt.Errorf("brick %+v: %w", b.Key, err)
		}
		if !bytes.Equal(res.Msg.GetTile().GetValue(), b.Value) {
			return fmt.Errorf("brick %+v differs from pyramid.Cut's", b.Key)
		}
		n++
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func TestImporter_Import(t *testing.T) {
	t.Parallel()
	s := startSingle(t, 0)
	const nx, ny, nz = 70, 40, 33 // not multiples of the brick: edge bricks are padded
	raw := pattern(nx, ny, nz)
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			im := s.importer(t, tc.opts...)
			vol := &ldmv1.Volume{Name: "raw-" + tc.name, Shape: &ldmv1.Shape{X: nx, Y: ny, Z: nz}, DataType: ldmv1.DataType(storage.Uint16),
				BrickShape: &ldmv1.Shape{X: 32, Y: 32, Z: 16}, LodCount: 3}
			var log progressLog
			st, err := im.Import(context.Background(), bytes.NewReader(raw), vol, client.ImportOptions{Progress: log.record})
			if err != nil {
				t.Fatal(err)
			}
			meta := apiconv.MetaFromAPI(st.Volume)
			if err := meta.Normalize(); err != nil {
				t.Fatal(err)
			}
			want := pyramid.BrickCount(meta)
			if st.Bricks != want || st.Levels != 3 || st.BrickBytes != 32*32*16*2 || st.Bytes != int64(want)*st.BrickBytes || st.Elapsed <= 0 {
				t.Fatalf("stats %+v, want %d bricks of 3 levels", st, want)
			}
			log.check(t, st, true)
			if n := wantBricks(t, im.Volumes, st.Volume, bytes.NewReader(raw)); n != want {
				t.Fatalf("%d bricks on the server, want %d", n, want)
			}
		})
	}
}

// failingReader fails every read at or past offset at.
type failingReader struct {
	r  io.ReaderAt
	at int64
}

var errDisk = errors.New("disk on fire")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.at {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestImporter_Import_failureDeletesVolume(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("read_fails_part_way", func(t *testing.T) {
		t.Parallel()
		s := startSingle(t, 0)
		im := s.importer(t)
		// 16x16x32 in 8^3 bricks, one level: four slabs of 8 planes; the
		// third slab's read fails after the first two slabs' 8 bricks.
		vol := &ldmv1.Volume{Name: "partial", Shape: &ldmv1.Shape{X: 16, Y: 16, Z: 32}, DataType: ldmv1.DataType(storage.Uint8),
			BrickShape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, LodCount: 1}
		src := failingReader{r: bytes.NewReader(make([]byte, 16*16*32)), at: 16 * 16 * 16}
		var log progressLog
		st, err := im.Import(ctx, src, vol, client.ImportOptions{Progress: log.record})
		var ie *client.ImportError
		if !errors.As(err, &ie) || !errors.Is(err, errDisk) || !ie.Created || ie.DeleteErr != nil || ie.Volume != "partial" {
			t.Fatalf("Import = %v, want an *ImportError of a created and deleted volume wrapping %v", err, errDisk)
		}
		if st.Bricks != 8 || st.Bytes != 8*512 {
			t.Fatalf("stats %+v, want the 8 bricks of the first two slabs acknowledged", st)
		}
		log.check(t, st, false)
		if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "partial"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetVolume after a failed import: %v, want NotFound", err)
		}
		// The same import runs again once the source is whole.
		if _, err := im.Import(ctx, src.r, vol, client.ImportOptions{}); err != nil {
			t.Fatalf("import again: %v", err)
		}
	})

	t.Run("brick_too_large", func(t *testing.T) {
		t.Parallel()
		s := startSingle(t, 1000)
		im := s.importer(t, connect.WithGRPC())
		vol := &ldmv1.Volume{Name: "big", Shape: &ldmv1.Shape{X: 40, Y: 40, Z: 40}, DataType: ldmv1.DataType(storage.Uint8),
			BrickShape: &ldmv1.Shape{X: 32, Y: 32, Z: 32}, LodCount: 2}
		_, err := im.Import(ctx, bytes.NewReader(make([]byte, 40*40*40)), vol, client.ImportOptions{})
		var ie *client.ImportError
		if !errors.Is(err, client.ErrBrickTooLarge) || connect.CodeOf(err) != connect.CodeResourceExhausted || !errors.As(err, &ie) ||
			ie.BrickBytes != 32*32*32 || ie.BrickShape != (storage.Shape{X: 32, Y: 32, Z: 32}) || ie.DeleteErr != nil {
			t.Fatalf("Import = %v, want ErrBrickTooLarge with the brick's size", err)
		}
		if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "big"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetVolume after a failed import: %v, want NotFound", err)
		}
	})

	t.Run("name_taken_keeps_the_volume", func(t *testing.T) {
		t.Parallel()
		s := startSingle(t, 0)
		im := s.importer(t)
		vol := &ldmv1.Volume{Name: "taken", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType(storage.Uint8)}
		if _, err := im.Import(ctx, bytes.NewReader(make([]byte, 512)), vol, client.ImportOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := im.Import(ctx, bytes.NewReader(make([]byte, 512)), vol, client.ImportOptions{})
		var ie *client.ImportError
		if !errors.As(err, &ie) || ie.Created || connect.CodeOf(err) != connect.CodeAlreadyExists {
			t.Fatalf("second Import = %v, want AlreadyExists from CreateVolume", err)
		}
		if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "taken"})); err != nil {
			t.Fatalf("the existing volume: %v", err)
		}
	})

	t.Run("wrong_size_creates_nothing", func(t *testing.T) {
		t.Parallel()
		s := startSingle(t, 0)
		im := s.importer(t)
		vol := &ldmv1.Volume{Name: "short", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType(storage.Uint16)}
		_, err := im.Import(ctx, bytes.NewReader(make([]byte, 512)), vol, client.ImportOptions{})
		if !errors.Is(err, storage.ErrInvalidArgument) {
			t.Fatalf("Import of a short source = %v, want ErrInvalidArgument", err)
		}
		if _, err := im.Volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "short"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetVolume: %v, want NotFound", err)
		}
	})
}

// writeNIfTI writes a NIfTI-1 file (magic "n+1", voxels at 352) of uint16
// voxels in big-endian byte order.
func writeNIfTI(tb testing.TB, path string, nx, ny, nz int, spacing [3]float32) []byte {
	tb.Helper()
	bo := binary.BigEndian
	h := make([]byte, 352)
	bo.PutUint32(h[0:], 348)
	for i, d := range []int16{3, int16(nx), int16(ny), int16(nz), 1} {
		bo.PutUint16(h[40+2*i:], uint16(d))
	}
	bo.PutUint16(h[70:], 512) // uint16
	bo.PutUint16(h[72:], 16)
	for i, s := range spacing {
		bo.PutUint32(h[80+4*i:], math.Float32bits(s))
	}
	bo.PutUint32(h[108:], math.Float32bits(352))
	copy(h[344:], "n+1\x00")
	le := pattern(nx, ny, nz)
	be := make([]byte, len(le))
	for i := 0; i < len(le); i += 2 {
		be[i], be[i+1] = le[i+1], le[i]
	}
	if err := os.WriteFile(path, append(h, be...), 0o644); err != nil {
		tb.Fatal(err)
	}
	return le
}

func TestClient_ImportFile(t *testing.T) {
	t.Parallel()
	s := startSingle(t, 0)
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Seeds: []string{s.base}, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	path := filepath.Join(t.TempDir(), "Head.nii")
	want := writeNIfTI(t, path, 20, 12, 9, [3]float32{0.5, 0.5, 2})
	var log progressLog
	st, err := c.ImportFile(ctx, path, &ldmv1.Volume{Name: "head", BrickShape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, Labels: map[string]string{"source.file": "kept"}},
		client.ImportOptions{Progress: log.record})
	if err != nil {
		t.Fatal(err)
	}
	log.check(t, st, true)
	v, err := c.GetVolume(ctx, &ldmv1.GetVolumeRequest{Name: "head"})
	if err != nil {
		t.Fatal(err)
	}
	got := v.GetVolume()
	// 20x12x9 in 8^3 bricks: 20 -> 10 -> 5 fits in three levels.
	if got.GetShape().GetX() != 20 || got.GetShape().GetY() != 12 || got.GetShape().GetZ() != 9 || got.GetDataType() != ldmv1.DataType(storage.Uint16) ||
		got.GetLodCount() != 3 || fmt.Sprint(got.GetSpacing()) != "[0.5 0.5 2]" {
		t.Fatalf("volume %v, want the file's shape, type and spacing and 3 levels", got)
	}
	labels := got.GetLabels()
	if labels["source.file"] != "kept" || labels["source.format"] != "nifti-1" || labels["source.byte_order"] != "big-endian" {
		t.Fatalf("labels %v", labels)
	}
	tiles := s.importer(t)
	if n := wantBricks(t, tiles.Volumes, got, bytes.NewReader(want)); n != st.Bricks {
		t.Fatalf("%d bricks on the server, stats say %d", n, st.Bricks)
	}
	// An unreadable file creates nothing.
	bad := filepath.Join(t.TempDir(), "bad.nii")
	if err := os.WriteFile(bad, []byte("not a volume file at all, long enough to read a header from"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ImportFile(ctx, bad, &ldmv1.Volume{Name: "bad"}, client.ImportOptions{}); err == nil {
		t.Fatal("ImportFile of a bad file succeeded")
	}
	if _, err := c.GetVolume(ctx, &ldmv1.GetVolumeRequest{Name: "bad"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("GetVolume(bad): %v, want NotFound", err)
	}
}

// TestNewTransport_HTTP2 checks over a real socket that the calls of a
// Client built without an http.Client, and of client.NewTransport, use
// HTTP/2 (h2c) for an http:// URL, for every protocol.
func TestNewTransport_HTTP2(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSingle(t, 0)
	c, err := client.New(ctx, client.Config{Seeds: []string{s.base}, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListVolumes(ctx, &ldmv1.ListVolumesRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]connect.ClientOption{nil, {connect.WithGRPC()}, {connect.WithGRPCWeb()}} {
		im := s.importer(t, opts...)
		if _, err := im.Volumes.ListVolumes(ctx, connect.NewRequest(&ldmv1.ListVolumesRequest{})); err != nil {
			t.Fatal(err)
		}
	}
	p := s.protos()
	if p[2] < 5 || len(p) != 1 {
		t.Fatalf("requests by HTTP major version: %v, want all HTTP/2", p)
	}
}
