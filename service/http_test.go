package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// seedVolume creates volume "v" with tiles of the given sizes.
func seedVolume(tb testing.TB, store service.Tiles, sizes ...int) {
	tb.Helper()
	ctx := context.Background()
	if _, err := store.CreateVolume(ctx, storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8}); err != nil {
		tb.Fatal(err)
	}
	for i, n := range sizes {
		if _, err := store.Append(ctx, "v", storage.Tile{Value: tileBytes(n, byte(i)), HasKey: true, Key: storage.BrickKey{X: uint32(i)}}); err != nil {
			tb.Fatal(err)
		}
	}
}

func getURL(base, procedure, jsonMsg string) string {
	return base + procedure + "?encoding=json&message=" + url.QueryEscape(jsonMsg)
}

// TestReadTile_HTTPGetETagAnd304 reads a tile with a plain HTTP GET,
// checks the cache headers, and revalidates it with If-None-Match.
func TestReadTile_HTTPGetETagAnd304(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	seedVolume(t, ts.Store, 100, 200)
	hc := ts.httpClient(t)
	u := getURL(ts.URL, "/ldm.v1.TileService/ReadTile", `{"volume":"v","offset":1}`)
	res, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET ReadTile: %s %s", res.Status, body)
	}
	var msg struct {
		Tile struct {
			Value  []byte `json:"value"`
			Offset string `json:"offset"`
		} `json:"tile"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || !bytes.Equal(msg.Tile.Value, tileBytes(200, 1)) || msg.Tile.Offset != "1" {
		t.Fatalf("GET ReadTile body %.80s: %v", body, err)
	}
	etag := res.Header.Get("ETag")
	// Without a generation the URL may name another volume of the same
	// name later: revalidate.
	if etag == "" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET ReadTile headers: ETag %q Cache-Control %q, want no-cache", etag, res.Header.Get("Cache-Control"))
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("If-None-Match", etag)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotModified || res.Header.Get("ETag") != etag {
		t.Fatalf("conditional GET: %s, ETag %q", res.Status, res.Header.Get("ETag"))
	}
	// Another offset has another tag.
	req, _ = http.NewRequest(http.MethodGet, getURL(ts.URL, "/ldm.v1.TileService/ReadTile", `{"volume":"v","offset":0}`), nil)
	req.Header.Set("If-None-Match", etag)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("conditional GET of another offset: %s", res.Status)
	}

	// The connect-go client's GET support sees the same: 304 is
	// connect.IsNotModifiedError.
	c := ldmv1connect.NewTileServiceClient(hc, ts.URL, connect.WithHTTPGet())
	creq := connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 1})
	creq.Header().Set("If-None-Match", etag)
	_, err = c.ReadTile(context.Background(), creq)
	if !connect.IsNotModifiedError(err) {
		t.Fatalf("connect GET with If-None-Match: %v, want not modified", err)
	}
}

// TestGetBrick_HTTPGetRevalidates checks GetBrick over GET: an ETag that
// changes when the brick is written again.
func TestGetBrick_HTTPGetRevalidates(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	seedVolume(t, ts.Store, 10)
	hc := ts.httpClient(t)
	u := getURL(ts.URL, "/ldm.v1.VolumeService/GetBrick", `{"volume":"v","key":{"lod":0,"x":0,"y":0,"z":0}}`)
	res, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	etag := res.Header.Get("ETag")
	if res.StatusCode != 200 || etag == "" || res.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("GET GetBrick: %s ETag %q Cache-Control %q", res.Status, etag, res.Header.Get("Cache-Control"))
	}
	conditional := func() int {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("If-None-Match", etag)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := conditional(); got != http.StatusNotModified {
		t.Fatalf("unchanged brick: %d, want 304", got)
	}
	if _, err := ts.Store.Append(context.Background(), "v", storage.Tile{Value: []byte("new"), HasKey: true}); err != nil {
		t.Fatal(err)
	}
	if got := conditional(); got != http.StatusOK {
		t.Fatalf("rewritten brick: %d, want 200", got)
	}
}

// TestService_CompressionIsOptIn checks that tiles are not gzipped for
// a client that accepts gzip, unless Config.Compress is set.
func TestService_CompressionIsOptIn(t *testing.T) {
	t.Parallel()
	for _, compress := range []bool{false, true} {
		ts := startServer(t, serverOptions{config: func(c *service.Config) { c.Compress = compress }})
		seedVolume(t, ts.Store, 64<<10)
		tr := service.NewTransport(nil)
		tr.DisableCompression = true // see the raw Content-Encoding
		t.Cleanup(tr.CloseIdleConnections)
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.TileService/ReadTile", strings.NewReader(`{"volume":"v","offset":0}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		got := res.Header.Get("Content-Encoding") == "gzip"
		if got != compress {
			t.Fatalf("Compress=%v: response gzip = %v (status %s)", compress, got, res.Status)
		}
		// A connect-go client decodes either.
		c := ts.clients(t, protocols[2])
		r, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"}))
		if err != nil || !bytes.Equal(r.Msg.GetTile().GetValue(), tileBytes(64<<10, 0)) {
			t.Fatalf("Compress=%v: grpc ReadTile: %v", compress, err)
		}
	}
}

