package web

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

func TestHandler_Serve(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	get := func(path string, hdr map[string]string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `src="app.js"`},
		{"/index.html", "text/html", "go-ldm viewer"},
		{"/app.js", "text/javascript", "streamBricks"},
		{"/style.css", "text/css", "#views"},
		{"/stream.js", "text/javascript", "streamBricks"},
	} {
		res := get(tc.path, nil)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.contains) {
			t.Fatalf("GET %s: %d %s, body contains %q: %v", tc.path, res.StatusCode, res.Header.Get("Content-Type"), tc.contains, strings.Contains(string(body), tc.contains))
		}
		if !strings.Contains(res.Header.Get("Content-Security-Policy"), "connect-src 'self'") || res.Header.Get("ETag") == "" {
			t.Fatalf("GET %s: headers %v", tc.path, res.Header)
		}
		if again := get(tc.path, map[string]string{"If-None-Match": res.Header.Get("ETag")}); again.StatusCode != http.StatusNotModified {
			t.Fatalf("GET %s with its ETag: %d, want 304", tc.path, again.StatusCode)
		}
	}
	for _, p := range []string{"/nope.js", "/gen/ldm/v1/types_pb.ts", "/../embed.go"} {
		if res := get(p, nil); res.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s: %d, want 404", p, res.StatusCode)
		}
	}
}

// TestBundle_noExternalFetch checks that the bundle names no other origin:
// the viewer fetches only from the server that serves it.
func TestBundle_noExternalFetch(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(FS(), "*")
	if err != nil || len(names) < 5 {
		t.Fatalf("dist holds %v (%v)", names, err)
	}
	for _, name := range names {
		b, err := fsReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, bad := range []string{"https://", "http://", "//cdn", "fonts.googleapis"} {
			if i := strings.Index(string(b), bad); i >= 0 {
				ctx := string(b[max(0, i-60):min(len(b), i+60)])
				t.Errorf("%s contains %q: ...%s...", name, bad, ctx)
			}
		}
	}
}

func fsReadFile(name string) ([]byte, error) {
	f, err := FS().Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// TestHandlerWith_volume checks that the page asked for with ?volume= embeds
// what Options.Volume returns for that name, before the page's script and
// escaped so that it cannot end its element, and is not cached; any other
// page is the static file.
func TestHandlerWith_volume(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(HandlerWith(Options{Volume: func(r *http.Request, name string) ([]byte, bool) {
		if name == "missing" {
			return nil, false
		}
		return []byte(name + "</script>"), true
	}}))
	t.Cleanup(srv.Close)
	get := func(path string) (*http.Response, string) {
		t.Helper()
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(body)
	}
	res, page := get("/?volume=a%3C%2Fscript%3E")
	i, j := strings.Index(page, `<script type="application/json" id="ldm-volume">`), strings.Index(page, `<script type="module"`)
	if res.StatusCode != 200 || i < 0 || j < i || res.Header.Get("Cache-Control") != "no-store" || res.Header.Get("ETag") != "" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /?volume=: %d %v\n%s", res.StatusCode, res.Header, page)
	}
	data := page[i+len(`<script type="application/json" id="ldm-volume">`) : strings.Index(page[i:], "</script>")+i]
	var d struct{ Name, GetVolume string }
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		t.Fatalf("embedded %q: %v", data, err)
	}
	if b, _ := base64.StdEncoding.DecodeString(d.GetVolume); d.Name != "a</script>" || string(b) != "a</script></script>" {
		t.Fatalf("embedded %+v", d)
	}
	for _, p := range []string{"/", "/?volume=missing", "/index.html?volume="} {
		res, page := get(p)
		if res.StatusCode != 200 || strings.Contains(page, "ldm-volume") || res.Header.Get("ETag") == "" {
			t.Fatalf("GET %s: %d %v", p, res.StatusCode, res.Header)
		}
	}
}

