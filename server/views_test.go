package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// viewVolume is a volume the view tests write and the dense voxels of each
// of its levels, x fastest, little-endian.
type viewVolume struct {
	meta   storage.VolumeMeta
	levels [][]byte
}

// formatsDir is the test-only npm package of third-party clients
// (zarrita, Neuroglancer).
func formatsDir(tb testing.TB) string {
	tb.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "web", "test", "formats")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "zarrita")); err != nil {
		tb.Fatalf("the open-format tests need the npm packages of %s (%v): run `make deps` (or `cd web/test/formats && npm ci`)", dir, err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		tb.Fatalf("the open-format tests need node: %v", err)
	}
	return dir
}

var viewTypes = []struct {
	name string
	dt   storage.DataType
	api  ldmv1.DataType
}{
	{"u8", storage.Uint8, ldmv1.DataType_DATA_TYPE_UINT8},
	{"u16", storage.Uint16, ldmv1.DataType_DATA_TYPE_UINT16},
	{"i16", storage.Int16, ldmv1.DataType_DATA_TYPE_INT16},
	{"u32", storage.Uint32, ldmv1.DataType_DATA_TYPE_UINT32},
	{"f32", storage.Float32, ldmv1.DataType_DATA_TYPE_FLOAT32},
}

// writeViewVolumes creates one volume per voxel type, 100x70x40 voxels
// in 64^3 bricks over three levels (edge bricks in every axis at level 0),
// and writes every brick with random bytes, padding included, except brick
// (1, 1, 0) of level 0, which stays missing (zeros). opts authorize the
// writes.
func writeViewVolumes(t *testing.T, url, prefix string, opts ...connect.ClientOption) []viewVolume {
	t.Helper()
	return writeViewVolumesCodec(t, url, prefix, ldmv1.Codec_CODEC_RAW, opts...)
}

// writeViewVolumesCodec is writeViewVolumes for volumes of a codec. The
// bricks of a zstd volume have random bytes of 2 bits each, so they
// compress about 3x and the frames hold compressed blocks; the server
// compresses them as they are written.
func writeViewVolumesCodec(t *testing.T, url, prefix string, codec ldmv1.Codec, opts ...connect.ClientOption) []viewVolume {
	t.Helper()
	ctx := context.Background()
	hc := &http.Client{Transport: client.NewTransport(nil)}
	opts = append(opts, connect.WithSendMaxBytes(1<<30))
	vc := ldmv1connect.NewVolumeServiceClient(hc, url, opts...)
	tc := ldmv1connect.NewTileServiceClient(hc, url, opts...)
	rng := rand.New(rand.NewPCG(1, 2))
	var out []viewVolume
	for _, vt := range viewTypes {
		m := storage.VolumeMeta{Name: prefix + vt.name, Shape: storage.Shape{X: 100, Y: 70, Z: 40}, DataType: vt.dt, LODCount: 3, Spacing: []float64{0.5, 0.75, 2}}
		if err := m.Normalize(); err != nil {
			t.Fatal(err)
		}
		if _, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: m.Name, Shape: &ldmv1.Shape{X: 100, Y: 70, Z: 40}, DataType: vt.api, LodCount: 3, Spacing: m.Spacing, Codec: codec,
		}})); err != nil {
			t.Fatal(err)
		}
		vs := vt.dt.Size()
		v := viewVolume{meta: m}
		for l := range m.LODCount {
			ls, g := m.LODShape(l), m.BrickGrid(l)
			dense := make([]byte, int(ls.X)*int(ls.Y)*int(ls.Z)*vs)
			for bz := range g.Z {
				for by := range g.Y {
					for bx := range g.X {
						if l == 0 && bx == 1 && by == 1 && bz == 0 {
							continue
						}
						brick := make([]byte, 64*64*64*vs)
						for i := range brick {
							brick[i] = byte(rng.Uint32())
							if codec == ldmv1.Codec_CODEC_ZSTD {
								brick[i] &= 3
							}
						}
						if vt.dt == storage.Float32 {
							// Keep floats finite and comparable: clear the top exponent bit.
							for i := 3; i < len(brick); i += 4 {
								brick[i] &= 0x3f
							}
						}
						if _, err := tc.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: m.Name, Tile: &ldmv1.Tile{
							Value: brick, Key: &ldmv1.BrickKey{Lod: l, X: bx, Y: by, Z: bz},
						}})); err != nil {
							t.Fatal(err)
						}
						for z := bz * 64; z < min((bz+1)*64, ls.Z); z++ {
							for y := by * 64; y < min((by+1)*64, ls.Y); y++ {
								x0, x1 := bx*64, min((bx+1)*64, ls.X)
								src := ((int(z-bz*64)*64+int(y-by*64))*64 + 0) * vs
								dst := ((int(z)*int(ls.Y)+int(y))*int(ls.X) + int(x0)) * vs
								copy(dense[dst:dst+int(x1-x0)*vs], brick[src:src+int(x1-x0)*vs])
							}
						}
					}
				}
			}
			v.levels = append(v.levels, dense)
		}
		out = append(out, v)
	}
	return out
}

