package web

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
	for _, name := range []string{"index.html", "app.js", "stream.js", "style.css"} {
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
