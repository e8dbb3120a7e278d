package auth

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// matrixCall is one row of the matrix: a kind of call and what it changes.
type matrixCall struct {
	name   string
	writes uint64 // tiles appended to testVolume when allowed
	admin  bool   // creates the volume named by its tag when allowed
	run    func(ctx context.Context, c *client, tag string) error
}

var matrixCalls = []matrixCall{
	{name: "unary_read", run: func(ctx context.Context, c *client, _ string) error {
		resp, err := c.tiles.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
		if err == nil && len(resp.Msg.GetTile().GetValue()) == 0 {
			return errors.New("empty tile")
		}
		return err
	}},
	{name: "unary_write", writes: 1, run: func(ctx context.Context, c *client, _ string) error {
		_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: testVolume, Tile: tile(1)}))
		return err
	}},
	{name: "server_stream", run: func(ctx context.Context, c *client, _ string) error {
		s, err := c.tiles.ReadTileStream(ctx, connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: testVolume}))
		if err != nil {
			return err
		}
		defer s.Close()
		n := 0
		for s.Receive() {
			n++
		}
		if s.Err() == nil && n == 0 {
			return errors.New("stream ended without tiles")
		}
		return s.Err()
	}},
	{name: "client_stream", writes: 2, run: func(ctx context.Context, c *client, _ string) error {
		// Send everything, close, then read the answers.
		s := c.tiles.WriteTileStream(ctx)
		for i, vol := range []string{testVolume, ""} {
			if err := s.Send(&ldmv1.WriteTileStreamRequest{Volume: vol, Tile: tile(byte(i))}); err != nil {
				break // the server answered already; Receive has the reason
			}
		}
		_ = s.CloseRequest()
		n := 0
		for {
			_, err := s.Receive()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			n++
		}
		if n != 2 {
			return errors.New("want 2 offsets")
		}
		return s.CloseResponse()
	}},
	{name: "bidi_stream", writes: 2, run: func(ctx context.Context, c *client, _ string) error {
		// One message, one answer, in turn.
		s := c.tiles.WriteTileStream(ctx)
		defer s.CloseResponse()
		for i, vol := range []string{testVolume, testVolume} {
			if err := s.Send(&ldmv1.WriteTileStreamRequest{Volume: vol, Tile: tile(byte(i))}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := s.Receive(); err != nil {
				return err
			}
		}
		return s.CloseRequest()
	}},
	{name: "admin_call", admin: true, run: func(ctx context.Context, c *client, tag string) error {
		_, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: tag, Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		}}))
		return err
	}},
}

const ok = connect.Code(0)

// TestAuth_Matrix runs every kind of call with every kind of credentials
// over every protocol against a real server on a TLS socket, and checks the
// exact outcome and that a denied call changes nothing.
func TestAuth_Matrix(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	admin := ts.pki.ClientCert(t, "root")
	stranger := ts.pki.ClientCert(t, "stranger")
	creds := []cred{
		{name: "no_credentials"},
		{name: "bad_token", creds: Credentials{Token: "ldm_not-a-real-token"}},
		{name: "reader_token", creds: Credentials{Token: ts.tokens["reader"]}},
		{name: "writer_token", creds: Credentials{Token: ts.tokens["writer"]}},
		{name: "admin_mtls", cert: &admin},
		{name: "unknown_subject_cert", cert: &stranger},
		{name: "basic_good", creds: Credentials{Username: "bob", Password: "bobs-password"}},
		{name: "basic_bad", creds: Credentials{Username: "bob", Password: "guess"}},
	}
	un, pd := connect.CodeUnauthenticated, connect.CodePermissionDenied
	// want[credential] lists the codes of matrixCalls in order.
	want := map[string][]connect.Code{
		"no_credentials":       {un, un, un, un, un, un},
		"bad_token":            {un, un, un, un, un, un},
		"reader_token":         {ok, pd, ok, pd, pd, pd},
		"writer_token":         {ok, ok, ok, ok, ok, pd},
		"admin_mtls":           {ok, ok, ok, ok, ok, ok},
		"unknown_subject_cert": {pd, pd, pd, pd, pd, pd},
		"basic_good":           {ok, ok, ok, ok, ok, pd},
		"basic_bad":            {un, un, un, un, un, un},
	}
	for _, proto := range []string{"connect", "grpc", "grpcweb"} {
		for _, cr := range creds {
			c := ts.client(t, proto, cr)
			for i, call := range matrixCalls {
				t.Run(proto+"/"+cr.name+"/"+call.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					tag := strings.ReplaceAll("adm-"+proto+"-"+cr.name, "_", "-")
					before := ts.nextOffset(t)
					err := call.run(ctx, c, tag)
					if got := connect.CodeOf(err); err == nil && want[cr.name][i] != ok || err != nil && got != want[cr.name][i] {
						t.Fatalf("code = %v (err %v), want %v", got, err, want[cr.name][i])
					}
					allowed := err == nil
					wantTiles := before
					if allowed {
						wantTiles += call.writes
					}
					if after := ts.nextOffset(t); after != wantTiles {
						t.Fatalf("volume has %d tiles after the call, want %d", after, wantTiles)
					}
					if call.admin {
						_, verr := ts.store.Volume(tag)
						if allowed != (verr == nil) {
							t.Fatalf("volume %s exists = %v after a call that was allowed = %v", tag, verr == nil, allowed)
						}
					}
				})
			}
		}
	}
}