// zarritaLevel is one line of zarr_read.mjs's output.
type zarritaLevel struct {
	Volume, Version, Lod, Dtype, Axes string
	Shape, Chunks                     []int
	Transforms                        []struct {
		Type        string
		Scale       []float64
		Translation []float64
	}
}

// runZarrita reads every level of volumes through Zarr version (v2 or v3)
// with zarrita and compares the voxels with the volumes'.
func runZarrita(t *testing.T, base, version string, vols []viewVolume, header string) {
	t.Helper()
	dir := formatsDir(t)
	out := t.TempDir()
	args := []string{filepath.Join(dir, "zarr_read.mjs"), base, out, version}
	for _, v := range vols {
		args = append(args, v.meta.Name)
	}
	if header != "" {
		args = append(args, "--header", header)
	}
	cmd := exec.Command("node", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("zarrita %s: %v\n%s", version, err, stderr.String())
	}
	var got []zarritaLevel
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		var l zarritaLevel
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("zarrita output %q: %v", sc.Text(), err)
		}
		got = append(got, l)
	}
	if len(got) != 3*len(vols) {
		t.Fatalf("zarrita %s read %d levels, want %d:\n%s", version, len(got), 3*len(vols), stdout)
	}
	dtypes := map[storage.DataType]string{storage.Uint8: "uint8", storage.Uint16: "uint16", storage.Int16: "int16", storage.Uint32: "uint32", storage.Float32: "float32"}
	i := 0
	for _, v := range vols {
		for l, want := range v.levels {
			g := got[i]
			i++
			ls := v.meta.LODShape(uint32(l))
			f := float64(int(1) << l)
			wantScale := []float64{2 * f, 0.75 * f, 0.5 * f}
			wantTrans := []float64{2 * (f - 1) / 2, 0.75 * (f - 1) / 2, 0.5 * (f - 1) / 2}
			if g.Volume != v.meta.Name || g.Lod != fmt.Sprint(l) || g.Dtype != dtypes[v.meta.DataType] ||
				fmt.Sprint(g.Shape) != fmt.Sprint([]uint32{ls.Z, ls.Y, ls.X}) || fmt.Sprint(g.Chunks) != "[64 64 64]" ||
				g.Axes != "z:space:millimeter,y:space:millimeter,x:space:millimeter" || len(g.Transforms) != 2 ||
				fmt.Sprint(g.Transforms[0].Scale) != fmt.Sprint(wantScale) || fmt.Sprint(g.Transforms[1].Translation) != fmt.Sprint(wantTrans) {
				t.Fatalf("zarrita %s level %+v; want volume %s lod %d %s shape %v scale %v translation %v", version, g, v.meta.Name, l, dtypes[v.meta.DataType], ls, wantScale, wantTrans)
			}
			b, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%s.%s.%d.bin", v.meta.Name, version, l)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, want) {
				n := 0
				for n < min(len(b), len(want)) && b[n] == want[n] {
					n++
				}
				vs := v.meta.DataType.Size()
				x, y, z := (n/vs)%int(ls.X), (n/vs/int(ls.X))%int(ls.Y), n/vs/int(ls.X)/int(ls.Y)
				t.Fatalf("zarrita %s %s level %d: %d bytes, want %d; first difference at voxel x=%d y=%d z=%d", version, v.meta.Name, l, len(b), len(want), x, y, z)
			}
		}
	}
}

