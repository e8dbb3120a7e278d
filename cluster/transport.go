package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// RaftPath is the HTTP path of the Raft upgrade endpoint on the main port.
// A peer sends an HTTP/1.1 GET with "Connection: Upgrade" and
// "Upgrade: ldm-raft/1"; the handler answers 101 Switching Protocols and
// hands the hijacked connection (a *tls.Conn under TLS) to Raft.
const RaftPath = "/_ldm/raft"

// raftProtocol is the Upgrade token of Raft connections.
const raftProtocol = "ldm-raft/1"

// errShutdown: the stream layer is closed.
var errShutdown = errors.New("raft stream layer closed")

// DialFunc dials a TCP connection; net.Dialer.DialContext is the default.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// streamLayer is a raft.StreamLayer whose listener side is fed by an HTTP
// handler (ServeHTTP hijacks upgrade requests) and whose dialer sends such
// requests. It keeps every accepted connection, so Close can cut them.
type streamLayer struct {
	addr      net.Addr
	tlsConfig *tls.Config // nil: plain TCP
	dial      DialFunc
	authorize func(*http.Request) error
	// sign returns the ClusterAuthHeader value of a request; nil without
	// a cluster key.
	sign func(method, path string) string

	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once

	mu   sync.Mutex
	live map[net.Conn]struct{}
}

var _ raft.StreamLayer = (*streamLayer)(nil)

type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

func newStreamLayer(advertise string, tlsConfig *tls.Config, dial DialFunc, authorize func(*http.Request) error) *streamLayer {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return &streamLayer{
		addr:      advertiseAddr(advertise),
		tlsConfig: tlsConfig,
		dial:      dial,
		authorize: authorize,
		conns:     make(chan net.Conn),
		closed:    make(chan struct{}),
		live:      map[net.Conn]struct{}{},
	}
}

// ServeHTTP upgrades a Raft request to a raw connection.
func (s *streamLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !headerHas(r.Header, "Connection", "upgrade") || !strings.EqualFold(r.Header.Get("Upgrade"), raftProtocol) {
		w.Header().Set("Upgrade", raftProtocol)
		http.Error(w, "raft endpoint: expected an HTTP/1.1 upgrade to "+raftProtocol, http.StatusUpgradeRequired)
		return
	}
	if r.ProtoMajor != 1 {
		http.Error(w, "raft endpoint: upgrade needs HTTP/1.1", http.StatusHTTPVersionNotSupported)
		return
	}
	if err := s.authorize(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	select {
	case <-s.closed:
		http.Error(w, "raft is shut down", http.StatusServiceUnavailable)
		return
	default:
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "raft endpoint: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// The server may have left deadlines on the connection.
	_ = conn.SetDeadline(time.Time{})
	if _, err := brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + raftProtocol + "\r\n\r\n"); err != nil {
		conn.Close()
		return
	}
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	var c net.Conn = conn
	if brw.Reader.Buffered() > 0 {
		c = &bufferedConn{Conn: conn, r: brw.Reader}
	}
	c = s.track(c)
	select {
	case s.conns <- c:
	case <-s.closed:
		c.Close()
	}
}

func headerHas(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Accept implements net.Listener.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, errShutdown
	}
}

// Close implements net.Listener. It also closes every accepted connection.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.mu.Lock()
		live := s.live
		s.live = map[net.Conn]struct{}{}
		s.mu.Unlock()
		for c := range live {
			c.Close()
		}
	})
	return nil
}

// Addr implements net.Listener: the advertised address peers dial.
func (s *streamLayer) Addr() net.Addr { return s.addr }

// Dial implements raft.StreamLayer.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var auth string
	if s.sign != nil {
		auth = s.sign(http.MethodGet, RaftPath)
	}
	conn, err := dialUpgrade(ctx, s.dial, s.tlsConfig, string(address), auth)
	if err != nil {
		return nil, err
	}
	return s.track(conn), nil
}

// dialUpgrade opens a connection to addr and upgrades it to Raft. auth,
// when not empty, is sent as the ClusterAuthHeader.
func dialUpgrade(ctx context.Context, dial DialFunc, tlsConfig *tls.Config, addr, auth string) (net.Conn, error) {
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	conn := raw
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		// Hijacking needs HTTP/1.1; the server keeps the *tls.Conn.
		cfg.NextProtos = []string{"http/1.1"}
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("raft dial %s: tls: %w", addr, err)
		}
		conn = tc
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	req := "GET " + RaftPath + " HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: " + raftProtocol + "\r\n"
	if auth != "" {
		req += ClusterAuthHeader + ": " + auth + "\r\n"
	}
	req += "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("raft dial %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("raft dial %s: upgrade refused: %s", addr, resp.Status)
	}
	_ = conn.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: conn, r: br}, nil
	}
	return conn, nil
}

// bufferedConn reads first what a bufio.Reader already holds.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// trackedConn removes itself from the stream layer when closed.
type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.live, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func (s *streamLayer) track(c net.Conn) net.Conn {
	t := &trackedConn{Conn: c, s: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		c.Close()
	default:
		s.live[t] = struct{}{}
	}
	return t
}