// TestService_MalformedRequests checks the answers to bodies and content
// types that are not the protocol's.
func TestService_MalformedRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	seedVolume(t, ts.Store, 10)
	hc := ts.httpClient(t)
	post := func(contentType, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.TileService/ReadTile", strings.NewReader(body))
		req.Header.Set("Content-Type", contentType)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := post("application/json", `{"volume": "v", "offset": `); code != http.StatusBadRequest || !strings.Contains(body, `"invalid_argument"`) {
		t.Fatalf("malformed JSON: %d %s", code, body)
	}
	if code, body := post("application/json", `{"volume": 7}`); code != http.StatusBadRequest || !strings.Contains(body, `"invalid_argument"`) {
		t.Fatalf("JSON of the wrong type: %d %s", code, body)
	}
	if code, _ := post("text/plain", `hello`); code != http.StatusUnsupportedMediaType {
		t.Fatalf("wrong content type: %d, want 415", code)
	}
	if code, body := post("application/json", `{"volume":"v","offset":0}`); code != 200 {
		t.Fatalf("well-formed JSON: %d %s", code, body)
	}
}

// TestService_CORS checks a browser preflight and the exposed headers.
func TestService_CORS(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{config: func(c *service.Config) { c.CORSOrigins = []string{"http://viewer.example"} }})
	seedVolume(t, ts.Store, 10)
	hc := ts.httpClient(t)
	req, _ := http.NewRequest(http.MethodOptions, ts.URL+"/ldm.v1.VolumeService/StreamBricks", nil)
	req.Header.Set("Origin", "http://viewer.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type,connect-protocol-version,x-grpc-web")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "http://viewer.example" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Headers"), "X-Grpc-Web") {
		t.Fatalf("preflight: %s %v", res.Status, res.Header)
	}
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.VolumeService/ListVolumes", strings.NewReader(`{}`))
	req.Header.Set("Origin", "http://viewer.example")
	req.Header.Set("Content-Type", "application/json")
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "Grpc-Status") {
		t.Fatalf("CORS call: %s %v", res.Status, res.Header)
	}
	req.Header.Set("Origin", "http://evil.example")
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/ldm.v1.VolumeService/ListVolumes", strings.NewReader(`{}`))
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Content-Type", "application/json")
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("an origin not in the list was allowed")
	}
	// A cacheable GET without Origin still varies with it, so a shared
	// cache does not serve it, without CORS headers, to a browser.
	res, err = hc.Get(getURL(ts.URL, "/ldm.v1.TileService/ReadTile", `{"volume":"v","offset":0}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !slices.Contains(res.Header.Values("Vary"), "Origin") {
		t.Fatalf("GET without Origin: %s, Vary %q", res.Status, res.Header.Values("Vary"))
	}
}

// TestService_HealthAndReflection checks grpc.health.v1 and both
// reflection versions with their connect clients.
func TestService_HealthAndReflection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	hc := ts.httpClient(t)
	ctx := context.Background()
	health := grpchealth.NewClient(hc, ts.URL, connect.WithGRPC())
	for _, svc := range []string{"", "ldm.v1.TileService", "ldm.v1.VolumeService", "ldm.v1.ClusterService"} {
		res, err := health.Check(ctx, &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Fatalf("health of %q: %v %v", svc, res, err)
		}
	}
	refl := grpcreflect.NewClient(hc, ts.URL, connect.WithGRPC())
	stream := refl.NewStream(ctx)
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"ldm.v1.TileService": false, "ldm.v1.VolumeService": false, "ldm.v1.ClusterService": false, "grpc.health.v1.Health": false}
	for _, n := range names {
		if _, ok := want[string(n)]; ok {
			want[string(n)] = true
		}
	}
	for n, seen := range want {
		if !seen {
			t.Fatalf("reflection does not list %s (got %v)", n, names)
		}
	}
	fds, err := stream.FileContainingSymbol("ldm.v1.TileService")
	if err != nil || len(fds) == 0 {
		t.Fatalf("reflection FileContainingSymbol: %v", err)
	}
	// v1alpha answers too (older grpcurl).
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", bytes.NewReader([]byte{0, 0, 0, 0, 2, 0x3a, 0}))
	req.Header.Set("Content-Type", "application/grpc")
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Trailer.Get("Grpc-Status") != "0" || !bytes.Contains(body, []byte("ldm.v1.TileService")) {
		t.Fatalf("v1alpha reflection: %s grpc-status %q", res.Status, res.Trailer.Get("Grpc-Status"))
	}
}

// panicStore panics on Volume, to test recovery.
type panicStore struct{ service.Tiles }

func (panicStore) Volume(string) (storage.VolumeInfo, error) { panic("boom") }

// TestService_PanicIsInternalError checks that a panicking handler
// answers Internal and the server keeps serving.
func TestService_PanicIsInternalError(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{store: panicStore{storage.NewMemory(0)}})
	for _, p := range protocols {
		c := ts.clients(t, p)
		_, err := c.volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "v"}))
		assertCode(t, err, connect.CodeInternal)
		s, err := c.tiles.ReadTileStream(context.Background(), connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v"}))
		if err == nil {
			for s.Receive() {
			}
			err = s.Err()
			s.Close()
		}
		assertCode(t, err, connect.CodeInternal)
		if _, err := c.volumes.ListVolumes(context.Background(), connect.NewRequest(&ldmv1.ListVolumesRequest{})); err != nil {
			t.Fatalf("after a panic: %v", err)
		}
	}
}