// TestServer_zarr_zarrita reads every level of a volume of every voxel
// type, raw and zstd, with zarrita through Zarr v2 (OME-NGFF 0.4) and Zarr v3 (OME-NGFF
// 0.5), voxel-exact, edge chunks and a missing brick included.
func TestServer_zarr_zarrita(t *testing.T) {
	t.Parallel()
	formatsDir(t)
	s := servertest.Start(t, server.Config{})
	vols := writeViewVolumes(t, s.URL(), "z-")
	// zstd volumes side by side: the chunks are the stored frames, which
	// zarrita decodes with numcodecs' zstd.
	vols = append(vols, writeViewVolumesCodec(t, s.URL(), "zz-", ldmv1.Codec_CODEC_ZSTD)...)
	for _, version := range []string{"v2", "v3"} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			runZarrita(t, s.URL(), version, vols, "")
		})
	}
}

// get sends a GET with an optional Authorization header and returns the
// status and body.
func viewGet(t *testing.T, url, authz string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	return res.StatusCode, buf.Bytes(), res.Header
}

// TestServer_unknown_paths_404 checks that paths outside the API, the
// views and the viewer's own files answer 404, not the viewer's page.
func TestServer_unknown_paths_404(t *testing.T) {
	t.Parallel()
	s := servertest.Start(t, server.Config{})
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/", 200, "go-ldm viewer"},
		{"/?volume=demo", 200, "go-ldm viewer"},
		{"/index.html", 200, "go-ldm viewer"},
		{"/nope", 404, "not found"},
		{"/volumes/demo", 404, "not found"},
		{"/info", 404, "not found"},
		{"/demo/.zattrs", 404, "not found"},
		{"/precomputed/nope/info", 404, "no volume"},
		{"/zarr/nope/.zattrs", 404, "no volume"},
		{"/zarr/Bad_Name/.zattrs", 404, "no volume"},
		{"/zarr", 404, "not found"},
	} {
		status, body, hdr := viewGet(t, s.URL()+tc.path, "")
		if status != tc.status || !strings.Contains(strings.ToLower(string(body)), strings.ToLower(tc.body)) {
			t.Errorf("GET %s: %d %q, want %d containing %q", tc.path, status, body, tc.status, tc.body)
		}
		if strings.HasPrefix(tc.path, "/zarr/") || strings.HasPrefix(tc.path, "/precomputed/") {
			if hdr.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("GET %s: no CORS header on %d: %v", tc.path, status, hdr)
			}
		}
	}
}

