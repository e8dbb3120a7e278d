package auth

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

// TestAuth_DenialIsLogged checks that a denial is logged at info with the
// subject, procedure, object and action, and that credentials are not.
func TestAuth_DenialIsLogged(t *testing.T) {
	t.Parallel()
	var buf testutil.SyncBuffer
	ts := startServer(t, serverOptions{log: &buf})
	c := ts.client(t, "grpc", cred{creds: Credentials{Token: ts.tokens["reader"]}})
	_, err := c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: testVolume, Tile: tile(1)}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("WriteTile: %v, want PermissionDenied", err)
	}
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "permission denied" {
			rec = m
		}
	}
	if rec == nil {
		t.Fatalf("no denial logged: %s", buf.String())
	}
	for k, v := range map[string]string{
		"level": "INFO", logSubject: "reader-user", logProcedure: ldmv1connect.TileServiceWriteTileProcedure,
		logObject: VolumeObject(testVolume), logAction: ActionWrite, logMethod: MethodToken, "component": "auth",
	} {
		if rec[k] != v {
			t.Errorf("log %s = %v, want %q", k, rec[k], v)
		}
	}
	if strings.Contains(buf.String(), ts.tokens["reader"]) {
		t.Fatal("the token was logged")
	}
}

// TestAuth_TokenFileReload checks that a token added to the file works
// and a token removed from it stops working, without a restart.
func TestAuth_TokenFileReload(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{reload: 10 * time.Millisecond})
	tokenFile := filepath.Join(ts.dir, "tokens")
	fresh, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c := ts.client(t, "connect", cred{creds: Credentials{Token: fresh}})
	read := func() error {
		_, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
		return err
	}
	if connect.CodeOf(read()) != connect.CodeUnauthenticated {
		t.Fatal("an unknown token was accepted")
	}
	if err := AppendToken(tokenFile, fresh, "newcomer", []string{"reader"}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the new token", func() bool { return read() == nil })
	// Revoke every token: an empty file.
	if err := WriteFileAtomic(tokenFile, []byte("# revoked\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the revocation", func() bool { return connect.CodeOf(read()) == connect.CodeUnauthenticated })
	if _, err := os.Stat(tokenFile); err != nil {
		t.Fatal(err)
	}
}
