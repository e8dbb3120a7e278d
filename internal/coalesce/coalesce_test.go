package coalesce

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// tcpPair returns the two ends of a TCP connection on 127.0.0.1.
func tcpPair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	l := testutil.Listen(tb)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// gatedConn is a real connection whose Writes wait for a token from gate
// and record the length of each write.
type gatedConn struct {
	net.Conn
	gate    chan struct{}
	entered chan struct{}
	mu      sync.Mutex
	writes  []int
}

func (g *gatedConn) Write(p []byte) (int, error) {
	g.entered <- struct{}{}
	<-g.gate
	g.mu.Lock()
	g.writes = append(g.writes, len(p))
	g.mu.Unlock()
	return g.Conn.Write(p)
}

func TestConn_Write(t *testing.T) {
	t.Run("coalesces_writes_made_during_a_write", func(t *testing.T) {
		raw, peer := tcpPair(t)
		g := &gatedConn{Conn: raw, gate: make(chan struct{}), entered: make(chan struct{}, 8)}
		c := NewConn(g)
		// write writes ss in a goroutine and waits for the Writes to return:
		// at once, since they are buffered.
		write := func(ss ...string) {
			t.Helper()
			wrote := make(chan error, 1)
			go func() {
				for _, s := range ss {
					if _, err := c.Write([]byte(s)); err != nil {
						wrote <- err
						return
					}
				}
				wrote <- nil
			}()
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Write of %q did not return while a system call was in progress", ss)
			}
		}
		write("a")
		<-g.entered // the writer's system call for "a" is in progress, held by the gate
		write("bb", "ccc")
		close(g.gate)
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		g.mu.Lock()
		writes := append([]int(nil), g.writes...)
		g.mu.Unlock()
		if want := []int{1, 5}; !slices.Equal(writes, want) {
			t.Fatalf("writes to the connection = %v bytes, want %v (the two writes made during the first joined)", writes, want)
		}
		got := make([]byte, 6)
		if _, err := io.ReadFull(peer, got); err != nil || string(got) != "abbccc" {
			t.Fatalf("peer read %q, %v; want abbccc", got, err)
		}
	})
	t.Run("large_write_after_buffered_bytes", func(t *testing.T) {
		raw, peer := tcpPair(t)
		g := &gatedConn{Conn: raw, gate: make(chan struct{}), entered: make(chan struct{}, 8)}
		close(g.gate)
		c := NewConn(g)
		big := bytes.Repeat([]byte{'x'}, DirectSize)
		go func() {
			_, _ = c.Write([]byte("head"))
			_, _ = c.Write(big)
			_, _ = c.Write([]byte("tail"))
			_ = c.Close()
		}()
		got, err := io.ReadAll(peer)
		if err != nil {
			t.Fatal(err)
		}
		want := append(append([]byte("head"), big...), "tail"...)
		if !bytes.Equal(got, want) {
			t.Fatalf("peer read %d bytes, want %d in order", len(got), len(want))
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if !slices.Contains(g.writes, DirectSize) {
			t.Fatalf("writes %v: the %d-byte write was not written whole by its caller", g.writes, DirectSize)
		}
	})
	t.Run("concurrent_writes_stay_whole_and_in_order", func(t *testing.T) {
		raw, peer := tcpPair(t)
		c := NewConn(raw)
		const writers, records = 8, 200
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for i := range records {
					n := 16 + r.IntN(20<<10)
					if i%50 == 0 {
						n = DirectSize + r.IntN(DirectSize)
					}
					if _, err := c.Write(record(w, i, n)); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		go func() { wg.Wait(); c.Close() }()
		next := make([]int, writers)
		for range writers * records {
			var h [12]byte
			if _, err := io.ReadFull(peer, h[:]); err != nil {
				t.Fatal(err)
			}
			w, i, n := int(binary.BigEndian.Uint32(h[0:])), int(binary.BigEndian.Uint32(h[4:])), int(binary.BigEndian.Uint32(h[8:]))
			body := make([]byte, n-12)
			if _, err := io.ReadFull(peer, body); err != nil {
				t.Fatal(err)
			}
			if w >= writers || i != next[w] {
				t.Fatalf("record %d of writer %d, want record %d", i, w, next[w])
			}
			if !bytes.Equal(body, record(w, i, n)[12:]) {
				t.Fatalf("record %d of writer %d is not whole", i, w)
			}
			next[w]++
		}
		if n, err := peer.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after the records: %d, %v; want EOF", n, err)
		}
	})
}

// record is writer w's i-th record of n bytes: a 12-byte header (w, i, n)
// and a body derived from it.
func record(w, i, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b[0:], uint32(w))
	binary.BigEndian.PutUint32(b[4:], uint32(i))
	binary.BigEndian.PutUint32(b[8:], uint32(n))
	for k := 12; k < n; k++ {
		b[k] = byte(w*31 + i*7 + k)
	}
	return b
}

