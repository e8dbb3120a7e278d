package h2conf_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/xcheng85/go-ldm/internal/h2conf"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

// recordingListener keeps, per accepted connection, the bytes read from and
// written to it.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

type recordingConn struct {
	net.Conn
	mu          sync.Mutex
	read, wrote bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.wrote.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

// frame is one HTTP/2 frame.
type frame struct {
	typ     byte
	stream  uint32
	payload []byte
}

// HTTP/2 frame types and settings (RFC 9113).
const (
	frameData         = 0x0
	frameSettings     = 0x4
	frameWindowUpdate = 0x8

	settingMaxConcurrentStreams = 0x3
	settingInitialWindowSize    = 0x4
	settingMaxFrameSize         = 0x5
)

// frames splits b, a connection's bytes after the client preface, into
// frames (a frame cut short at the end is dropped).
func frames(b []byte) []frame {
	var out []frame
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		if len(b) < 9+n {
			break
		}
		out = append(out, frame{typ: b[3], stream: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1), payload: b[9 : 9+n]})
		b = b[9+n:]
	}
	return out
}

// settings returns the settings of the first SETTINGS frame that is not an
// acknowledgement.
func settings(tb testing.TB, fs []frame) map[uint16]uint32 {
	tb.Helper()
	for _, f := range fs {
		if f.typ == frameSettings && len(f.payload) > 0 {
			m := map[uint16]uint32{}
			for p := f.payload; len(p) >= 6; p = p[6:] {
				m[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
			}
			return m
		}
	}
	tb.Fatal("no SETTINGS frame")
	return nil
}

// connWindowIncrement is the sum of the WINDOW_UPDATE increments on stream 0.
func connWindowIncrement(fs []frame) uint32 {
	var sum uint32
	for _, f := range fs {
		if f.typ == frameWindowUpdate && f.stream == 0 && len(f.payload) == 4 {
			sum += binary.BigEndian.Uint32(f.payload) & (1<<31 - 1)
		}
	}
	return sum
}

// largestData is the length of the largest DATA frame.
func largestData(fs []frame) int {
	largest := 0
	for _, f := range fs {
		if f.typ == frameData {
			largest = max(largest, len(f.payload))
		}
	}
	return largest
}

// serveBody serves body on an HTTP/2 server with Server's settings and
// returns its listener, whose connections keep what crossed them.
func serveBody(tb testing.TB, body []byte) *recordingListener {
	tb.Helper()
	l := &recordingListener{Listener: testutil.Listen(tb)}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		HTTP2:     h2conf.Server(),
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }),
	}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	return l
}

// get reads the body at l through tr and returns the one connection's
// recorded bytes: what the client sent (after the preface) and what the
// server sent.
func get(tb testing.TB, l *recordingListener, tr *http.Transport, want []byte) (client, server []frame) {
	tb.Helper()
	res, err := (&http.Client{Transport: tr}).Get("http://" + l.Addr().String() + "/")
	if err != nil {
		tb.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || !bytes.Equal(got, want) {
		tb.Fatalf("body: %d bytes, %v; want %d bytes", len(got), err, len(want))
	}
	if res.ProtoMajor != 2 {
		tb.Fatalf("protocol %s, want HTTP/2", res.Proto)
	}
	tr.CloseIdleConnections()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) != 1 {
		tb.Fatalf("%d connections, want 1", len(l.conns))
	}
	c := l.conns[0]
	c.mu.Lock()
	defer c.mu.Unlock()
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	read, ok := bytes.CutPrefix(c.read.Bytes(), []byte(preface))
	if !ok {
		tb.Fatal("the client did not start with the HTTP/2 preface")
	}
	return frames(read), frames(c.wrote.Bytes())
}

func TestTransport_settings(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 256<<10) // 4 MiB
	t.Run("ldm_client_and_server", func(t *testing.T) {
		l := serveBody(t, body)
		client, server := get(t, l, h2conf.Transport(nil), body)
		cs := settings(t, client)
		if cs[settingMaxFrameSize] != h2conf.MaxReadFrameSize || cs[settingInitialWindowSize] != h2conf.StreamReceiveWindow {
			t.Errorf("client SETTINGS %v: want MAX_FRAME_SIZE %d, INITIAL_WINDOW_SIZE %d", cs, h2conf.MaxReadFrameSize, h2conf.StreamReceiveWindow)
		}
		if got := 65535 + connWindowIncrement(client); got < h2conf.ConnReceiveWindow {
			t.Errorf("client's connection window %d, want at least %d", got, h2conf.ConnReceiveWindow)
		}
		ss := settings(t, server)
		if ss[settingMaxFrameSize] != h2conf.MaxReadFrameSize || ss[settingInitialWindowSize] != h2conf.ServerStreamReceiveWindow || ss[settingMaxConcurrentStreams] != h2conf.MaxConcurrentStreams {
			t.Errorf("server SETTINGS %v: want MAX_FRAME_SIZE %d, INITIAL_WINDOW_SIZE %d, MAX_CONCURRENT_STREAMS %d", ss, h2conf.MaxReadFrameSize, h2conf.ServerStreamReceiveWindow, h2conf.MaxConcurrentStreams)
		}
		if got := 65535 + connWindowIncrement(server); got != h2conf.ServerConnReceiveWindow {
			t.Errorf("server's connection window %d, want %d", got, h2conf.ServerConnReceiveWindow)
		}
		// The server writes the body in frames as large as the client reads.
		if got := largestData(server); got != h2conf.MaxReadFrameSize {
			t.Errorf("largest DATA frame the server wrote: %d bytes, want %d", got, h2conf.MaxReadFrameSize)
		}
	})
	t.Run("default_client_gets_16KiB_frames", func(t *testing.T) {
		l := serveBody(t, body)
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		_, server := get(t, l, &http.Transport{Protocols: &protocols}, body)
		if got := largestData(server); got != 16<<10 {
			t.Errorf("largest DATA frame to a client with HTTP/2's default settings: %d bytes, want %d", got, 16<<10)
		}
	})
}
