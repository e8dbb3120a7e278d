package testutil

import (
	"errors"
	"net"
	"testing"
)

// Listen returns a TCP listener on a free loopback port (127.0.0.1:0), for
// a server under test: pass it as server.Config.Listener or serve on it
// directly. It is closed when the test ends, if nothing closed it before.
func Listen(tb testing.TB) net.Listener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testutil: listen on a loopback port: %v", err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("testutil: close listener: %v", err)
		}
	})
	return l
}
