package auth

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	ldmclient "github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
)

func readTile(ctx context.Context, hc *http.Client, url string, opts ...connect.ClientOption) error {
	c := ldmv1connect.NewTileServiceClient(hc, url, opts...)
	_, err := c.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
	return err
}

// TestTLS_Rejections checks the handshake failures: a plaintext client, a
// client certificate of another CA, an expired client certificate and a
// server name the certificate does not cover all fail; a good certificate
// works.
func TestTLS_Rejections(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	other := testutil.NewPKI(t)
	foreign := other.ClientCert(t, "root")
	expired := ts.pki.ExpiredClientCert(t, "root")
	good := ts.pki.ClientCert(t, "root")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("plaintext_client", func(t *testing.T) {
		hc := &http.Client{Transport: ldmclient.NewTransport(nil)}
		defer hc.CloseIdleConnections()
		err := readTile(ctx, hc, "http://"+ts.addr, connect.WithGRPC())
		if err == nil {
			t.Fatal("a plaintext client got an answer from a TLS server")
		}
	})
	for _, tt := range []struct {
		name       string
		cert       *tls.Certificate
		serverName string
		wantErr    string
	}{
		// The server rejects these handshakes; with TLS 1.3 the client sees
		// a connection that could not be established.
		{"other_ca_client_cert", &foreign, "", ""},
		{"expired_client_cert", &expired, "", ""},
		{"wrong_host_name", &good, "other.example", "certificate is valid for"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ts.tlsConfig(tt.cert)
			cfg.ServerName = tt.serverName
			hc := &http.Client{Transport: ldmclient.NewTransport(cfg)}
			defer hc.CloseIdleConnections()
			err := readTile(ctx, hc, ts.url)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want a handshake failure mentioning %q", err, tt.wantErr)
			}
			if code := connect.CodeOf(err); code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied {
				t.Fatalf("err = %v: the call reached the server's interceptors", err)
			}
			if tt.cert != nil && tt.serverName == "" {
				// The server's alert names the reason.
				conn, err := tls.Dial("tcp", ts.addr, cfg)
				if err == nil {
					defer conn.Close()
					_, err = conn.Read(make([]byte, 1))
				}
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("raw handshake: err = %v, want a certificate alert", err)
				}
			}
		})
	}
	t.Run("good_client_cert", func(t *testing.T) {
		hc := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(&good))}
		defer hc.CloseIdleConnections()
		if err := readTile(ctx, hc, ts.url); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tls13_and_h2", func(t *testing.T) {
		conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.pki.Pool(), NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		st := conn.ConnectionState()
		if st.Version != tls.VersionTLS13 || st.NegotiatedProtocol != "h2" {
			t.Fatalf("version %x protocol %q, want TLS 1.3 and h2", st.Version, st.NegotiatedProtocol)
		}
	})
	t.Run("tls11_refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: ts.pki.Pool(), MaxVersion: tls.VersionTLS11})
		if err == nil {
			conn.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})
}

// TestTLS_RequireClientCert checks that with RequireClientCert a client
// without a certificate cannot even send a token.
func TestTLS_RequireClientCert(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{requireCert: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(nil))}
	defer hc.CloseIdleConnections()
	err := readTile(ctx, hc, ts.url, connect.WithInterceptors(Credentials{Token: ts.tokens["reader"]}.Interceptor()))
	// With TLS 1.3 the client learns of the rejected handshake only when it
	// first reads or writes again, so the call fails with whatever the
	// transport saw first (Unavailable, or Canceled for a broken pipe); it
	// never reaches the interceptors or a handler.
	switch code := connect.CodeOf(err); {
	case err == nil:
		t.Fatal("a client without a certificate read a tile")
	case code == connect.CodeUnauthenticated || code == connect.CodePermissionDenied:
		t.Fatalf("err = %v: the call reached authorization, want a handshake failure", err)
	}
	// The handshake itself is what fails: the server answers a client
	// without a certificate with the certificate_required alert.
	conn, err := tls.Dial("tcp", ts.addr, ts.tlsConfig(nil))
	if err == nil {
		defer conn.Close()
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		_, err = conn.Read(make([]byte, 1))
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("handshake without a client certificate: %v, want the certificate_required alert", err)
	}
	good := ts.pki.ClientCert(t, "root")
	hc2 := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(&good))}
	defer hc2.CloseIdleConnections()
	if err := readTile(ctx, hc2, ts.url); err != nil {
		t.Fatal(err)
	}
}

