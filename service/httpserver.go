package service

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// HTTP/2 tuning shared by NewHTTPServer and NewTransport. Tiles are large
// (hundreds of KiB to MiB), so frames and flow-control windows are much
// larger than the defaults (16 KiB frames written, 1 MiB windows): fewer
// frames and window updates per tile, and a stream is not stalled waiting
// for the window on a fast link.
const (
	h2MaxFrameSize      = 1 << 20  // largest frame this end reads
	h2ConnReceiveWindow = 64 << 20 // per connection
	h2StreamReceiveWin  = 16 << 20 // per stream
	h2MaxStreams        = 1000     // concurrent streams per connection
)

// NewHTTPServer returns the one http.Server of a node: HTTP/1.1, HTTP/2
// over cleartext (h2c, prior knowledge) and, when tlsConfig is not nil,
// HTTP/2 over TLS (ALPN h2 is added to tlsConfig's NextProtos by the
// server). Serve it with Serve on a plain listener, or ServeTLS(l, "", "")
// when tlsConfig is set.
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
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxStreams,
			MaxReadFrameSize:              h2MaxFrameSize,
			MaxReceiveBufferPerConnection: h2ConnReceiveWindow,
			MaxReceiveBufferPerStream:     h2StreamReceiveWin,
		},
		ErrorLog: slog.NewLogLogger(logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// NewTransport returns an HTTP client transport for ldm.v1 clients: HTTP/2
// only (h2c with prior knowledge for http:// URLs, ALPN h2 for https://),
// with the same large frames and windows as NewHTTPServer. tlsConfig may be
// nil (system roots).
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	var protocols http.Protocols
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsConfig,
		Protocols:           &protocols,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize:              h2MaxFrameSize,
			MaxReceiveBufferPerConnection: h2ConnReceiveWindow,
			MaxReceiveBufferPerStream:     h2StreamReceiveWin,
		},
	}
}
