package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/storage"
)

// viewServer serves the views (and nothing else) of tiles on a real
// 127.0.0.1 socket over h2c, until the test ends.
type viewServer struct {
	url   string
	c     *http.Client
	tiles Tiles
}

func startViews(tb testing.TB, tiles Tiles, vc ViewConfig) *viewServer {
	tb.Helper()
	svc, err := New(Config{Store: tiles, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	h, err := svc.Views(vc)
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range ViewPaths() {
		mux.Handle(p, h)
	}
	for _, p := range svc.Paths() {
		mux.Handle(p, svc.Handler())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := NewHTTPServer(mux, nil, slog.New(slog.DiscardHandler))
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	tr := &http.Transport{Protocols: new(http.Protocols), MaxConnsPerHost: 0}
	tr.Protocols.SetUnencryptedHTTP2(true)
	tb.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
	})
	// Redirects are not followed: the mux's 301 for a path with dot or
	// empty segments is what a client gets.
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &viewServer{url: "http://" + l.Addr().String(), c: &http.Client{Transport: tr, CheckRedirect: noRedirect}, tiles: tiles}
}

// do sends a request with headers (key, value pairs) and returns the
// response with its body read.
func (vs *viewServer) do(tb testing.TB, method, path string, hdr ...string) (*http.Response, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, vs.url+path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := vs.c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res, b
}

// putVolume creates a volume and writes every brick of every level with
// random bytes except the listed missing ones. It returns the bricks.
func putVolume(tb testing.TB, tiles Tiles, m storage.VolumeMeta, missing ...storage.BrickKey) map[storage.BrickKey][]byte {
	tb.Helper()
	ctx := context.Background()
	info, err := tiles.CreateVolume(ctx, m)
	if err != nil {
		tb.Fatal(err)
	}
	skip := map[storage.BrickKey]bool{}
	for _, k := range missing {
		skip[k] = true
	}
	rng := rand.New(rand.NewPCG(uint64(len(m.Name)), 7))
	bs := brickShape(info)
	out := map[storage.BrickKey][]byte{}
	for l := range lodCount(info) {
		g := info.BrickGrid(l)
		for z := range g.Z {
			for y := range g.Y {
				for x := range g.X {
					k := storage.BrickKey{LOD: l, X: x, Y: y, Z: z}
					if skip[k] {
						continue
					}
					b := make([]byte, int(bs.X*bs.Y*bs.Z)*info.DataType.Size())
					for i := range b {
						b[i] = byte(rng.Uint32())
					}
					if _, err := tiles.Append(ctx, m.Name, storage.Tile{Value: b, HasKey: true, Key: k}); err != nil {
						tb.Fatal(err)
					}
					out[k] = b
				}
			}
		}
	}
	return out
}

func TestViews_paths(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	vs := startViews(t, mem, ViewConfig{})
	bricks := putVolume(t, mem, storage.VolumeMeta{Name: "a", Shape: storage.Shape{X: 100, Y: 70, Z: 40}, DataType: storage.Uint16, LODCount: 2},
		storage.BrickKey{X: 1, Y: 1})
	putVolume(t, mem, storage.VolumeMeta{Name: "b", Shape: storage.Shape{X: 10, Y: 10, Z: 10}, DataType: storage.Uint8})

	t.Run("metadata", func(t *testing.T) {
		for _, p := range []string{"/zarr/a/.zgroup", "/zarr/a/.zattrs", "/zarr/a/0/.zarray", "/zarr/a/1/.zarray", "/zarr/a/0/.zattrs",
			"/zarr3/a/zarr.json", "/zarr3/a/0/zarr.json", "/zarr3/a/1/zarr.json", "/precomputed/a/info", "/zarr/a/"} {
			res, b := vs.do(t, "GET", p)
			want := 200
			if p == "/zarr/a/" {
				want = 404
			}
			if res.StatusCode != want || (want == 200 && (!json.Valid(b) || res.Header.Get("Content-Type") != "application/json" || res.Header.Get("ETag") == "")) {
				t.Fatalf("GET %s: %d %s %q", p, res.StatusCode, res.Header, b)
			}
		}
	})
	t.Run("chunks_are_bricks", func(t *testing.T) {
		for _, p := range []struct {
			path string
			key  storage.BrickKey
		}{
			{"/zarr/a/0/0/0/1", storage.BrickKey{X: 1}},
			{"/zarr/a/0/0/1/0", storage.BrickKey{Y: 1}},
			{"/zarr3/a/0/c/0/1/1", storage.BrickKey{}},
			{"/zarr3/a/1/c/0/0/0", storage.BrickKey{LOD: 1}},
		} {
			if p.path == "/zarr3/a/0/c/0/1/1" {
				p.key = storage.BrickKey{X: 1, Y: 1}
				if res, _ := vs.do(t, "GET", p.path); res.StatusCode != 404 {
					t.Fatalf("GET %s of a missing brick: %d, want 404", p.path, res.StatusCode)
				}
				continue
			}
			res, b := vs.do(t, "GET", p.path)
			if res.StatusCode != 200 || !bytes.Equal(b, bricks[p.key]) || res.Header.Get("Content-Type") != "application/octet-stream" {
				t.Fatalf("GET %s: %d, %d bytes, equal to brick %v: %v", p.path, res.StatusCode, len(b), p.key, bytes.Equal(b, bricks[p.key]))
			}
		}
	})
	t.Run("precomputed_chunks_cut_to_the_level", func(t *testing.T) {
		for _, c := range []struct {
			name string
			key  storage.BrickKey
			size [3]int
		}{
			{"0-64_0-64_0-40", storage.BrickKey{}, [3]int{64, 64, 40}},
			{"64-100_0-64_0-40", storage.BrickKey{X: 1}, [3]int{36, 64, 40}},
			{"0-64_64-70_0-40", storage.BrickKey{Y: 1}, [3]int{64, 6, 40}},
		} {
			res, b := vs.do(t, "GET", "/precomputed/a/0/"+c.name)
			want := cutBrickRef(bricks[c.key], 64, 64, c.size, 2)
			if res.StatusCode != 200 || !bytes.Equal(b, want) {
				t.Fatalf("GET %s: %d, %d bytes, want %d equal", c.name, res.StatusCode, len(b), len(want))
			}
		}
		if res, _ := vs.do(t, "GET", "/precomputed/a/0/64-100_64-70_0-40"); res.StatusCode != 404 {
			t.Fatalf("missing brick: %d, want 404", res.StatusCode)
		}
		res, b := vs.do(t, "GET", "/precomputed/a/1/0-50_0-35_0-20")
		if res.StatusCode != 200 || !bytes.Equal(b, cutBrickRef(bricks[storage.BrickKey{LOD: 1}], 64, 64, [3]int{50, 35, 20}, 2)) {
			t.Fatalf("level 1: %d %d bytes", res.StatusCode, len(b))
		}
	})
	t.Run("bad_paths", func(t *testing.T) {
		for _, c := range []struct {
			path   string
			status int
		}{
			{"/zarr/nope/.zattrs", 404},
			{"/zarr/A/.zattrs", 404},
			{"/zarr/a/2/.zarray", 404},                 // past the pyramid
			{"/zarr/a/01/.zarray", 404},                // leading zero
			{"/zarr/a/-1/.zarray", 404},                // sign
			{"/zarr/a/0/0/0/2", 404},                   // outside the grid
			{"/zarr/a/0/1/0/0", 404},                   // z outside (one brick deep)
			{"/zarr/a/0/0/0/4294967296", 400},          // overflows uint32
			{"/zarr/a/0/0/0/x", 400},                   // malformed
			{"/zarr/a/0/0/0", 404},                     // too short
			{"/zarr/a/0/0/0/0/0", 404},                 // too long
			{"/zarr/a/0/c/0/0/0", 404},                 // v3 key under v2
			{"/zarr3/a/0/0/0/0", 404},                  // v2 key under v3
			{"/zarr3/a/.zattrs", 404},                  // v2 metadata under v3
			{"/zarr/a/zarr.json", 404},                 // v3 metadata under v2
			{"/zarr/a//0/.zarray", 400},                // empty segment
			{"/zarr/a/0/./0/0/0", 400},                 // dot segment (after cleaning by the mux: a redirect)
			{"/precomputed/a/0/0-64_0-64_0-41", 404},   // not cut to the level
			{"/precomputed/a/0/0-64_0-64_0-64", 404},   // not cut to the level
			{"/precomputed/a/0/1-65_0-64_0-40", 404},   // not on the grid
			{"/precomputed/a/0/64-128_0-64_0-40", 404}, // past the edge
			{"/precomputed/a/0/0-64_0-64", 400},
			{"/precomputed/a/0/0-64_0-64_0-40_", 400},
			{"/precomputed/a/0/00-64_0-64_0-40", 400},
			{"/precomputed/a/0/64-0_0-64_0-40", 400},
			{"/precomputed/a/5/0-64_0-64_0-40", 404},
			{"/precomputed/a/info/x", 404},
			{"/precomputed/a", 404},
		} {
			res, b := vs.do(t, "GET", c.path)
			if res.StatusCode/100 == 3 {
				continue // the mux redirects to the cleaned path first: dot segments never reach the views
			}
			if res.StatusCode != c.status || res.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("GET %s: %d %q (CORS %q), want %d", c.path, res.StatusCode, b[:min(len(b), 200)], res.Header.Get("Access-Control-Allow-Origin"), c.status)
			}
		}
	})
	t.Run("traversal_never_reaches_another_volume", func(t *testing.T) {
		// Dot segments are the mux's (a redirect to the cleaned path, which
		// is then authorized as its own volume); encoded ones never leave
		// their segment.
		for _, p := range []string{"/zarr/a/../b/0/0/0/0", "/zarr/a/%2e%2e/b/0/0/0/0", "/zarr/a%2f..%2fb/0/0/0/0", "/precomputed/a/..%2f..%2fb/info", "/zarr/a/0/..%2f..%2fb/0/0/0"} {
			res, b := vs.do(t, "GET", p)
			if res.StatusCode == 200 || (res.StatusCode/100 != 3 && res.StatusCode != 400 && res.StatusCode != 404) {
				t.Fatalf("GET %s: %d %q", p, res.StatusCode, b[:min(len(b), 200)])
			}
		}
	})
	t.Run("head_options_and_methods", func(t *testing.T) {
		res, b := vs.do(t, "HEAD", "/zarr/a/0/0/0/0")
		if res.StatusCode != 200 || len(b) != 0 || res.Header.Get("Content-Length") != fmt.Sprint(64*64*64*2) || res.Header.Get("ETag") == "" {
			t.Fatalf("HEAD: %d %v, %d bytes", res.StatusCode, res.Header, len(b))
		}
		res, _ = vs.do(t, "OPTIONS", "/zarr/a/0/0/0/0", "Origin", "https://viewer.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "authorization")
		if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "GET") {
			t.Fatalf("preflight: %d %v", res.StatusCode, res.Header)
		}
		res, _ = vs.do(t, "OPTIONS", "/precomputed/a/info", "Origin", "https://public.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Private-Network", "true")
		if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Private-Network") != "true" {
			t.Fatalf("private network preflight: %d %v", res.StatusCode, res.Header)
		}
		res, _ = vs.do(t, "OPTIONS", "/precomputed/a/info")
		if res.StatusCode != 204 || res.Header.Get("Allow") != "GET, HEAD, OPTIONS" {
			t.Fatalf("OPTIONS: %d %v", res.StatusCode, res.Header)
		}
		for _, m := range []string{"POST", "PUT", "DELETE"} {
			res, _ = vs.do(t, m, "/zarr/a/0/0/0/0")
			if res.StatusCode != 405 || res.Header.Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("%s: %d %v", m, res.StatusCode, res.Header)
			}
		}
	})
	t.Run("etags", func(t *testing.T) {
		res, _ := vs.do(t, "GET", "/zarr/a/0/0/0/0")
		info, _ := mem.Volume("a")
		etag := res.Header.Get("ETag")
		if etag != tileETag(info.CreatedAt.UnixNano(), 0) || res.Header.Get("Cache-Control") != cacheRevalidate {
			t.Fatalf("chunk ETag %q Cache-Control %q, want the tile's %q, revalidated", etag, res.Header.Get("Cache-Control"), tileETag(info.CreatedAt.UnixNano(), 0))
		}
		if res, b := vs.do(t, "GET", "/zarr/a/0/0/0/0", "If-None-Match", etag); res.StatusCode != 304 || len(b) != 0 {
			t.Fatalf("If-None-Match: %d", res.StatusCode)
		}
		if res, _ := vs.do(t, "GET", "/precomputed/a/0/0-64_0-64_0-40", "If-None-Match", etag); res.StatusCode != 304 {
			t.Fatalf("precomputed If-None-Match: %d", res.StatusCode)
		}
		res, _ = vs.do(t, "GET", "/zarr/a/.zattrs")
		if res2, _ := vs.do(t, "GET", "/zarr/a/.zattrs", "If-None-Match", res.Header.Get("ETag")); res2.StatusCode != 304 {
			t.Fatalf("metadata If-None-Match: %d", res2.StatusCode)
		}
		// A volume created again under the same name gets new tags.
		if err := mem.DeleteVolume(context.Background(), "b"); err != nil {
			t.Fatal(err)
		}
	})
}

