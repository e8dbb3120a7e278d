// Package h2conf holds the HTTP/2 tuning that go-ldm's server
// (service.NewHTTPServer) and its Go clients (client.NewTransport) share, so
// both ends of a connection agree on it and it is written down once.
//
// Tiles are large (hundreds of KiB to MiB), so frames and flow-control
// windows are much larger than Go's defaults (16 KiB frames written, 1 MiB
// windows): fewer frames and window updates per tile, and a stream is not
// stalled waiting for the window on a fast link.
package h2conf

import (
	"crypto/tls"
	"net/http"
	"time"
)

// Sizes of frames, windows and streams.
const (
	MaxReadFrameSize     = 1 << 20  // largest frame an end reads
	ConnReceiveWindow    = 64 << 20 // per connection
	StreamReceiveWindow  = 16 << 20 // per stream
	MaxConcurrentStreams = 1000     // concurrent streams per connection (server)
)

// Server returns the HTTP/2 settings of an ldm server. Each call returns a
// new value the caller owns.
func Server() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          MaxConcurrentStreams,
		MaxReadFrameSize:              MaxReadFrameSize,
		MaxReceiveBufferPerConnection: ConnReceiveWindow,
		MaxReceiveBufferPerStream:     StreamReceiveWindow,
	}
}

// Transport returns an HTTP/2-only client transport: h2c with prior
// knowledge for http:// URLs, HTTP/2 over TLS (ALPN h2) for https://, with
// the frame and window sizes above. tlsConfig may be nil (system roots); it
// is used as given, not copied.
func Transport(tlsConfig *tls.Config) *http.Transport {
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
			MaxReadFrameSize:              MaxReadFrameSize,
			MaxReceiveBufferPerConnection: ConnReceiveWindow,
			MaxReceiveBufferPerStream:     StreamReceiveWindow,
		},
	}
}
