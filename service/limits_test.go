package service_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/service/auth"
)

// authServer is a test server with token authentication (service/auth) in
// front of a memory store, wired as server.New wires it.
type authServer struct {
	*testServer
	tokens map[string]string // subject -> token
}

// startAuthServer starts a server whose tokens file has one token per
// subject in roles (subject -> roles) and whose policy is policy (empty:
// the embedded default). config may adjust the service.Config.
func startAuthServer(tb testing.TB, roles map[string][]string, policy string, config func(*service.Config)) *authServer {
	tb.Helper()
	dir := tb.TempDir()
	tokenFile := filepath.Join(dir, "tokens")
	as := &authServer{tokens: map[string]string{}}
	for subject, r := range roles {
		tok, err := auth.NewToken()
		if err != nil {
			tb.Fatal(err)
		}
		if err := auth.AppendToken(tokenFile, tok, subject, r); err != nil {
			tb.Fatal(err)
		}
		as.tokens[subject] = tok
	}
	tokens, err := auth.LoadTokens(tokenFile)
	if err != nil {
		tb.Fatal(err)
	}
	acfg := auth.Config{Authenticators: []auth.Authenticator{tokens}, ReloadInterval: -1, Logger: slog.New(slog.DiscardHandler)}
	if policy != "" {
		acfg.PolicyFile = filepath.Join(dir, "policy.csv")
		if err := auth.WriteFileAtomic(acfg.PolicyFile, []byte(policy), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	a, err := auth.New(acfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { a.Close() })
	as.testServer = startServer(tb, serverOptions{config: func(c *service.Config) {
		c.Interceptors = a.Interceptors()
		c.Authenticate = a.AuthenticateHTTP
		if config != nil {
			config(c)
		}
	}})
	return as
}

// bearer returns a client option that sends subject's token.
func (as *authServer) bearer(subject string) connect.ClientOption {
	tok := as.tokens[subject]
	return connect.WithInterceptors(headerInterceptor{"Authorization", "Bearer " + tok})
}

// headerInterceptor sets a request header on every client call.
type headerInterceptor struct{ key, value string }

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		req.Header().Set(h.key, h.value)
		return next(ctx, req)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		conn.RequestHeader().Set(h.key, h.value)
		return conn
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// gzipBomb returns a WriteTileRequest for volume "v" with a tile of n zero
// bytes, marshaled and gzip-compressed (about n/1000 bytes).
func gzipBomb(tb testing.TB, n int) []byte {
	tb.Helper()
	b, err := proto.Marshal(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: make([]byte, n)}})
	if err != nil {
		tb.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// envelope frames a compressed message as gRPC and Connect streams do.
func envelope(compressed []byte) []byte {
	out := make([]byte, 5, 5+len(compressed))
	out[0] = 1 // compressed
	binary.BigEndian.PutUint32(out[1:], uint32(len(compressed)))
	return append(out, compressed...)
}

// bombRequest is one way of sending a compressed body: the protocol's
// headers and framing.
type bombRequest struct {
	name      string
	procedure string
	header    map[string]string
	frame     func([]byte) []byte
}

var bombRequests = []bombRequest{
	{"connect_unary", ldmv1connect.TileServiceWriteTileProcedure,
		map[string]string{"Content-Type": "application/proto", "Content-Encoding": "gzip", "Connect-Protocol-Version": "1"},
		func(b []byte) []byte { return b }},
	{"connect_stream", ldmv1connect.TileServiceWriteTileStreamProcedure,
		map[string]string{"Content-Type": "application/connect+proto", "Connect-Content-Encoding": "gzip", "Connect-Protocol-Version": "1"},
		envelope},
	{"grpc_unary", ldmv1connect.TileServiceWriteTileProcedure,
		map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip", "Te": "trailers"},
		envelope},
	{"grpc_stream", ldmv1connect.TileServiceWriteTileStreamProcedure,
		map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip", "Te": "trailers"},
		envelope},
	{"grpcweb_unary", ldmv1connect.TileServiceWriteTileProcedure,
		map[string]string{"Content-Type": "application/grpc-web+proto", "Grpc-Encoding": "gzip", "X-Grpc-Web": "1"},
		envelope},
}

// allocatedDuring returns the bytes the process allocated while f ran.
func allocatedDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestGate_CompressedBodyOfUnauthenticatedCaller sends a small gzip
// body that expands to 64 MiB, in every protocol, with a wrong token and
// with none. Authentication decides from the headers before the body is
// read: the wrong token is refused without reading it, and the anonymous
// caller's body is decompressed no further than the unauthenticated limit.
// Neither makes the server allocate what the body expands to.
func TestGate_CompressedBodyOfUnauthenticatedCaller(t *testing.T) {
	const expanded = 64 << 20
	as := startAuthServer(t, map[string][]string{"w": {"writer"}}, "", nil)
	bomb := gzipBomb(t, expanded)
	hc := as.httpClient(t)
	for _, br := range bombRequests {
		for _, cred := range []string{"wrong_token", "anonymous"} {
			t.Run(br.name+"/"+cred, func(t *testing.T) {
				var status int
				var resp []byte
				var hdr http.Header
				alloc := allocatedDuring(func() {
					req, err := http.NewRequest(http.MethodPost, as.URL+br.procedure, bytes.NewReader(br.frame(bomb)))
					if err != nil {
						t.Fatal(err)
					}
					for k, v := range br.header {
						req.Header.Set(k, v)
					}
					if cred == "wrong_token" {
						req.Header.Set("Authorization", "Bearer not-a-token")
					}
					res, err := hc.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					resp, _ = io.ReadAll(res.Body)
					res.Body.Close()
					status, hdr = res.StatusCode, res.Header
					for k, v := range res.Trailer {
						hdr[k] = v
					}
				})
				if alloc > 16<<20 {
					t.Errorf("the server allocated %d MiB for a %d KiB body of an unauthenticated caller; want it refused or cut off at the unauthenticated limit", alloc>>20, len(bomb)>>10)
				}
				code := responseCode(status, hdr, resp)
				want := []string{"unauthenticated"}
				if cred == "anonymous" {
					want = append(want, "resource_exhausted")
				}
				ok := false
				for _, w := range want {
					ok = ok || code == w
				}
				if !ok {
					t.Errorf("code %q (HTTP %d, %q), want one of %v", code, status, resp, want)
				}
			})
		}
	}
}

// responseCode finds the Connect code of an error response in any protocol
// (gRPC status header or trailer, a Connect unary status, a Connect or
// gRPC-Web end-of-stream message).
func responseCode(status int, hdr http.Header, body []byte) string {
	if s := hdr.Get("Grpc-Status"); s != "" {
		return grpcCodeName(s)
	}
	if i := bytes.Index(body, []byte("grpc-status:")); i >= 0 {
		rest := string(body[i+len("grpc-status:"):])
		rest = strings.TrimSpace(strings.SplitN(rest, "\r\n", 2)[0])
		return grpcCodeName(rest)
	}
	if i := bytes.Index(body, []byte(`"code":"`)); i >= 0 {
		rest := body[i+len(`"code":"`):]
		return string(rest[:bytes.IndexByte(rest, '"')])
	}
	return http.StatusText(status)
}

func grpcCodeName(s string) string {
	switch s {
	case "16":
		return "unauthenticated"
	case "8":
		return "resource_exhausted"
	case "7":
		return "permission_denied"
	}
	return "grpc-status " + s
}

// TestGate_AuthenticatedCallerSendsCompressedTiles: the gate keeps
// the full limit for callers with valid credentials, in every protocol.
func TestGate_AuthenticatedCallerSendsCompressedTiles(t *testing.T) {
	as := startAuthServer(t, map[string][]string{"root": {"admin"}}, "", nil)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			c := as.clients(t, protocol{p.name, append([]connect.ClientOption{as.bearer("root"), connect.WithSendGzip()}, p.opts...)})
			vol := "gz-" + strings.ReplaceAll(p.name, "_", "-")
			createVolume(t, c, vol)
			tile := make([]byte, 4<<20) // above the unauthenticated limit
			res, err := c.tiles.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: vol, Tile: &ldmv1.Tile{Value: tile}}))
			if err != nil {
				t.Fatal(err)
			}
			if res.Msg.GetOffset() != 0 {
				t.Fatalf("offset %d, want 0", res.Msg.GetOffset())
			}
		})
	}
}

