package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"connectrpc.com/connect"
)

// ErrTLSConfig wraps every error about TLS files that do not load.
var ErrTLSConfig = errors.New("invalid TLS configuration")

// ServerTLS names the files of a server's TLS configuration.
type ServerTLS struct {
	CertFile, KeyFile string // PEM certificate chain and key; both required
	// ClientCAFile is a PEM bundle of CAs whose client certificates are
	// verified and accepted as identities. Empty means client certificates
	// are not requested.
	ClientCAFile string
	// RequireClientCert makes the handshake fail without a verified client
	// certificate. It needs ClientCAFile.
	RequireClientCert bool
	// ReloadInterval is how often, at most, a handshake checks CertFile
	// and KeyFile for a new pair: 0 means DefaultReloadInterval, a
	// negative value never.
	ReloadInterval time.Duration
	// Logger receives certificate reloads and failed reloads; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Config returns a tls.Config for an http.Server: TLS 1.2 or later (1.3
// when the client offers it), HTTP/2 and HTTP/1.1 by ALPN, and client
// certificates verified against ClientCAFile when it is set (expired
// certificates and certificates of other CAs fail the handshake).
//
// The certificate is reloaded without a restart: a handshake that comes
// ReloadInterval or more after the last check reads CertFile and KeyFile,
// and when their content changed and the new pair loads, that handshake
// and every later one present it. A pair that does not load (a key that
// does not match, a file half written) keeps the previous certificate in
// use and is logged as a warning; it is tried again when the files change
// again. ClientCAFile is read once.
func (s ServerTLS) Config() (*tls.Config, error) {
	if s.CertFile == "" || s.KeyFile == "" {
		return nil, fmt.Errorf("%w: a certificate and a key are both required", ErrTLSConfig)
	}
	r, err := newCertReloader(s)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.get,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if s.ClientCAFile != "" {
		pool, err := LoadCertPool(s.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if s.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else if s.RequireClientCert {
		return nil, fmt.Errorf("%w: requiring client certificates needs a client CA", ErrTLSConfig)
	}
	return cfg, nil
}

// LoadCertPool reads a PEM bundle of certificates into a pool.
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTLSConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrTLSConfig, path)
	}
	return pool, nil
}

// ClientTLS names the files of a client's TLS configuration.
type ClientTLS struct {
	// CAFile is a PEM bundle of CAs that verify the server; empty means the
	// system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate for mutual TLS; both
	// or neither.
	CertFile, KeyFile string
	// ServerName overrides the name verified in the server certificate
	// (default: the host of the URL).
	ServerName string
}

// Config returns a tls.Config for clients (TLS 1.2+). It leaves ALPN to
// the transport that uses it (an http.Transport offers what it speaks).
func (c ClientTLS) Config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := LoadCertPool(c.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("%w: a client certificate needs both --cert and --key", ErrTLSConfig)
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTLSConfig, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Credentials are what a client sends in the Authorization header: a bearer
// token, or a username and password (Basic). Token wins when both are set.
type Credentials struct {
	Token              string
	Username, Password string
}

// Header returns the Authorization header value of the credentials, or ""
// for none.
func (c Credentials) Header() string { return c.header() }

// header returns the Authorization value, or "" for none.
func (c Credentials) header() string {
	switch {
	case c.Token != "":
		return FormatBearer(c.Token)
	case c.Username != "":
		return FormatBasic(c.Username, c.Password)
	}
	return ""
}

// Interceptor returns a client interceptor that sets the Authorization
// header on every unary and streaming call. With no credentials it changes
// nothing.
func (c Credentials) Interceptor() connect.Interceptor { return credInterceptor{h: c.header()} }

type credInterceptor struct{ h string }

func (x credInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient && x.h != "" {
			req.Header().Set("Authorization", x.h)
		}
		return next(ctx, req)
	}
}

func (x credInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if x.h != "" {
			conn.RequestHeader().Set("Authorization", x.h)
		}
		return conn
	}
}

func (x credInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// HTTPClient returns an HTTP client for Connect, gRPC and gRPC-Web over TLS
// with HTTP/2 (and HTTP/1.1 where the server offers only that).
func HTTPClient(cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetHTTP2(true)
	return &http.Client{Transport: tr}
}
