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
	ConnReceiveWindow    = 64 << 20 // per connection (client: tiles it reads)
	StreamReceiveWindow  = 16 << 20 // per stream (client)
	MaxConcurrentStreams = 1000     // concurrent streams per connection (server)

	// The server's receive windows are smaller: request bytes its handlers
	// have not read yet are held by net/http outside the ingest budgets,
	// so they bound what one connection can make the server hold. 4 MiB a
	// stream still covers a 1 Gbit/s link with a 30 ms round trip.
	ServerConnReceiveWindow   = 8 << 20
	ServerStreamReceiveWindow = 4 << 20
)

// Server returns the HTTP/2 settings of an ldm server. Each call returns a
// new value the caller owns.
func Server() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams:          MaxConcurrentStreams,
		MaxReadFrameSize:              MaxReadFrameSize,
		MaxReceiveBufferPerConnection: ServerConnReceiveWindow,
		MaxReceiveBufferPerStream:     ServerStreamReceiveWindow,
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
