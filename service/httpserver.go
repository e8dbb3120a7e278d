package service

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"

	"github.com/xcheng85/go-ldm/internal/h2conf"
)

// NewHTTPServer returns the one http.Server of a node: HTTP/1.1, HTTP/2
// over cleartext (h2c, prior knowledge) and, when tlsConfig is not nil,
// HTTP/2 over TLS (ALPN h2 is added to tlsConfig's NextProtos by the
// server), with the large HTTP/2 frames and windows of internal/h2conf.
// Serve it with Serve on a plain listener, or ServeTLS(l, "", "") when
// tlsConfig is set.
//
// It sets ReadHeaderTimeout and IdleTimeout but no ReadTimeout or
// WriteTimeout, which would cut long streams. logger receives the server's
// own errors (nil means slog.Default()).
func NewHTTPServer(handler http.Handler, tlsConfig *tls.Config, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.Default()
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	if tlsConfig != nil {
		protocols.SetHTTP2(true)
		tlsConfig = tlsConfig.Clone()
	}
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		HTTP2:             h2conf.Server(),
		ErrorLog:          slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// NewTransport returns an HTTP client transport for ldm.v1 clients: HTTP/2
// only (h2c with prior knowledge for http:// URLs, ALPN h2 for https://),
// with the same large frames and windows as NewHTTPServer. tlsConfig may be
// nil (system roots).
//
// Deprecated: use client.NewTransport, which returns the same transport.
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	return h2conf.Transport(tlsConfig)
}
