package server_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/server/servertest"
	"github.com/xcheng85/go-ldm/service/auth"
)

// TestServer_share_links creates share links through the API and uses
// them as a third-party client would: as a bearer token, in the query and
// as a path prefix.
func TestServer_share_links(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rootTok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	readerTok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte(auth.HashToken(rootTok)+" root\n"+auth.HashToken(readerTok)+" ann reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "share.key")
	s := servertest.Start(t, server.Config{Auth: server.AuthConfig{
		TokensFile: tokens, ShareKeyFile: keyFile, ReloadInterval: 10 * time.Millisecond,
	}})
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("share key file: %v %v", fi, err)
	}
	ctx := context.Background()
	hc := &http.Client{Transport: client.NewTransport(nil)}
	vc := func(tok string) ldmv1connect.VolumeServiceClient {
		return ldmv1connect.NewVolumeServiceClient(hc, s.URL(), connect.WithInterceptors(auth.Credentials{Token: tok}.Interceptor()))
	}
	root := vc(rootTok)
	for _, name := range []string{"a", "b"} {
		if _, err := root.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: name, Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		}})); err != nil {
			t.Fatal(err)
		}
	}
	tc := ldmv1connect.NewTileServiceClient(hc, s.URL(), bearer(rootTok))
	if _, err := tc.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "a", Tile: &ldmv1.Tile{
		Value: make([]byte, 64*64*64), Key: &ldmv1.BrickKey{},
	}})); err != nil {
		t.Fatal(err)
	}

	share := func(t *testing.T, ttl time.Duration) *ldmv1.CreateShareResponse {
		t.Helper()
		res, err := root.CreateShare(ctx, connect.NewRequest(&ldmv1.CreateShareRequest{Volume: "a", Ttl: durationpb.New(ttl)}))
		if err != nil {
			t.Fatal(err)
		}
		return res.Msg
	}
	// getBrick fetches brick 0 of volume over Connect's HTTP GET with the
	// token placed by how: "path", "query" or "" (none).
	getBrick := func(t *testing.T, volume, token, how string) int {
		t.Helper()
		msg, err := protojson.Marshal(&ldmv1.GetBrickRequest{Volume: volume, Key: &ldmv1.BrickKey{}})
		if err != nil {
			t.Fatal(err)
		}
		q := url.Values{"encoding": {"json"}, "message": {string(msg)}}
		u := s.URL()
		switch how {
		case "path":
			u += auth.SharePathPrefix + token
		case "query":
			q.Set(auth.ShareQueryParam, token)
		}
		resp, err := hc.Get(u + ldmv1connect.VolumeServiceGetBrickProcedure + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	// getView fetches a path of the OME-Zarr or precomputed views with the
	// token placed by how, as getBrick does.
	getView := func(t *testing.T, path, token, how string) int {
		t.Helper()
		u := s.URL() + path
		switch how {
		case "path":
			u = s.URL() + auth.SharePathPrefix + token + path
		case "query":
			u += "?" + auth.ShareQueryParam + "=" + token
		}
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Run("only_an_admin_creates_shares", func(t *testing.T) {
		_, err := vc(readerTok).CreateShare(ctx, connect.NewRequest(&ldmv1.CreateShareRequest{Volume: "a"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("reader: %v, want PermissionDenied", err)
		}
		_, err = root.CreateShare(ctx, connect.NewRequest(&ldmv1.CreateShareRequest{Volume: "nope"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("unknown volume: %v, want NotFound", err)
		}
		_, err = root.CreateShare(ctx, connect.NewRequest(&ldmv1.CreateShareRequest{Volume: "a", Ttl: durationpb.New(365 * 24 * time.Hour)}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("a year: %v, want InvalidArgument", err)
		}
	})
	t.Run("a_share_reads_its_volume_only", func(t *testing.T) {
		sh := share(t, time.Hour)
		c := vc(sh.GetToken())
		if _, err := c.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "a"})); err != nil {
			t.Fatalf("GetVolume a: %v", err)
		}
		if _, err := c.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "b"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("GetVolume b: %v, want PermissionDenied", err)
		}
		list, err := c.ListVolumes(ctx, connect.NewRequest(&ldmv1.ListVolumesRequest{}))
		if err != nil || len(list.Msg.GetVolumes()) != 1 || list.Msg.GetVolumes()[0].GetName() != "a" {
			t.Fatalf("ListVolumes: %v %v", list, err)
		}
		if _, err := c.CreateShare(ctx, connect.NewRequest(&ldmv1.CreateShareRequest{Volume: "a"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("a share making a share: %v", err)
		}
		if _, err := c.DeleteVolume(ctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: "a"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("DeleteVolume: %v", err)
		}
		for vol, want := range map[string]connect.Code{"a": 0, "b": connect.CodePermissionDenied} {
			rs, err := c.ReadRegion(ctx, connect.NewRequest(&ldmv1.ReadRegionRequest{Volume: vol}))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rs.Receive() {
				n += len(rs.Msg().GetData())
			}
			if ok := rs.Err() == nil && n == 8*8*8; (want == 0) != ok || (want != 0 && connect.CodeOf(rs.Err()) != want) {
				t.Errorf("ReadRegion of %s: %d bytes, %v; want code %v", vol, n, rs.Err(), want)
			}
			rs.Close()
		}
		wc := ldmv1connect.NewTileServiceClient(hc, s.URL(), bearer(sh.GetToken()))
		if _, err := wc.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "a", Tile: &ldmv1.Tile{Value: []byte{1}}})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Fatalf("WriteTile: %v", err)
		}
		for _, how := range []string{"path", "query"} {
			if code := getBrick(t, "a", sh.GetToken(), how); code != http.StatusOK {
				t.Errorf("GET with the token in the %s: %d", how, code)
			}
			if code := getBrick(t, "b", sh.GetToken(), how); code != http.StatusForbidden {
				t.Errorf("GET of another volume with the token in the %s: %d", how, code)
			}
		}
		if code := getBrick(t, "a", "", ""); code != http.StatusUnauthorized {
			t.Errorf("GET without credentials: %d", code)
		}
		// The open-format views: a chunk and the metadata of its volume.
		for _, how := range []string{"path", "query"} {
			for _, p := range []string{"/zarr/a/.zattrs", "/zarr/a/0/0/0/0", "/zarr3/a/zarr.json", "/precomputed/a/info"} {
				if code := getView(t, p, sh.GetToken(), how); code != http.StatusOK {
					t.Errorf("GET %s with the token in the %s: %d", p, how, code)
				}
			}
			if code := getView(t, "/zarr/b/.zattrs", sh.GetToken(), how); code != http.StatusForbidden {
				t.Errorf("GET of another volume's view with the token in the %s: %d", how, code)
			}
		}
		if code := getView(t, "/zarr/a/.zattrs", "", ""); code != http.StatusUnauthorized {
			t.Errorf("view without credentials: %d", code)
		}
	})
	t.Run("a_share_stops_at_its_expiry", func(t *testing.T) {
		sh := share(t, time.Second)
		c := vc(sh.GetToken())
		testutil.WaitFor(t, 5*time.Second, "the share to expire", func() bool {
			_, err := c.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "a"}))
			return connect.CodeOf(err) == connect.CodeUnauthenticated
		})
		if code := getBrick(t, "a", sh.GetToken(), "path"); code != http.StatusUnauthorized {
			t.Errorf("expired share in the path: %d", code)
		}
		if code := getView(t, "/zarr/a/.zattrs", sh.GetToken(), "path"); code != http.StatusUnauthorized {
			t.Errorf("expired share on the view: %d", code)
		}
	})
	t.Run("a_revoked_share_stops_without_a_restart", func(t *testing.T) {
		sh, keep := share(t, time.Hour), share(t, time.Hour)
		if code := getBrick(t, "a", sh.GetToken(), "path"); code != http.StatusOK {
			t.Fatalf("before revoking: %d", code)
		}
		if err := auth.RevokeShare(keyFile+".revoked", sh.GetId(), sh.GetExpireTime().AsTime()); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 10*time.Second, "the revocation to load", func() bool {
			return getBrick(t, "a", sh.GetToken(), "path") == http.StatusUnauthorized
		})
		if code := getBrick(t, "a", keep.GetToken(), "query"); code != http.StatusOK {
			t.Errorf("another share after the revocation: %d", code)
		}
		if code := getView(t, "/zarr/a/.zattrs", sh.GetToken(), "query"); code != http.StatusUnauthorized {
			t.Errorf("revoked share on the view: %d", code)
		}
	})
}