// TestAuth_ListVolumesFiltered checks that ListVolumes shows each caller
// only the volumes it may read.
func TestAuth_ListVolumesFiltered(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{policy: DefaultPolicy + "\np, role:reader, volumes/*, read\np, ct-reader, volumes/ct-*, read\n"})
	for _, n := range []string{"ct-1", "ct-2", "mri-1"} {
		if _, err := ts.store.CreateVolume(context.Background(), volumeMeta(n)); err != nil {
			t.Fatal(err)
		}
	}
	ctReader := ts.pki.ClientCert(t, "ct-reader")
	for _, tt := range []struct {
		c    cred
		want string
	}{
		{cred{name: "ct", cert: &ctReader}, "ct-1,ct-2"},
		{cred{name: "reader", creds: Credentials{Token: ts.tokens["reader"]}}, "ct-1,ct-2,mri-1,vol"},
	} {
		c := ts.client(t, "connect", tt.c)
		resp, err := c.volumes.ListVolumes(context.Background(), connect.NewRequest(&ldmv1.ListVolumesRequest{}))
		if err != nil {
			t.Fatalf("%s: %v", tt.c.name, err)
		}
		var names []string
		for _, v := range resp.Msg.GetVolumes() {
			names = append(names, v.GetName())
		}
		if got := strings.Join(names, ","); got != tt.want {
			t.Errorf("%s sees %q, want %q", tt.c.name, got, tt.want)
		}
	}
	// Without credentials nothing is readable here: the answer says that
	// credentials are needed rather than listing nothing.
	c := ts.client(t, "connect", cred{name: "anonymous"})
	_, err := c.volumes.ListVolumes(context.Background(), connect.NewRequest(&ldmv1.ListVolumesRequest{}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous ListVolumes: %v, want Unauthenticated", err)
	}
	// With a policy that lets anonymous read one volume, it sees just that.
	if err := WriteFileAtomic(ts.policyFile, []byte("p, anonymous, volumes/mri-*, read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ts.auth.Authorizer().Reload(); err != nil {
		t.Fatal(err)
	}
	resp, err := c.volumes.ListVolumes(context.Background(), connect.NewRequest(&ldmv1.ListVolumesRequest{}))
	if err != nil || len(resp.Msg.GetVolumes()) != 1 || resp.Msg.GetVolumes()[0].GetName() != "mri-1" {
		t.Fatalf("anonymous ListVolumes with a public volume: %v, %v", resp, err)
	}
}

// TestAuth_StreamAuthorizesEveryVolume checks that a WriteTileStream
// allowed on its first volume is denied when a later message names a
// volume the caller may not write, and that nothing of the denied message
// is stored.
func TestAuth_StreamAuthorizesEveryVolume(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{policy: "p, ingest, volumes/vol, write\n"})
	if _, err := ts.store.CreateVolume(context.Background(), volumeMeta("secret")); err != nil {
		t.Fatal(err)
	}
	cert := ts.pki.ClientCert(t, "ingest")
	for proto := range protocols {
		t.Run(proto, func(t *testing.T) {
			c := ts.client(t, proto, cred{cert: &cert})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s := c.tiles.WriteTileStream(ctx)
			defer s.CloseResponse()
			if err := s.Send(&ldmv1.WriteTileStreamRequest{Volume: testVolume, Tile: tile(1)}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Receive(); err != nil {
				t.Fatalf("first message: %v", err)
			}
			_ = s.Send(&ldmv1.WriteTileStreamRequest{Volume: "secret", Tile: tile(2)})
			_, err := s.Receive()
			if connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Fatalf("second message to another volume: %v, want PermissionDenied", err)
			}
			if info, _ := ts.store.Volume("secret"); info.NextOffset != 0 {
				t.Fatalf("denied volume has %d tiles", info.NextOffset)
			}
		})
	}
}