// cutBrickRef is the reference cut of a box of size (x, y, z) out of a
// brick bx x by voxels wide and high.
func cutBrickRef(brick []byte, bx, by int, size [3]int, vs int) []byte {
	var out []byte
	for z := range size[2] {
		for y := range size[1] {
			for x := range size[0] {
				i := ((z*by+y)*bx + x) * vs
				out = append(out, brick[i:i+vs]...)
			}
		}
	}
	return out
}

func TestViews_cors(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	putVolume(t, mem, storage.VolumeMeta{Name: "a", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8})
	vs := startViews(t, mem, ViewConfig{CORSOrigins: []string{"https://ok.example"}})
	res, _ := vs.do(t, "GET", "/zarr/a/.zattrs", "Origin", "https://ok.example")
	if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" || !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "ETag") {
		t.Fatalf("listed origin: %d %v", res.StatusCode, res.Header)
	}
	res, _ = vs.do(t, "GET", "/zarr/nope/.zattrs", "Origin", "https://ok.example")
	if res.StatusCode != 404 || res.Header.Get("Access-Control-Allow-Origin") != "https://ok.example" {
		t.Fatalf("404 of a listed origin: %d %v", res.StatusCode, res.Header)
	}
	res, _ = vs.do(t, "GET", "/zarr/a/.zattrs", "Origin", "https://evil.example")
	if res.StatusCode != 403 || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("other origin: %d %v", res.StatusCode, res.Header)
	}
	res, _ = vs.do(t, "OPTIONS", "/zarr/a/.zattrs", "Origin", "https://evil.example", "Access-Control-Request-Method", "GET")
	if res.StatusCode != 403 {
		t.Fatalf("other origin's preflight: %d", res.StatusCode)
	}
	if res, _ = vs.do(t, "GET", "/zarr/a/.zattrs"); res.StatusCode != 200 {
		t.Fatalf("no origin (a program): %d", res.StatusCode)
	}
}