// TestBundle_zstdDecoderOwnFile checks that the zstd decoder (WebAssembly,
// about 75 KB) is a file of its own that app.js and stream.js import by
// the name it has in dist, and that neither bundle carries it.
func TestBundle_zstdDecoderOwnFile(t *testing.T) {
	t.Parallel()
	dec, err := fs.Glob(FS(), "zstd_wasm.*.js")
	if err != nil || len(dec) != 1 {
		t.Fatalf("dist holds decoder files %v (%v), want one", dec, err)
	}
	b, err := fsReadFile(dec[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "data:application/wasm") {
		t.Fatalf("%s does not hold the WebAssembly decoder", dec[0])
	}
	imp := regexp.MustCompile(`import\("\./(zstd_wasm\.[0-9a-f]+\.js)"\)`)
	for _, name := range []string{"app.js", "stream.js"} {
		b, err := fsReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "data:application/wasm") {
			t.Errorf("%s carries the WebAssembly decoder", name)
		}
		if m := imp.FindSubmatch(b); m == nil || string(m[1]) != dec[0] {
			t.Errorf("%s imports the decoder as %q, want %q", name, m, dec[0])
		}
	}
}

// TestHandler_immutable checks that a file named with its content's hash
// is served to be kept (immutable, a year), and any other file, including
// one whose name carries a hash that is not its own, to be revalidated.
func TestHandler_immutable(t *testing.T) {
	t.Parallel()
	body := []byte("export const x = 1;\n")
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:12])
	files := fstest.MapFS{
		"index.html":                      {Data: []byte(`<script type="module" src="app.js"></script>`)},
		"dec." + h + ".js":                {Data: body},
		"other." + h + ".js":              {Data: []byte("export const x = 2;\n")},
		h + ".js":                         {Data: body},
		"dec.000000000000000000000000.js": {Data: body},
		"dir/dec." + h + ".js":            {Data: body},
		"plain.js":                        {Data: body},
	}
	srv := httptest.NewServer(handler(files, Options{}))
	t.Cleanup(srv.Close)
	for name, want := range map[string]string{
		"dec." + h + ".js":                "public, max-age=31536000, immutable",
		"dir/dec." + h + ".js":            "public, max-age=31536000, immutable",
		"other." + h + ".js":              "no-cache",
		h + ".js":                         "no-cache",
		"dec.000000000000000000000000.js": "no-cache",
		"plain.js":                        "no-cache",
		"":                                "no-cache",
	} {
		res, err := http.Get(srv.URL + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get("Cache-Control") != want || res.Header.Get("ETag") == "" || res.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("GET /%s: %d, Cache-Control %q (want %q), headers %v", name, res.StatusCode, res.Header.Get("Cache-Control"), want, res.Header)
		}
	}
	// The real decoder file is served to be kept.
	dec, _ := fs.Glob(FS(), "zstd_wasm.*.js")
	srv2 := httptest.NewServer(Handler())
	t.Cleanup(srv2.Close)
	for _, name := range dec {
		res, err := http.Get(srv2.URL + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/javascript") || !strings.Contains(res.Header.Get("Cache-Control"), "immutable") || !strings.Contains(res.Header.Get("Content-Security-Policy"), "'wasm-unsafe-eval'") {
			t.Errorf("GET /%s: %d %v", name, res.StatusCode, res.Header)
		}
	}
}

// TestHandlerWith_decoderPreload checks that the page of a zstd volume
// asks the browser to fetch and run the decoder's file at once (an async
// module script before the page's script) and that a raw volume's page
// does not name it.
func TestHandlerWith_decoderPreload(t *testing.T) {
	t.Parallel()
	dec, err := fs.Glob(FS(), "zstd_wasm.*.js")
	if err != nil || len(dec) != 1 {
		t.Fatalf("dist holds decoder files %v (%v), want one", dec, err)
	}
	srv := httptest.NewServer(HandlerWith(Options{Volume: func(r *http.Request, name string) ([]byte, bool) {
		codec := ldmv1.Codec_CODEC_RAW
		if name == "z" {
			codec = ldmv1.Codec_CODEC_ZSTD
		}
		b, err := proto.Marshal(&ldmv1.GetVolumeResponse{Volume: &ldmv1.Volume{Name: name, Codec: codec}})
		return b, err == nil
	}}))
	t.Cleanup(srv.Close)
	for name, want := range map[string]bool{"z": true, "r": false} {
		res, err := http.Get(srv.URL + "/?volume=" + name)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		page := string(b)
		link := `<script type="module" async src="` + dec[0] + `"></script>`
		i, j := strings.Index(page, link), strings.Index(page, `<script type="module" src="app.js"`)
		if got := i >= 0 && i < j; got != want || (!want && strings.Contains(page, "zstd_wasm")) || !strings.Contains(page, `id="ldm-volume"`) {
			t.Errorf("page of volume %s: preloads the decoder %v, want %v\n%s", name, got, want, page)
		}
	}
}