// TestTLS_GRPCGo calls the server with grpc-go over TLS: with a bearer
// token in the metadata, with a client certificate, and with a token that
// may not write.
func TestTLS_GRPCGo(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(cert *tls.Certificate) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(credentials.NewTLS(ts.tlsConfig(cert))))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	conn := dial(nil)
	md := metadata.Pairs("authorization", FormatBearer(ts.tokens["reader"]))
	var resp ldmv1.ReadTileResponse
	if err := conn.Invoke(metadata.NewOutgoingContext(ctx, md), ldmv1connect.TileServiceReadTileProcedure,
		&ldmv1.ReadTileRequest{Volume: testVolume}, &resp); err != nil {
		t.Fatalf("ReadTile with a reader token: %v", err)
	}
	if len(resp.GetTile().GetValue()) == 0 {
		t.Fatal("empty tile")
	}
	var wresp ldmv1.WriteTileResponse
	err := conn.Invoke(metadata.NewOutgoingContext(ctx, md), ldmv1connect.TileServiceWriteTileProcedure,
		&ldmv1.WriteTileRequest{Volume: testVolume, Tile: tile(1)}, &wresp)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("WriteTile with a reader token: %v, want PermissionDenied", err)
	}
	err = conn.Invoke(ctx, ldmv1connect.TileServiceReadTileProcedure, &ldmv1.ReadTileRequest{Volume: testVolume}, &resp)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ReadTile without credentials: %v, want Unauthenticated", err)
	}
	admin := ts.pki.ClientCert(t, "root")
	if err := dial(&admin).Invoke(ctx, ldmv1connect.TileServiceWriteTileProcedure,
		&ldmv1.WriteTileRequest{Volume: testVolume, Tile: tile(1)}, &wresp); err != nil {
		t.Fatalf("WriteTile with the admin certificate: %v", err)
	}
}

// TestAuth_PublicProcedures checks that health answers without
// credentials by default, and needs them when Config.Public is empty.
func TestAuth_PublicProcedures(t *testing.T) {
	t.Parallel()
	check := func(ts *testServer, token string) int {
		t.Helper()
		hc := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(nil))}
		defer hc.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodPost, ts.url+"/grpc.health.v1.Health/Check", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", FormatBearer(token))
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	open := startServer(t, serverOptions{})
	if code := check(open, ""); code != http.StatusOK {
		t.Fatalf("health check without credentials: %d", code)
	}
	// With nothing public, health needs read on the cluster.
	closed := startServer(t, serverOptions{public: []string{}, policy: "p, role:reader, cluster, read\n"})
	if code := check(closed, ""); code != http.StatusUnauthorized {
		t.Fatalf("health check without credentials when nothing is public: %d, want 401", code)
	}
	if code := check(closed, closed.tokens["reader"]); code != http.StatusOK {
		t.Fatalf("health check with a reader token when nothing is public: %d, want 200", code)
	}
	if code := check(closed, closed.tokens["writer"]); code != http.StatusForbidden {
		t.Fatalf("health check with a token without cluster read: %d, want 403", code)
	}
	// Reflection is a bidirectional stream with a fixed object: it is
	// authorized before the handler runs.
	hc := &http.Client{Transport: ldmclient.NewTransport(closed.tlsConfig(nil))}
	defer hc.CloseIdleConnections()
	for token, want := range map[string]connect.Code{"": connect.CodeUnauthenticated, closed.tokens["writer"]: connect.CodePermissionDenied, closed.tokens["reader"]: 0} {
		c := connect.NewClient[reflectionpb.ServerReflectionRequest, reflectionpb.ServerReflectionResponse](hc,
			closed.url+"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", connect.WithGRPC(),
			connect.WithInterceptors(Credentials{Token: token}.Interceptor()))
		s := c.CallBidiStream(context.Background())
		_ = s.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err := s.Receive()
		_ = s.CloseRequest()
		_ = s.CloseResponse()
		if connect.CodeOf(err) != want && !(want == 0 && err == nil) {
			t.Errorf("reflection with token %q: %v, want %v", token, err, want)
		}
	}
}

// TestAuth_UnknownProcedureDenied checks that a procedure without an
// authorization rule is denied, even to the administrator, when it is
// served with the interceptors.
func TestAuth_UnknownProcedureDenied(t *testing.T) {
	t.Parallel()
	a, err := New(Config{Authenticators: []Authenticator{ClientCert{}}, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	const proc = "/ldm.v2.Extra/Do"
	h := connect.NewUnaryHandler(proc, func(context.Context, *connect.Request[ldmv1.GetServersRequest]) (*connect.Response[ldmv1.GetServersResponse], error) {
		return connect.NewResponse(&ldmv1.GetServersResponse{}), nil
	}, connect.WithInterceptors(a.Interceptors()...))
	p := testutil.NewPKI(t)
	certFile, keyFile := p.WriteServerFiles(t)
	cfg, err := ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: p.CAFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	srv := service.NewHTTPServer(a.Middleware(h), cfg, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(l, "", "")
	defer srv.Close()
	root := p.ClientCert(t, "root")
	hc := &http.Client{Transport: ldmclient.NewTransport(&tls.Config{RootCAs: p.Pool(), Certificates: []tls.Certificate{root}})}
	defer hc.CloseIdleConnections()
	c := connect.NewClient[ldmv1.GetServersRequest, ldmv1.GetServersResponse](hc, "https://"+l.Addr().String()+proc)
	_, err = c.CallUnary(context.Background(), connect.NewRequest(&ldmv1.GetServersRequest{}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("unknown procedure as root: %v, want PermissionDenied", err)
	}
}
