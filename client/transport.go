package client

import (
	"crypto/tls"
	"net/http"

	"github.com/xcheng85/go-ldm/internal/h2conf"
)

// NewTransport returns the HTTP transport ldm.v1 clients should use: HTTP/2
// only, as h2c (cleartext HTTP/2 with prior knowledge) for http:// URLs and
// HTTP/2 over TLS (ALPN h2) for https:// URLs, with frames and flow-control
// windows sized for tiles (the same as the server's). gRPC needs HTTP/2, and
// Connect streams (WriteTileStream) need it to be full duplex.
//
// tlsConfig is used for https:// URLs; nil means the system roots. It is
// used as given, not copied: do not change it afterwards. The transport
// cannot reach a server that speaks only HTTP/1.1. Each call returns a new
// transport with its own connection pool; share one between the clients of a
// program.
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	return h2conf.Transport(tlsConfig)
}

// defaultHTTPClient is the http.Client of a Config without one.
var defaultHTTPClient = &http.Client{Transport: NewTransport(nil)}