func TestConn_Close(t *testing.T) {
	t.Run("writes_what_is_buffered_first", func(t *testing.T) {
		raw, peer := tcpPair(t)
		c := NewConn(raw)
		want := writeBlocks(t, c)
		done := make(chan error, 1)
		go func() { done <- c.Close() }()
		got, err := io.ReadAll(peer)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("peer read %d bytes, want the %d written before Close", len(got), len(want))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
		}
	})
	t.Run("does_not_wait_for_a_peer_that_does_not_read", func(t *testing.T) {
		setCloseTimeout(t, 10*time.Minute)
		raw, _ := tcpPair(t) // the peer never reads; cleanup closes raw
		c := NewConn(raw)
		writeErr := fillUntilBlocked(t, c)
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Close waited for a peer that does not read")
		}
		select {
		case err := <-writeErr:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked Write returned %v, want net.ErrClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a Write blocked on the full buffer did not return after Close")
		}
	})
	t.Run("closes_the_connection_within_CloseTimeout", func(t *testing.T) {
		setCloseTimeout(t, 50*time.Millisecond)
		raw, _ := tcpPair(t) // the peer never reads
		c := NewConn(raw)
		writeErr := fillUntilBlocked(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		<-writeErr
		testutil.WaitFor(t, 30*time.Second, "the wrapped connection closed", func() bool {
			return raw.(*net.TCPConn).SetNoDelay(true) != nil // fails once closed
		})
	})
	t.Run("closes_the_connection_when_its_deadline_is_cleared", func(t *testing.T) {
		// A server that took the connection over (or net/http after a
		// handler) may clear the deadline Close set: the connection is
		// closed after CloseTimeout all the same.
		setCloseTimeout(t, 50*time.Millisecond)
		raw, _ := tcpPair(t) // the peer never reads
		c := NewConn(raw)
		writeErr := fillUntilBlocked(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := raw.SetWriteDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		<-writeErr
		testutil.WaitFor(t, 30*time.Second, "the wrapped connection closed", func() bool {
			return raw.(*net.TCPConn).SetNoDelay(true) != nil // fails once closed
		})
	})
}

// TestConn_SetWriteDeadline: a deadline that has passed lets what Write
// accepted go out first (crypto/tls sets one after its close alert), and
// cuts a peer that does not read off after CloseTimeout.
func TestConn_SetWriteDeadline(t *testing.T) {
	t.Run("past_deadline_writes_what_is_buffered", func(t *testing.T) {
		raw, peer := tcpPair(t)
		c := NewConn(raw)
		want := writeBlocks(t, c)
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(peer)
			got <- b
		}()
		if err := c.SetWriteDeadline(time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("late")); err == nil {
			if err := c.Flush(); err == nil {
				t.Fatal("a write after a past write deadline succeeded")
			}
		}
		raw.Close()
		if b := <-got; !bytes.Equal(b, want) {
			t.Fatalf("peer read %d bytes, want the %d written before the deadline", len(b), len(want))
		}
	})
	t.Run("past_deadline_gives_up_on_a_peer_that_does_not_read", func(t *testing.T) {
		setCloseTimeout(t, 50*time.Millisecond)
		raw, _ := tcpPair(t) // the peer never reads
		c := NewConn(raw)
		writeErr := fillUntilBlocked(t, c)
		if err := c.SetWriteDeadline(time.Now()); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if writing {
			t.Fatal("SetWriteDeadline returned while a write was in progress")
		}
		c.Close()
		<-writeErr
	})
}

// TestListener_TLS_refused_upload_gets_its_response: HTTP/1.1 over TLS, a
// handler answers 413 without reading a large body; net/http then closes
// the TLS connection, whose close alert comes with a past write deadline.
// The client must read the whole 413, not a cut connection.
func TestListener_TLS_refused_upload_gets_its_response(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, strings.Repeat("too large ", 100), http.StatusRequestEntityTooLarge)
	}))
	srv.Listener = Listener(srv.Listener)
	srv.StartTLS()
	defer srv.Close()
	body := make([]byte, 1<<20)
	for i := range 10 {
		conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", 8*len(body))
		go func() {
			for range 8 {
				if _, err := conn.Write(body); err != nil {
					return
				}
			}
		}()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		var got []byte
		if err == nil {
			got, err = io.ReadAll(resp.Body)
		}
		conn.Close()
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(got), "too large") {
			t.Fatalf("upload %d: %v (want the whole 413 response)", i, err)
		}
	}
}

