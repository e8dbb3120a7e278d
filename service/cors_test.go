package service_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// corsCall sends one request with the given Origin and Sec-Fetch-Site
// headers (empty: not sent) and returns the response with its body read.
func corsCall(tb testing.TB, hc *http.Client, method, url, contentType, body, origin, fetchSite string, extra ...string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if fetchSite != "" {
		req.Header.Set("Sec-Fetch-Site", fetchSite)
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	res, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// volumeExists reports whether the store still has volume v.
func volumeExists(tb testing.TB, store service.Tiles) bool {
	tb.Helper()
	_, err := store.Volume("v")
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		tb.Fatal(err)
	}
	return err == nil
}

// TestCORS_DefaultRefusesCrossOriginWrites replays the attack of a page
// from another origin that deletes a volume through the user's browser: a
// preflighted Connect call, a "simple" text/plain POST and a form POST
// that a browser sends without a preflight. The server refuses each itself
// and the volume stays; the same call from the server's own origin, and
// from a program that sends no Origin, works.
func TestCORS_DefaultRefusesCrossOriginWrites(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	seedVolume(t, ts.Store, 10)
	hc := ts.httpClient(t)
	del := ts.URL + "/ldm.v1.VolumeService/DeleteVolume"
	evil := "http://127.0.0.1:1" // another port on the same host

	t.Run("preflight", func(t *testing.T) {
		res, _ := corsCall(t, hc, http.MethodOptions, del, "", "", evil, "", "Access-Control-Request-Method", "POST", "Access-Control-Request-Headers", "content-type,connect-protocol-version")
		if res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("preflight of a cross-origin DeleteVolume: %s, Allow-Origin %q", res.Status, res.Header.Get("Access-Control-Allow-Origin"))
		}
	})
	for _, c := range []struct{ name, contentType, body, fetchSite string }{
		{"connect_json", "application/json", `{"name":"v"}`, "cross-site"},
		{"simple_text_plain", "text/plain", `{"name":"v"}`, ""},
		{"simple_form", "application/x-www-form-urlencoded", `name=v`, "same-site"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, body := corsCall(t, hc, http.MethodPost, del, c.contentType, c.body, evil, c.fetchSite)
			if res.StatusCode != http.StatusForbidden || !strings.Contains(body, "--cors-origin") {
				t.Fatalf("cross-origin DeleteVolume: %s %s", res.Status, body)
			}
			if res.Header.Get("Access-Control-Allow-Origin") != "" {
				t.Fatalf("refused call has Allow-Origin %q", res.Header.Get("Access-Control-Allow-Origin"))
			}
			if !volumeExists(t, ts.Store) {
				t.Fatal("the volume was deleted by a cross-origin call")
			}
		})
	}
	t.Run("no_origin_but_cross_site_fetch", func(t *testing.T) {
		res, body := corsCall(t, hc, http.MethodPost, del, "application/json", `{"name":"v"}`, "", "cross-site")
		if res.StatusCode != http.StatusForbidden || !volumeExists(t, ts.Store) {
			t.Fatalf("cross-site DeleteVolume without Origin: %s %s", res.Status, body)
		}
	})
	t.Run("reads_from_any_origin", func(t *testing.T) {
		res, body := corsCall(t, hc, http.MethodGet, getURL(ts.URL, "/ldm.v1.TileService/ReadTile", `{"volume":"v","offset":0}`), "", "", "https://neuroglancer.example", "cross-site")
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(res.Header.Get("Access-Control-Expose-Headers"), "ETag") {
			t.Fatalf("cross-origin GET ReadTile: %s %v %s", res.Status, res.Header, body)
		}
		res, _ = corsCall(t, hc, http.MethodOptions, ts.URL+"/ldm.v1.VolumeService/StreamBricks", "", "", "https://neuroglancer.example", "", "Access-Control-Request-Method", "POST")
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("preflight of a cross-origin StreamBricks: %s %v", res.Status, res.Header)
		}
		res, body = corsCall(t, hc, http.MethodPost, ts.URL+"/ldm.v1.VolumeService/ListVolumes", "application/json", `{}`, "https://neuroglancer.example", "cross-site")
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("cross-origin ListVolumes: %s %s", res.Status, body)
		}
	})
	t.Run("same_origin_and_programs", func(t *testing.T) {
		if _, err := ts.Store.CreateVolume(context.Background(), storage.VolumeMeta{Name: "w", Shape: storage.Shape{X: 1, Y: 1, Z: 1}, DataType: storage.Uint8}); err != nil {
			t.Fatal(err)
		}
		res, body := corsCall(t, hc, http.MethodPost, del, "application/json", `{"name":"w"}`, "", "")
		if res.StatusCode != 200 {
			t.Fatalf("DeleteVolume without Origin: %s %s", res.Status, body)
		}
		res, body = corsCall(t, hc, http.MethodPost, del, "application/json", `{"name":"v"}`, ts.URL, "same-origin")
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "" || volumeExists(t, ts.Store) {
			t.Fatalf("same-origin DeleteVolume: %s %v %s", res.Status, res.Header, body)
		}
	})
}

// TestCORS_OriginsList allows the listed origins, reads and writes, and
// refuses the others; "*" allows every origin.
func TestCORS_OriginsList(t *testing.T) {
	t.Parallel()
	t.Run("listed", func(t *testing.T) {
		ts := startServer(t, serverOptions{config: func(c *service.Config) { c.CORSOrigins = []string{"http://viewer.example"} }})
		seedVolume(t, ts.Store, 10)
		hc := ts.httpClient(t)
		res, body := corsCall(t, hc, http.MethodGet, getURL(ts.URL, "/ldm.v1.TileService/ReadTile", `{"volume":"v","offset":0}`), "", "", "http://other.example", "cross-site")
		if res.StatusCode != http.StatusForbidden {
			t.Fatalf("GET from an origin not listed: %s %s", res.Status, body)
		}
		res, body = corsCall(t, hc, http.MethodPost, ts.URL+"/ldm.v1.VolumeService/DeleteVolume", "application/json", `{"name":"v"}`, "http://viewer.example", "cross-site")
		if res.StatusCode != 200 || res.Header.Get("Access-Control-Allow-Origin") != "http://viewer.example" || volumeExists(t, ts.Store) {
			t.Fatalf("DeleteVolume from a listed origin: %s %v %s", res.Status, res.Header, body)
		}
	})
	t.Run("any", func(t *testing.T) {
		ts := startServer(t, serverOptions{config: func(c *service.Config) { c.CORSOrigins = []string{"*"} }})
		seedVolume(t, ts.Store, 10)
		hc := ts.httpClient(t)
		res, _ := corsCall(t, hc, http.MethodOptions, ts.URL+"/ldm.v1.VolumeService/DeleteVolume", "", "", "http://other.example", "", "Access-Control-Request-Method", "POST")
		if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("preflight with '*': %s %v", res.Status, res.Header)
		}
		res, body := corsCall(t, hc, http.MethodPost, ts.URL+"/ldm.v1.VolumeService/DeleteVolume", "application/json", `{"name":"v"}`, "http://other.example", "cross-site")
		if res.StatusCode != 200 || volumeExists(t, ts.Store) {
			t.Fatalf("DeleteVolume with '*': %s %s", res.Status, body)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, o := range []string{"viewer.example", "ftp://viewer.example", "http://viewer.example/path"} {
			if _, err := service.New(service.Config{Store: storage.NewMemory(0), CORSOrigins: []string{o}}); err == nil {
				t.Errorf("origin %q accepted", o)
			}
		}
	})
}