// TestServer_views_authorization serves the views with tokens and a share
// key: without credentials every view path is 401, a reader token reads
// (zarrita sends it as a header), a token whose policy does not cover the
// volume is 403, and zarrita reads through a share link's path form.
func TestServer_views_authorization(t *testing.T) {
	t.Parallel()
	formatsDir(t)
	dir := t.TempDir()
	rootTok, readerTok, otherTok := newTok(t), newTok(t), newTok(t)
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(auth.HashToken(rootTok)+" root\n"+auth.HashToken(readerTok)+" ann reader\n"+auth.HashToken(otherTok)+" bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "policy.csv")
	if err := os.WriteFile(policy, []byte("p, role:admin, *, *\np, role:reader, volumes/*, read\ng, root, role:admin\np, bob, volumes/other, read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := servertest.Start(t, server.Config{Auth: server.AuthConfig{TokensFile: tokens, PolicyFile: policy, ShareKeyFile: filepath.Join(dir, "share.key")}})
	vols := writeViewVolumes(t, s.URL(), "a-", bearer(rootTok))[:2]

	for _, p := range []string{"/zarr/a-u8/.zattrs", "/zarr/a-u8/0/0/0/0", "/zarr3/a-u16/zarr.json", "/zarr3/a-u16/0/c/0/0/0", "/precomputed/a-u8/info", "/precomputed/a-u8/0/0-64_0-64_0-40", "/zarr/nope/.zattrs"} {
		status, body, hdr := viewGet(t, s.URL()+p, "")
		if status != http.StatusUnauthorized || hdr.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s without credentials: %d %q", p, status, body)
		}
		if status, body, _ := viewGet(t, s.URL()+p, "Bearer "+otherTok); status != http.StatusForbidden {
			t.Errorf("GET %s by a token without read on it: %d %q", p, status, body)
		}
		want := http.StatusOK
		if strings.Contains(p, "nope") {
			want = http.StatusNotFound
		}
		if status, body, _ := viewGet(t, s.URL()+p, "Bearer "+readerTok); status != want {
			t.Errorf("GET %s by a reader: %d %q, want %d", p, status, body, want)
		}
		if status, _, _ := viewGet(t, s.URL()+p, "Bearer ldm_wrong"); status != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", p, status)
		}
	}
	t.Run("zarrita_with_a_reader_token", func(t *testing.T) {
		runZarrita(t, s.URL(), "v2", vols, "Authorization: Bearer "+readerTok)
		runZarrita(t, s.URL(), "v3", vols, "Authorization: Bearer "+readerTok)
	})
	t.Run("zarrita_through_a_share_link", func(t *testing.T) {
		hc := &http.Client{Transport: client.NewTransport(nil)}
		res, err := ldmv1connect.NewVolumeServiceClient(hc, s.URL(), bearer(rootTok)).CreateShare(context.Background(),
			connect.NewRequest(&ldmv1.CreateShareRequest{Volume: vols[0].meta.Name}))
		if err != nil {
			t.Fatal(err)
		}
		runZarrita(t, s.URL()+auth.SharePathPrefix+res.Msg.GetToken(), "v3", vols[:1], "")
		if status, _, _ := viewGet(t, s.URL()+auth.SharePathPrefix+res.Msg.GetToken()+"/zarr/"+vols[1].meta.Name+"/.zattrs", ""); status != http.StatusForbidden {
			t.Fatalf("a share link on another volume: %d, want 403", status)
		}
	})
}

func newTok(t *testing.T) string {
	t.Helper()
	tok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestServer_zarr_python reads the views with zarr-python (Debian's
// python3-zarr over fsspec's HTTP), as the README's line does: every level
// of two volumes, raw and zstd, voxel-exact, through /zarr/ (Zarr v2,
// OME-NGFF 0.4).
func TestServer_zarr_python(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import zarr, fsspec, aiohttp").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import zarr, fsspec and aiohttp (run `make python`, or apt-get install -y python3-zarr python3-fsspec python3-aiohttp): %v\n%s", python, err, out)
	}
	s := servertest.Start(t, server.Config{})
	vols := writeViewVolumes(t, s.URL(), "p-")
	zvols := writeViewVolumesCodec(t, s.URL(), "pz-", ldmv1.Codec_CODEC_ZSTD)
	vols = []viewVolume{vols[1], vols[4], zvols[1], zvols[4]} // uint16 and float32, raw and zstd
	script := `
import sys, zarr
base, name, lod = sys.argv[1], sys.argv[2], sys.argv[3]
g = zarr.open_group(base + "/zarr/" + name + "/", mode="r")
assert g.attrs["multiscales"][0]["version"] == "0.4"
sys.stdout.buffer.write(g[lod][:].tobytes())
`
	for _, v := range vols {
		for l, want := range v.levels {
			cmd := exec.Command(python, "-c", script, s.URL(), v.meta.Name, fmt.Sprint(l))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("zarr-python %s level %d: %v\n%s", v.meta.Name, l, err, stderr.String())
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("zarr-python %s level %d: %d bytes differ from the volume's %d", v.meta.Name, l, len(got), len(want))
			}
		}
	}
}