// TestViews_authorize checks that every view path is authorized, before
// anything of the volume is looked at, and that the error's code decides
// the status.
func TestViews_authorize(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	putVolume(t, mem, storage.VolumeMeta{Name: "a", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8})
	var asked []string
	vs := startViews(t, mem, ViewConfig{Authorize: func(r *http.Request, volume string) (context.Context, error) {
		asked = append(asked, volume)
		switch r.Header.Get("Authorization") {
		case "Bearer reader":
			return r.Context(), nil
		case "":
			return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("credentials required"))
		}
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("no"))
	}})
	for _, p := range []string{"/zarr/a/.zattrs", "/zarr3/a/0/c/0/0/0", "/precomputed/a/info", "/precomputed/a/0/0-8_0-8_0-8", "/zarr/nope/.zattrs"} {
		res, _ := vs.do(t, "GET", p)
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") == "" || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("GET %s without credentials: %d %v", p, res.StatusCode, res.Header)
		}
		if res, _ := vs.do(t, "GET", p, "Authorization", "Bearer other"); res.StatusCode != 403 {
			t.Fatalf("GET %s by another: %d", p, res.StatusCode)
		}
		want := 200
		if strings.Contains(p, "nope") {
			want = 404
		}
		if res, _ := vs.do(t, "GET", p, "Authorization", "Bearer reader"); res.StatusCode != want {
			t.Fatalf("GET %s by a reader: %d, want %d", p, res.StatusCode, want)
		}
	}
	if res, _ := vs.do(t, "OPTIONS", "/zarr/a/.zattrs", "Origin", "https://x.example", "Access-Control-Request-Method", "GET"); res.StatusCode != 204 {
		t.Fatalf("a preflight carries no credentials and is answered: %d", res.StatusCode)
	}
}