// TestWriteTileStream_DeniedMessageAcknowledgesStoredTiles: a writer
// may write volume a but not b. It streams a tile for a, then one for b:
// it must receive a's offset (the tile is stored) before PermissionDenied,
// or a retry would store a's tile twice.
func TestWriteTileStream_DeniedMessageAcknowledgesStoredTiles(t *testing.T) {
	policy := "p, role:admin, *, *\ng, root, role:admin\np, writer-a, volumes/a, write\np, writer-a, volumes/a, read\n"
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			as := startAuthServer(t, map[string][]string{"root": nil, "writer-a": nil}, policy, nil)
			admin := as.clients(t, protocol{p.name, append([]connect.ClientOption{as.bearer("root")}, p.opts...)})
			createVolume(t, admin, "a")
			createVolume(t, admin, "b")
			c := as.clients(t, protocol{p.name, append([]connect.ClientOption{as.bearer("writer-a")}, p.opts...)})
			stream := c.tiles.WriteTileStream(context.Background())
			if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "a", Tile: &ldmv1.Tile{Value: []byte("tile of a")}}); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(&ldmv1.WriteTileStreamRequest{Volume: "b", Tile: &ldmv1.Tile{Value: []byte("tile of b")}}); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			_ = stream.CloseRequest()
			res, err := stream.Receive()
			if err != nil {
				t.Fatalf("first receive: %v; want the offset of the stored tile of a", err)
			}
			if res.GetOffset() != 0 {
				t.Fatalf("offset %d, want 0", res.GetOffset())
			}
			_, err = stream.Receive()
			assertCode(t, err, connect.CodePermissionDenied)
			_ = stream.CloseResponse()
			info, err := as.Store.Volume("a")
			if err != nil {
				t.Fatal(err)
			}
			if info.NextOffset != 1 {
				t.Fatalf("volume a holds %d tiles, want 1", info.NextOffset)
			}
		})
	}
}
