package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/crypto/bcrypt"

	ldmclient "github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// testServer is a real go-ldm service (package service over a memory
// store) behind TLS on 127.0.0.1 with this package's middleware and
// interceptors.
type testServer struct {
	url        string
	addr       string
	store      *storage.Memory
	auth       *Auth
	pki        *testutil.PKI
	tokens     map[string]string // role name -> token
	policyFile string
	dir        string // holds the tokens and users files
	logs       *logCounter
}

// logCounter is a slog handler that counts records by message.
type logCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }
func (l *logCounter) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[msg]
}

// testVolume is created by startServer with one tile.
const testVolume = "vol"

type serverOptions struct {
	policy         string // policy file content; empty means the embedded default
	reload         time.Duration
	requireCert    bool
	noAuth         bool // serve without interceptors (benchmark baseline)
	tileBytes      int
	plaintextNoTLS bool
	log            io.Writer // JSON logs of the auth package; nil counts them in logs
	public         []string  // Config.Public
}

func startServer(tb testing.TB, o serverOptions) *testServer {
	tb.Helper()
	dir := tb.TempDir()
	ts := &testServer{pki: testutil.NewPKI(tb), tokens: map[string]string{}, logs: &logCounter{n: map[string]int{}}, dir: dir}
	tokenFile := filepath.Join(dir, "tokens")
	for _, role := range []string{"reader", "writer"} {
		tok, err := NewToken()
		if err != nil {
			tb.Fatal(err)
		}
		if err := AppendToken(tokenFile, tok, role+"-user", []string{role}); err != nil {
			tb.Fatal(err)
		}
		ts.tokens[role] = tok
	}
	usersFile := filepath.Join(dir, "users")
	if err := SetUser(usersFile, "bob", "bobs-password", []string{"writer"}, bcrypt.MinCost); err != nil {
		tb.Fatal(err)
	}
	tokens, err := LoadTokens(tokenFile)
	if err != nil {
		tb.Fatal(err)
	}
	users, err := LoadUsers(usersFile)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{
		Authenticators: []Authenticator{tokens, users, ClientCert{}},
		ReloadInterval: -1,
		Logger:         slog.New(ts.logs),
	}
	cfg.Public = o.public
	if o.log != nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(o.log, nil))
	}
	if o.policy != "" {
		ts.policyFile = filepath.Join(dir, "policy.csv")
		if err := WriteFileAtomic(ts.policyFile, []byte(o.policy), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfg.PolicyFile = ts.policyFile
	}
	if o.reload != 0 {
		cfg.ReloadInterval = o.reload
	}
	ts.auth, err = New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ts.auth.Close() })

	ts.store = storage.NewMemory(0)
	ctx := context.Background()
	if _, err := ts.store.CreateVolume(ctx, storage.VolumeMeta{Name: testVolume, Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8}); err != nil {
		tb.Fatal(err)
	}
	size := o.tileBytes
	if size == 0 {
		size = 16
	}
	if _, err := ts.store.Append(ctx, testVolume, storage.Tile{Value: make([]byte, size)}); err != nil {
		tb.Fatal(err)
	}
	scfg := service.Config{Store: ts.store, Logger: slog.New(slog.DiscardHandler)}
	if !o.noAuth {
		scfg.Interceptors = ts.auth.Interceptors()
	}
	svc, err := service.New(scfg)
	if err != nil {
		tb.Fatal(err)
	}
	certFile, keyFile := ts.pki.WriteServerFiles(tb)
	var tlsCfg *tls.Config
	if !o.plaintextNoTLS {
		tlsCfg, err = ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: ts.pki.CAFile, RequireClientCert: o.requireCert}.Config()
		if err != nil {
			tb.Fatal(err)
		}
	}
	handler := svc.Handler()
	if !o.noAuth {
		handler = ts.auth.Middleware(handler)
	}
	srv := service.NewHTTPServer(handler, tlsCfg, slog.New(slog.DiscardHandler))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ts.addr = l.Addr().String()
	errc := make(chan error, 1)
	go func() {
		if tlsCfg != nil {
			errc <- srv.ServeTLS(l, "", "")
		} else {
			errc <- srv.Serve(l)
		}
	}()
	tb.Cleanup(func() {
		svc.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			tb.Error(err)
		}
	})
	ts.url = "https://" + ts.addr
	if tlsCfg == nil {
		ts.url = "http://" + ts.addr
	}
	return ts
}

// cred is one column of the matrix: how a client presents itself.
type cred struct {
	name  string
	creds Credentials
	cert  *tls.Certificate
}

// client is a set of ldm.v1 clients of one protocol and credential.
type client struct {
	tiles   ldmv1connect.TileServiceClient
	volumes ldmv1connect.VolumeServiceClient
	cluster ldmv1connect.ClusterServiceClient
	http    *http.Client
}

var protocols = map[string][]connect.ClientOption{
	"connect": nil,
	"grpc":    {connect.WithGRPC()},
	"grpcweb": {connect.WithGRPCWeb()},
}

func (ts *testServer) tlsConfig(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ts.pki.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func (ts *testServer) client(tb testing.TB, protocol string, c cred) *client {
	tb.Helper()
	hc := &http.Client{Transport: ldmclient.NewTransport(ts.tlsConfig(c.cert))}
	tb.Cleanup(hc.CloseIdleConnections)
	opts := append([]connect.ClientOption{connect.WithInterceptors(c.creds.Interceptor())}, protocols[protocol]...)
	return &client{
		tiles:   ldmv1connect.NewTileServiceClient(hc, ts.url, opts...),
		volumes: ldmv1connect.NewVolumeServiceClient(hc, ts.url, opts...),
		cluster: ldmv1connect.NewClusterServiceClient(hc, ts.url, opts...),
		http:    hc,
	}
}

// nextOffset returns the number of tiles in the test volume.
func (ts *testServer) nextOffset(tb testing.TB) uint64 {
	tb.Helper()
	info, err := ts.store.Volume(testVolume)
	if err != nil {
		tb.Fatal(err)
	}
	return info.NextOffset
}

func tile(b byte) *ldmv1.Tile { return &ldmv1.Tile{Value: []byte{b, b, b, b}} }

func volumeMeta(name string) storage.VolumeMeta {
	return storage.VolumeMeta{Name: name, Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8}
}
