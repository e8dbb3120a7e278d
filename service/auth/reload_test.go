package auth

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmclient "github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// TestAuth_PolicyReloadWithOpenStreams changes the policy file under a
// running server while a follow stream and an ingest stream are open: the
// poller reloads it, both streams are denied at their next message, nothing
// more is written, and new calls see the new policy at once.
func TestAuth_PolicyReloadWithOpenStreams(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{
		policy: "p, role:writer, volumes/*, read\np, role:writer, volumes/*, write\n",
		reload: 10 * time.Millisecond,
	})
	for proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			// Subtests share the server, so each restores the policy.
			if err := WriteFileAtomic(ts.policyFile, []byte("p, role:writer, volumes/*, read\np, role:writer, volumes/*, write\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "policy allowing writes", func() bool {
				d, _ := ts.auth.Authorizer().Allow(Identity{Subject: "x", Roles: []string{"writer"}}, VolumeObject(testVolume), ActionWrite)
				return d.Allowed
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := ts.client(t, proto, cred{creds: Credentials{Token: ts.tokens["writer"]}})

			follow, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: testVolume, Offset: ts.nextOffset(t) - 1, Follow: true}))
			if err != nil {
				t.Fatal(err)
			}
			defer follow.Close()
			if !follow.Receive() {
				t.Fatalf("follow stream: %v", follow.Err())
			}
			ingest := c.tiles.WriteTileStream(ctx)
			defer ingest.CloseResponse()
			if err := ingest.Send(&ldmv1.WriteTileStreamRequest{Volume: testVolume, Tile: tile(1)}); err != nil {
				t.Fatal(err)
			}
			if _, err := ingest.Receive(); err != nil {
				t.Fatalf("ingest before the reload: %v", err)
			}
			if !follow.Receive() { // the follow stream sees the ingested tile
				t.Fatalf("follow stream: %v", follow.Err())
			}

			gen := ts.auth.Authorizer().Generation()
			if err := WriteFileAtomic(ts.policyFile, []byte("p, role:writer, volumes/other, read\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "the policy reload", func() bool { return ts.auth.Authorizer().Generation() != gen })

			before := ts.nextOffset(t)
			_ = ingest.Send(&ldmv1.WriteTileStreamRequest{Volume: testVolume, Tile: tile(2)})
			if _, err := ingest.Receive(); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("ingest after the reload: %v, want PermissionDenied", err)
			}
			if after := ts.nextOffset(t); after != before {
				t.Fatalf("a denied stream wrote %d tiles", after-before)
			}
			// A new tile makes the follow stream send; the send is denied.
			if _, err := ts.store.Append(ctx, testVolume, storage.Tile{Value: []byte{9}}); err != nil {
				t.Fatal(err)
			}
			if follow.Receive() {
				t.Fatal("the follow stream delivered a tile after its permission was revoked")
			}
			if connect.CodeOf(follow.Err()) != connect.CodePermissionDenied {
				t.Fatalf("follow stream after the reload: %v, want PermissionDenied", follow.Err())
			}
			_, err = c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("new call after the reload: %v, want PermissionDenied", err)
			}
		})
	}
}

// TestAuth_BrokenPolicyKeepsOld checks that a policy file that does not
// parse is not loaded and the old policy keeps answering.
func TestAuth_BrokenPolicyKeepsOld(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{policy: "p, role:reader, volumes/*, read\n", reload: 10 * time.Millisecond})
	gen := ts.auth.Authorizer().Generation()
	failures := ts.logs.count("reload failed; keeping the previous version")
	if err := os.WriteFile(ts.policyFile, []byte("p, role:reader, volumes/*-x, read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the failed reload", func() bool { return ts.logs.count("reload failed; keeping the previous version") > failures })
	c := ts.client(t, "connect", cred{creds: Credentials{Token: ts.tokens["reader"]}})
	_, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
	if err != nil {
		t.Fatalf("read under the old policy: %v", err)
	}
	if ts.auth.Authorizer().Generation() != gen {
		t.Fatal("a broken policy was loaded")
	}
	if err := WriteFileAtomic(ts.policyFile, []byte("p, role:reader, volumes/zzz, read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the valid policy", func() bool { return ts.auth.Authorizer().Generation() != gen })
	_, err = c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("read under the new policy: %v, want PermissionDenied", err)
	}
}

// TestAuth_GetIsPrivate checks that an authenticated HTTP GET read is not
// marked cacheable by shared caches.
func TestAuth_GetIsPrivate(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	hc := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(nil))}
	defer hc.CloseIdleConnections()
	q := url.Values{"encoding": {"json"}, "message": {`{"volume":"vol","offset":"0"}`}, "connect": {"v1"}}
	req, err := http.NewRequest(http.MethodGet, ts.url+"/ldm.v1.TileService/ReadTile?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", FormatBearer(ts.tokens["reader"]))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s", resp.Status)
	}
	cc := resp.Header.Get("Cache-Control")
	if cc == "" || containsToken(cc, "public") || !containsToken(cc, "private") {
		t.Fatalf("Cache-Control = %q, want private", cc)
	}
}

func containsToken(list, tok string) bool {
	for _, p := range splitComma(list) {
		if p == tok {
			return true
		}
	}
	return false
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			p := s[start:i]
			for len(p) > 0 && p[0] == ' ' {
				p = p[1:]
			}
			for len(p) > 0 && p[len(p)-1] == ' ' {
				p = p[:len(p)-1]
			}
			out = append(out, p)
			start = i + 1
		}
	}
	return out
}

// TestAuth_EmptyFileKeepsOld truncates the policy and token files under a
// running server, as a rewrite in place does first, and leaves them empty
// for many checks: neither is loaded (an empty policy would deny every
// call, an empty token file would revoke every token), and the next real
// content is.
func TestAuth_EmptyFileKeepsOld(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{policy: "p, role:reader, volumes/*, read\n", reload: 5 * time.Millisecond})
	c := ts.client(t, "connect", cred{creds: Credentials{Token: ts.tokens["reader"]}})
	read := func() error {
		_, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
		return err
	}
	gen := ts.auth.Authorizer().Generation()
	tokenFile := filepath.Join(ts.dir, "tokens")
	for _, p := range []string{ts.policyFile, tokenFile} {
		if err := os.Truncate(p, 0); err != nil {
			t.Fatal(err)
		}
	}
	const msg = "file is empty or missing; keeping the previous version"
	testutil.WaitFor(t, 10*time.Second, "both empty files noticed", func() bool { return ts.logs.count(msg) >= 2 })
	// Reads keep working over a window of 40 check intervals while the
	// files stay empty (a window to observe that nothing happens, not a
	// wait for something: on a slow machine fewer checks fit in it, which
	// weakens the test but never fails it wrongly).
	checks := ts.logs.count("reloaded")
	window := time.NewTimer(40 * 5 * time.Millisecond)
	defer window.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for open := true; open; {
		select {
		case <-window.C:
			open = false
		case <-tick.C:
		}
		if err := read(); err != nil {
			t.Fatalf("read with the files empty: %v", err)
		}
	}
	if ts.auth.Authorizer().Generation() != gen || ts.logs.count("reloaded") != checks {
		t.Fatal("an empty file was loaded")
	}
	if err := os.WriteFile(ts.policyFile, []byte("p, role:reader, volumes/zzz, read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the new policy", func() bool { return ts.auth.Authorizer().Generation() != gen })
	if err := read(); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("read under the new policy: %v, want PermissionDenied", err)
	}
}