// writeBlocks writes 256 blocks of 4 KiB (block i all bytes i) to c and
// returns the bytes written.
func writeBlocks(t *testing.T, c *Conn) []byte {
	t.Helper()
	want := make([]byte, 0, 1<<20)
	for i := range 256 {
		p := bytes.Repeat([]byte{byte(i)}, 4<<10)
		want = append(want, p...)
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

func setCloseTimeout(t *testing.T, d time.Duration) {
	old := closeTimeout
	closeTimeout = d
	t.Cleanup(func() { closeTimeout = old })
}

// fillUntilBlocked writes to c, whose peer does not read, from a goroutine
// until a Write blocks on the full buffer, and returns the channel that
// gets the error that Write finally returns.
func fillUntilBlocked(t *testing.T, c *Conn) <-chan error {
	t.Helper()
	writeErr := make(chan error, 1)
	var mu sync.Mutex
	var sent int64
	go func() {
		p := make([]byte, 16<<10)
		for range 100000 { // bounded: far more than the buffers hold
			if _, err := c.Write(p); err != nil {
				writeErr <- err
				return
			}
			mu.Lock()
			sent += int64(len(p))
			mu.Unlock()
		}
		writeErr <- errors.New("100000 writes to a peer that does not read all returned")
	}()
	// Blocked: the buffer is full and the amount sent stops growing.
	var last int64 = -1
	testutil.WaitFor(t, 30*time.Second, "a Write to block on the full buffer", func() bool {
		mu.Lock()
		defer mu.Unlock()
		c.mu.Lock()
		full := c.buf != nil && len(c.buf) == cap(c.buf)
		c.mu.Unlock()
		stuck := full && sent == last
		last = sent
		return stuck
	})
	return writeErr
}

func TestConn_Write_after_failed_write(t *testing.T) {
	raw, peer := tcpPair(t)
	c := NewConn(raw)
	// The peer resets the connection: later writes to it fail.
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		_, err = c.Write(make([]byte, 1<<10))
		if err == nil {
			err = c.Flush()
		}
	}
	if err == nil {
		t.Fatal("writes to a reset connection never failed")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrWriteFailed) {
		t.Fatalf("Write after a failed buffered write: %v, want ErrWriteFailed", err)
	}
}

func TestConn_CloseWrite(t *testing.T) {
	raw, peer := tcpPair(t)
	c := NewConn(raw)
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(peer) // EOF: the writing side is shut down
	if err != nil || string(got) != "request" {
		t.Fatalf("peer read %q, %v; want request then EOF", got, err)
	}
	if _, err := peer.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "reply" {
		t.Fatalf("read %q, %v after CloseWrite; want reply", b, err)
	}
}

func TestConn_ReadFrom(t *testing.T) {
	raw, peer := tcpPair(t)
	c := NewConn(raw)
	path := filepath.Join(t.TempDir(), "body")
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	go func() {
		_, _ = c.Write([]byte("header"))
		if _, err := c.ReadFrom(f); err != nil {
			t.Error(err)
		}
		c.Close()
	}()
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("header"), body...); !bytes.Equal(got, want) {
		t.Fatalf("peer read %d bytes, want the header then the file (%d)", len(got), len(want))
	}
}

func TestListener_Accept(t *testing.T) {
	l := Listener(testutil.Listen(t))
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*Conn); !ok {
		t.Fatalf("accepted %T, want *coalesce.Conn", c)
	}
}

// countingConn is a real connection that records the length of each Read's
// buffer.
type countingConn struct {
	net.Conn
	mu    sync.Mutex
	reads []int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads = append(c.reads, len(p))
	c.mu.Unlock()
	return c.Conn.Read(p)
}

func TestConn_Read(t *testing.T) {
	t.Run("small_reads_share_a_system_call", func(t *testing.T) {
		raw, peer := tcpPair(t)
		cc := &countingConn{Conn: raw}
		c := NewConn(cc)
		// Twenty 9-byte "frame headers" sent together, read one by one as
		// net/http's HTTP/2 server reads them.
		var sent []byte
		for i := range 20 {
			sent = append(sent, bytes.Repeat([]byte{byte(i)}, 9)...)
		}
		if _, err := peer.Write(sent); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for range 20 {
			h := make([]byte, 9)
			if _, err := io.ReadFull(c, h); err != nil {
				t.Fatal(err)
			}
			got = append(got, h...)
		}
		if !bytes.Equal(got, sent) {
			t.Fatalf("read %x, want %x", got, sent)
		}
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if len(cc.reads) >= 20 {
			t.Fatalf("%d reads of the connection for 20 small Reads of bytes that arrived together, want fewer", len(cc.reads))
		}
	})
	t.Run("large_read_goes_to_the_connection", func(t *testing.T) {
		raw, peer := tcpPair(t)
		cc := &countingConn{Conn: raw}
		c := NewConn(cc)
		body := bytes.Repeat([]byte("abcdefgh"), 64<<10) // 512 KiB
		go func() {
			_, _ = peer.Write([]byte("head"))
			_, _ = peer.Write(body)
			peer.Close()
		}()
		h := make([]byte, 4)
		if _, err := io.ReadFull(c, h); err != nil || string(h) != "head" {
			t.Fatalf("read %q, %v; want head", h, err)
		}
		got, err := io.ReadAll(io.LimitReader(c, int64(len(body))))
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("read %d bytes, %v; want the %d-byte body", len(got), err, len(body))
		}
		if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Fatalf("after the body: %d, %v; want EOF", n, err)
		}
		cc.mu.Lock()
		defer cc.mu.Unlock()
		large := 0
		for _, n := range cc.reads {
			if n > ReadBufferSize {
				large++
			}
		}
		if large == 0 {
			t.Fatalf("reads of the connection %v: none into the caller's large buffer", cc.reads)
		}
	})
}