// TestViews_corrupt_brick flips a bit of a stored brick on disk: the views
// answer 500 and never the brick's bytes.
func TestViews_corrupt_brick(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := storage.Open(dir, storage.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	bricks := putVolume(t, st, storage.VolumeMeta{Name: "c", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8})
	vs := startViews(t, st, ViewConfig{})
	if res, _ := vs.do(t, "GET", "/zarr/c/0/0/0/0"); res.StatusCode != 200 {
		t.Fatalf("before: %d", res.StatusCode)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "c", "*.data"))
	if len(files) == 0 {
		t.Fatal("no data file")
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, bricks[storage.BrickKey{}][:64])
	if at < 0 {
		t.Fatal("brick not found in the data file")
	}
	f, err := os.OpenFile(files[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[at+100] ^ 0x10}, int64(at+100)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, p := range []string{"/zarr/c/0/0/0/0", "/zarr3/c/0/c/0/0/0", "/precomputed/c/0/0-64_0-64_0-64"} {
		res, body := vs.do(t, "GET", p)
		if res.StatusCode != 500 || bytes.Contains(body, bricks[storage.BrickKey{}][:16]) || res.Header.Get("ETag") != "" {
			t.Fatalf("GET %s of a corrupt brick: %d %q", p, res.StatusCode, body[:min(len(body), 200)])
		}
	}
}

func TestViews_transform(t *testing.T) {
	t.Parallel()
	mem := storage.NewMemory(0)
	vs := startViews(t, mem, ViewConfig{})
	ctx := context.Background()
	create := func(m storage.VolumeMeta) {
		if _, err := mem.CreateVolume(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Axis-aligned with a translation that is whole voxels of every level.
	create(storage.VolumeMeta{Name: "aligned", Shape: storage.Shape{X: 200, Y: 100, Z: 50}, DataType: storage.Uint8, LODCount: 3,
		Transform: []float64{0.5, 0, 0, -64, 0, 0.5, 0, 32, 0, 0, 2, 16, 0, 0, 0, 1}, Space: storage.SpaceRAS})
	// Oblique (rotated about z by 30 degrees) in LPS.
	create(storage.VolumeMeta{Name: "oblique", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Float32, LODCount: 2,
		Transform: []float64{0.8660254037844387, -0.5, 0, 10, 0.5, 0.8660254037844387, 0, 20, 0, 0, 1, 30, 0, 0, 0, 1}, Space: storage.SpaceLPS})
	// Axis-aligned, but the origin is not whole voxels.
	create(storage.VolumeMeta{Name: "shifted", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Int16, LODCount: 2,
		Transform: []float64{1, 0, 0, 0.25, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1}})

	type ct struct {
		Type        string
		Scale       []float64
		Translation []float64
	}
	var z struct {
		Multiscales []struct {
			Datasets []struct {
				Path                      string
				CoordinateTransformations []ct
			}
		}
		GoLdm viewAttrs `json:"go-ldm"`
	}
	get := func(path string, v any) {
		t.Helper()
		res, b := vs.do(t, "GET", path)
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, res.StatusCode, b)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	get("/zarr/aligned/.zattrs", &z)
	for l, want := range []struct{ scale, translation []float64 }{
		{[]float64{2, 0.5, 0.5}, []float64{16, 32, -64}},
		{[]float64{4, 1, 1}, []float64{17, 32.25, -63.75}},
		{[]float64{8, 2, 2}, []float64{19, 32.75, -63.25}},
	} {
		d := z.Multiscales[0].Datasets[l]
		if fmt.Sprint(d.CoordinateTransformations[0].Scale) != fmt.Sprint(want.scale) || fmt.Sprint(d.CoordinateTransformations[1].Translation) != fmt.Sprint(want.translation) {
			t.Fatalf("aligned level %d: %+v, want scale %v translation %v", l, d.CoordinateTransformations, want.scale, want.translation)
		}
	}
	if z.GoLdm.TransformExpressed != "exact" || z.GoLdm.Space != "RAS" || len(z.GoLdm.NotExpressed) != 1 || !strings.Contains(z.GoLdm.NotExpressed[0], "anatomical space RAS") {
		t.Fatalf("aligned go-ldm: %+v", z.GoLdm)
	}
	var info struct {
		DataType string `json:"data_type"`
		Scales   []struct {
			Size        []int
			Resolution  []float64
			VoxelOffset []int64 `json:"voxel_offset"`
		}
		GoLdm viewAttrs `json:"go-ldm"`
	}
	get("/precomputed/aligned/info", &info)
	if fmt.Sprint(info.Scales[0].Resolution) != "[500000 500000 2e+06]" || fmt.Sprint(info.Scales[0].VoxelOffset) != "[-128 64 8]" ||
		fmt.Sprint(info.Scales[2].VoxelOffset) != "[-32 16 2]" || fmt.Sprint(info.Scales[2].Size) != "[50 25 13]" || info.GoLdm.TransformExpressed != "exact" {
		t.Fatalf("aligned info: %+v", info)
	}
	// Chunk names are in the offset coordinates.
	if res, _ := vs.do(t, "GET", "/precomputed/aligned/0/-128--64_64-128_8-58"); res.StatusCode != 404 || !strings.Contains(res.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("offset chunk name of a missing brick: %d", res.StatusCode)
	}
	putTile := func(name string, k storage.BrickKey, n int) {
		if _, err := mem.Append(ctx, name, storage.Tile{Value: make([]byte, n), HasKey: true, Key: k}); err != nil {
			t.Fatal(err)
		}
	}
	putTile("aligned", storage.BrickKey{}, 64*64*64)
	if res, b := vs.do(t, "GET", "/precomputed/aligned/0/-128--64_64-128_8-58"); res.StatusCode != 200 || len(b) != 64*64*50 {
		t.Fatalf("offset chunk name: %d, %d bytes", res.StatusCode, len(b))
	}
	if res, _ := vs.do(t, "GET", "/precomputed/aligned/0/0-64_0-64_0-50"); res.StatusCode != 404 {
		t.Fatalf("a chunk name without the offset: %d, want 404", res.StatusCode)
	}

	var g3 struct {
		Attributes struct {
			Ome struct {
				Version     string
				Multiscales []json.RawMessage
			}
			GoLdm viewAttrs `json:"go-ldm"`
		}
	}
	get("/zarr3/oblique/zarr.json", &g3)
	z.GoLdm = g3.Attributes.GoLdm
	if g3.Attributes.Ome.Version != "0.5" || len(g3.Attributes.Ome.Multiscales) != 1 {
		t.Fatalf("oblique zarr.json: %+v", g3)
	}
	if z.GoLdm.TransformExpressed != "spacing only" || z.GoLdm.Space != "LPS" || len(z.GoLdm.NotExpressed) != 2 || z.GoLdm.Transform[1] != -0.5 {
		t.Fatalf("oblique go-ldm: %+v", z.GoLdm)
	}
	get("/zarr/oblique/.zattrs", &z)
	if d := z.Multiscales[0].Datasets[1]; fmt.Sprint(d.CoordinateTransformations[0].Scale) != "[2 2 2]" || fmt.Sprint(d.CoordinateTransformations[1].Translation) != "[0.5 0.5 0.5]" {
		t.Fatalf("oblique level 1: %+v", d)
	}
	get("/precomputed/shifted/info", &info)
	if fmt.Sprint(info.Scales[0].VoxelOffset) != "[0 0 0]" || info.GoLdm.TransformExpressed != "spacing only" || info.DataType != "int16" {
		t.Fatalf("shifted info: %+v", info)
	}
}

func TestViews_unknown_types(t *testing.T) {
	t.Parallel()
	if _, _, err := zarrDtype(storage.DataType(99)); err == nil {
		t.Fatal("zarrDtype(99): no error")
	}
	_, err := precomputedInfo(storage.VolumeInfo{VolumeMeta: storage.VolumeMeta{Name: "x", Shape: storage.Shape{X: 1, Y: 1, Z: 1}, DataType: storage.DataType(99)}})
	var ve *viewError
	if !errors.As(err, &ve) || ve.status != http.StatusNotImplemented || !strings.Contains(ve.msg, "not one of Neuroglancer precomputed's types") {
		t.Fatalf("precomputedInfo of an unknown type: %v", err)
	}
	for _, d := range []storage.DataType{storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32} {
		if _, err := precomputedDtype(d); err != nil {
			t.Fatal(err)
		}
		if _, _, err := zarrDtype(d); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzParseChunkName(f *testing.F) {
	for _, s := range []string{"0-64_0-64_0-40", "64-100_0-64_0-40", "-128--64_64-128_8-58", "0-1_0-1_0-1", "", "-", "0-0_0-0_0-0",
		"00-64_0-64_0-40", "-0-64_0-64_0-40", "0-64_0-64_0-40_", "9223372036854775807-1_0-1_0-1", "1-2_3-4_5-6x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		box, ok := parseChunkName(s)
		if !ok {
			return
		}
		// A name that parses prints back as itself.
		if back := fmt.Sprintf("%d-%d_%d-%d_%d-%d", box[0][0], box[0][1], box[1][0], box[1][1], box[2][0], box[2][1]); back != s {
			t.Fatalf("%q parsed as %v, which prints as %q", s, box, back)
		}
		for _, a := range box {
			if a[0] >= a[1] {
				t.Fatalf("%q: empty range %v", s, a)
			}
		}
		// Whatever it names, the chunk check does not panic.
		info := storage.VolumeInfo{VolumeMeta: storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 100, Y: 70, Z: 40}, DataType: storage.Uint8, BrickShape: storage.DefaultBrickShape, LODCount: 1}}
		if key, size, err := precomputedChunk(info, 0, [3]int64{-5, 0, 3}, box); err == nil {
			g := info.BrickGrid(0)
			if key.X >= g.X || key.Y >= g.Y || key.Z >= g.Z || size[0] == 0 || size[0] > 64 || size[1] > 64 || size[2] > 64 {
				t.Fatalf("%q: key %v size %v outside the grid", s, key, size)
			}
		}
	})
}

func FuzzParseViewPath(f *testing.F) {
	for _, s := range []string{"/zarr/a/0/0/0/0", "/zarr3/a/0/c/0/0/0", "/precomputed/a/info", "/zarr/", "/zarr/a/", "/zarr/../b", "/zarr/a//0",
		"/precomputed/a/0/0-64_0-64_0-40", "/zarr/a/./0", "/zarr/A/0", "/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vp, err := parseViewPath(s)
		if err != nil {
			return
		}
		if storage.ValidateName(vp.volume) != nil {
			t.Fatalf("%q: volume %q is not a valid name", s, vp.volume)
		}
		for _, seg := range vp.rest {
			if seg == "" || seg == "." || seg == ".." || strings.Contains(seg, "/") {
				t.Fatalf("%q: segment %q", s, seg)
			}
		}
		info := storage.VolumeInfo{VolumeMeta: storage.VolumeMeta{Name: vp.volume, Shape: storage.Shape{X: 100, Y: 70, Z: 40}, DataType: storage.Uint8, BrickShape: storage.DefaultBrickShape, LODCount: 2}}
		if len(vp.rest) > 0 {
			if l, err := parseLevel(info, vp.rest[0]); err == nil && l >= 2 {
				t.Fatalf("%q: level %d past the pyramid", s, l)
			}
		}
		if len(vp.rest) >= 3 {
			if k, err := zarrChunkKey(info, 0, vp.rest[len(vp.rest)-3:]); err == nil && (k.X >= 2 || k.Y >= 2 || k.Z >= 1) {
				t.Fatalf("%q: key %v outside the grid", s, k)
			}
		}
	})
}
