package main

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// TestShare_create_and_revoke runs `ldm share VOLUME` against `ldm serve
// --share-key`, reads the volume through the printed link, and `ldm share
// revoke` stops the link without a restart.
func TestShare_create_and_revoke(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	out, stderr, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "root")
	if err != nil {
		t.Fatalf("token create: %v %s", err, stderr)
	}
	root := strings.TrimSpace(out)
	key := filepath.Join(dir, "share.key")
	base := startTestServer(t, "--demo", "--tokens", tokens, "--share-key", key, "--auth-reload", "10ms")

	out, stderr, err = ldmCmd(t, "", "share", "demo", "--ttl", "2h", "--server", base, "--token", root)
	if err != nil {
		t.Fatalf("ldm share: %v %s", err, stderr)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fields[k] = strings.TrimSpace(v)
	}
	tok, id := fields["token"], fields["id"]
	if !strings.HasPrefix(fields["viewer"], base+"/?share="+tok) || fields["zarr"] != base+"/share/"+tok+"/zarr/demo/" || fields["zarr3"] != base+"/share/"+tok+"/zarr3/demo/" || id == "" {
		t.Fatalf("ldm share printed %q", out)
	}
	exp, err := time.Parse(time.RFC3339, fields["expires"])
	if err != nil || exp.Before(time.Now().Add(time.Hour)) || exp.After(time.Now().Add(3*time.Hour)) {
		t.Fatalf("expires %q: %v", fields["expires"], err)
	}
	get := func() int {
		resp, err := http.Get(base + "/share/" + tok + "/ldm.v1.VolumeService/GetBrick?encoding=json&message=" + url.QueryEscape(`{"volume":"demo","key":{}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("GetBrick through the share path: %d", code)
	}
	for _, u := range []string{fields["zarr"] + ".zattrs", fields["zarr3"] + "zarr.json", strings.TrimPrefix(fields["precomputed"], "precomputed://") + "/info"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", u, resp.StatusCode)
		}
	}
	if _, stderr, err := ldmCmd(t, "", "share", "demo", "--server", base, "--token", tok); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("a share making a share: %v %s", err, stderr)
	}
	if _, _, err := ldmCmd(t, "", "share", "revoke", id); err == nil || exitCode(err) != 2 {
		t.Fatalf("revoke without a file: %v (exit %d), want a usage error", err, exitCode(err))
	}
	if out, stderr, err := ldmCmd(t, "", "share", "revoke", id, "--share-key", key); err != nil || !strings.Contains(out, id) {
		t.Fatalf("ldm share revoke: %v %s %s", err, out, stderr)
	}
	testutil.WaitFor(t, 10*time.Second, "the revocation to load", func() bool { return get() == http.StatusUnauthorized })
}

// TestViewer_shareLink opens the viewer link that `ldm share` prints in
// headless Chromium: with no token typed, the page sends the link's share
// token and loads its volume; the volume list shows that volume only.
func TestViewer_shareLink(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	out, stderr, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "root")
	if err != nil {
		t.Fatalf("token create: %v %s", err, stderr)
	}
	base := startTestServer(t, "--demo", "--tokens", tokens, "--share-key", filepath.Join(dir, "share.key"))
	root := strings.TrimSpace(out)
	if _, stderr, err := ldmCmd(t, "", "import", "--demo", "--name", "other", "-q", "--server", base, "--token", root); err != nil {
		t.Fatalf("import: %v %s", err, stderr)
	}
	out, stderr, err = ldmCmd(t, "", "share", "demo", "--ttl", "1h", "--server", base, "--token", root)
	if err != nil {
		t.Fatalf("ldm share: %v %s", err, stderr)
	}
	link := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "viewer:"))
	ctx := testutil.NewBrowser(t, 1280, 800)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(link)); err != nil {
		t.Fatal(err)
	}
	st := waitLoaded(t, ctx, "demo", time.Minute)
	if st.Error != "" || st.Stats.Bricks == 0 {
		t.Fatalf("through the share link: error %q, %d bricks", st.Error, st.Stats.Bricks)
	}
	listed, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#volumes button[data-volume]")].map(b => b.dataset.volume)`))
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0] != "demo" {
		t.Fatalf("the share link lists %v, want [demo]", listed)
	}
}

// TestShare_not_configured: a server without --share-key refuses to make
// share links and says how to turn them on.
func TestShare_not_configured(t *testing.T) {
	t.Parallel()
	base := startTestServer(t, "--demo")
	_, stderr, err := ldmCmd(t, "", "share", "demo", "--server", base)
	if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "--share-key") {
		t.Fatalf("ldm share without a share key: %v %s", err, stderr)
	}
}
