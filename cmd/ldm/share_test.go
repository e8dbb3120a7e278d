package main

import (
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

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
	if !strings.HasPrefix(fields["viewer"], base+"/?share="+tok) || fields["zarr"] != base+"/share/"+tok+"/zarr/demo/" || id == "" {
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
