package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
	"github.com/xcheng85/go-ldm/service/auth"
)

// embeddedVolume fetches the viewer's page at url with the Authorization
// header authz (if any) and returns the GetVolume response it embeds (nil:
// none).
func embeddedVolume(t *testing.T, url, authz string) *ldmv1.GetVolumeResponse {
	t.Helper()
	status, page, _ := viewGet(t, url, authz)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, status, page)
	}
	m := regexp.MustCompile(`<script type="application/json" id="ldm-volume">([^<]*)</script>`).FindSubmatch(page)
	if m == nil {
		return nil
	}
	var d struct{ Name, GetVolume string }
	if err := json.Unmarshal(m[1], &d); err != nil {
		t.Fatalf("embedded volume %q: %v", m[1], err)
	}
	b, err := base64.StdEncoding.DecodeString(d.GetVolume)
	if err != nil {
		t.Fatal(err)
	}
	var v ldmv1.GetVolumeResponse
	if err := proto.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// TestServer_viewer_embeds_volume checks that the page opened with
// ?volume= carries the volume's GetVolume response, exactly as the page's
// own call would get it: the same message, and nothing for a volume that
// does not exist or a caller the call would refuse.
func TestServer_viewer_embeds_volume(t *testing.T) {
	t.Parallel()
	t.Run("open_server", func(t *testing.T) {
		t.Parallel()
		s, _ := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Demo: true, Logger: quiet})
		got := embeddedVolume(t, s.URL()+"/?volume="+server.DemoVolume, "")
		want, err := volumeClient(s).GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: server.DemoVolume}))
		if err != nil {
			t.Fatal(err)
		}
		if got == nil || !proto.Equal(got, want.Msg) {
			t.Fatalf("embedded %v, want %v", got, want.Msg)
		}
		if v := embeddedVolume(t, s.URL()+"/?volume=nope", ""); v != nil {
			t.Fatalf("a missing volume embedded %v", v)
		}
		if v := embeddedVolume(t, s.URL()+"/", ""); v != nil {
			t.Fatalf("the page without ?volume= embedded %v", v)
		}
	})
	t.Run("authenticated_server", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		tok, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		tokens := filepath.Join(dir, "tokens")
		if err := os.WriteFile(tokens, []byte(auth.HashToken(tok)+" root\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := servertest.Start(t, server.Config{Demo: true, Auth: server.AuthConfig{TokensFile: tokens}})
		if v := embeddedVolume(t, s.URL()+"/?volume="+server.DemoVolume, ""); v != nil {
			t.Fatalf("a page without credentials embedded %v", v)
		}
		if v := embeddedVolume(t, s.URL()+"/?volume="+server.DemoVolume, "Bearer wrong"); v != nil {
			t.Fatalf("a page with a wrong token embedded %v", v)
		}
		if v := embeddedVolume(t, s.URL()+"/?volume="+server.DemoVolume, auth.FormatBearer(tok)); v.GetVolume().GetName() != server.DemoVolume {
			t.Fatalf("a page with the token embedded %v", v)
		}
	})
}
