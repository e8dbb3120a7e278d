package coalesce

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Sizes of the buffer.
const (
	// BufferSize is the most bytes a connection holds that are not yet
	// handed to the kernel; a Write blocks while the buffer is full. It is
	// also the largest system call the buffer makes.
	BufferSize = 256 << 10
	// DirectSize: a Write of at least this many bytes waits for what is
	// buffered to be written and is then written by the caller, without a
	// copy (a large write has nothing to gain from being joined to others).
	DirectSize = 64 << 10
	// ReadBufferSize is the read buffer of a connection: net/http's HTTP/2
	// server reads each frame header and each payload with a read of its
	// own, so small frames (requests, window updates, pings) arriving
	// together are taken from one system call. A Read of this size or
	// more, with nothing buffered, goes to the connection directly.
	ReadBufferSize = 16 << 10
	// CloseTimeout bounds how long CloseWrite waits for buffered bytes to
	// be written to a peer that does not read, and how long a closed
	// connection keeps writing them (see Close).
	CloseTimeout = 5 * time.Second
)

// ErrWriteFailed wraps the error of a buffered write, returned by the next
// Write, Close or CloseWrite: buffered bytes were accepted and then could not
// be written, so the connection's outgoing stream is broken.
var ErrWriteFailed = errors.New("coalesce: an earlier buffered write failed; the connection cannot be written to any more, close it")

// Listener returns l with every accepted connection wrapped by NewConn.
func Listener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

// Conn is a net.Conn whose small writes are copied into a buffer and written
// to the wrapped connection by a goroutine of its own. See the package
// documentation.
type Conn struct {
	net.Conn

	wmu sync.Mutex // held by Write, ReadFrom and CloseWrite: one at a time, in order

	mu      sync.Mutex
	cond    sync.Cond // on mu: the buffer has room, or the writer stopped
	buf     []byte    // bytes accepted and not yet taken by the writer
	spare   []byte    // the writer's previous batch, reused
	writing bool      // the writer goroutine runs (or a direct write is in progress)
	err     error     // the first failed write; every later write fails
	closed  bool
	// closeLater: Close found a write in progress; whoever finishes the
	// last write closes the wrapped connection.
	closeLater bool

	rmu  sync.Mutex // held by Read
	rbuf []byte     // read buffer, allocated at the first small Read
	r, w int        // rbuf[r:w] is read from the connection and not yet returned
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn {
	w := &Conn{Conn: c}
	w.cond.L = &w.mu
	return w
}

// closeTimeout is CloseTimeout; tests shorten it.
var closeTimeout = CloseTimeout

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, BufferSize); return &b }}

// Read returns what is buffered, or reads once from the wrapped connection:
// into p when it is at least ReadBufferSize bytes, otherwise into the read
// buffer, of which it returns what fits in p.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.r == c.w {
		if len(p) >= ReadBufferSize {
			return c.Conn.Read(p)
		}
		if c.rbuf == nil {
			c.rbuf = make([]byte, ReadBufferSize)
		}
		n, err := c.Conn.Read(c.rbuf)
		c.r, c.w = 0, n
		if n == 0 {
			return 0, err
		}
		// An error with bytes is returned by the next Read, as the wrapped
		// connection will return it again.
	}
	n := copy(p, c.rbuf[c.r:c.w])
	c.r += n
	return n, nil
}

// Write copies p into the buffer (waiting while it is full) and returns;
// a goroutine writes the buffer to the wrapped connection. A p of DirectSize
// bytes or more is written by the caller once the buffer is empty. The
// error of an earlier buffered write is returned (wrapped in
// ErrWriteFailed).
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) >= DirectSize {
		if err := c.drainLocked(); err != nil {
			return 0, err
		}
		c.writing = true
		c.mu.Unlock()
		n, err := c.Conn.Write(p)
		c.mu.Lock()
		c.writing = false
		if err != nil && c.err == nil {
			c.err = err
		}
		c.cond.Broadcast()
		c.closeIfLaterLocked()
		return n, err
	}
	n := 0
	for len(p) > 0 {
		if err := c.errLocked(); err != nil {
			return n, err
		}
		if c.buf == nil {
			c.buf = (*bufPool.Get().(*[]byte))[:0]
		}
		room := cap(c.buf) - len(c.buf)
		if room == 0 {
			c.cond.Wait()
			continue
		}
		k := min(room, len(p))
		c.buf = append(c.buf, p[:k]...)
		p, n = p[k:], n+k
		if !c.writing {
			c.writing = true
			go c.writeLoop()
		}
	}
	return n, nil
}

// writeLoop writes the buffer to the wrapped connection until it is empty,
// taking whatever was added during each write as the next batch.
func (c *Conn) writeLoop() {
	c.mu.Lock()
	for len(c.buf) > 0 && c.err == nil {
		batch := c.buf
		c.buf, c.spare = c.spare, nil
		c.cond.Broadcast() // an empty buffer (allocated at the next Write if nil)
		c.mu.Unlock()
		_, err := c.Conn.Write(batch)
		c.mu.Lock()
		if err != nil && c.err == nil {
			c.err = err
		}
		c.spare = batch[:0]
	}
	// Idle: the buffers go back to the pool, so an idle connection holds
	// none. After a failed write what is left is dropped.
	if c.err == nil {
		for _, b := range [][]byte{c.buf, c.spare} {
			if b != nil {
				b = b[:0]
				bufPool.Put(&b)
			}
		}
	}
	c.buf, c.spare = nil, nil
	c.writing = false
	c.cond.Broadcast()
	c.closeIfLaterLocked()
	c.mu.Unlock()
}

// closeIfLaterLocked closes the wrapped connection for a Close that found a
// write in progress, once no write is.
func (c *Conn) closeIfLaterLocked() {
	if c.closeLater && !c.writing {
		c.closeLater = false
		_ = c.Conn.Close()
	}
}

// errLocked is the error a write returns now.
func (c *Conn) errLocked() error {
	if c.closed {
		return net.ErrClosed
	}
	if c.err != nil {
		return errors.Join(ErrWriteFailed, c.err)
	}
	return nil
}

// drainLocked waits until everything buffered is written (or failed).
func (c *Conn) drainLocked() error {
	for c.writing {
		c.cond.Wait()
	}
	return c.errLocked()
}

// Flush waits until every byte accepted by Write has been written to the
// wrapped connection, and returns the error of a failed write.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drainLocked()
}

// ReadFrom forwards to the wrapped connection's ReadFrom (sendfile and
// splice for *net.TCPConn) once the buffer is written.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	err := c.drainLocked()
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

type writerOnly struct{ io.Writer }

// closeWaitLocked waits for the buffer to be written, at most CloseTimeout:
// the wrapped connection's write deadline is moved so a peer that does not
// read cannot hold it.
func (c *Conn) closeWaitLocked() {
	if c.writing {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	}
	for c.writing {
		c.cond.Wait()
	}
}

// CloseWrite writes what is buffered, then shuts down the writing side of
// the wrapped connection when it can (*net.TCPConn).
func (c *Conn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	c.closeWaitLocked()
	err := c.errLocked()
	c.mu.Unlock()
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return errors.Join(err, cw.CloseWrite())
	}
	return err
}

// CloseRead forwards to the wrapped connection's CloseRead when it has one.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return errors.ErrUnsupported
}

// Close closes the connection. Writes from then on, and a Write blocked on a
// full buffer, return net.ErrClosed. What is buffered is still written: with
// no write in progress the wrapped connection is closed at once; otherwise
// Close returns at once and the connection is closed when the writer has
// written the buffer, within CloseTimeout (a write deadline), so closing many
// connections to peers that do not read takes no longer than closing one.
// This is what the kernel does with a socket's send buffer at close; the
// read side is shut down at once when the wrapped connection can
// (*net.TCPConn), so a blocked Read returns.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	c.cond.Broadcast()
	if !c.writing {
		return c.Conn.Close()
	}
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeTimeout))
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		_ = cr.CloseRead()
	}
	c.closeLater = true
	// The deadline bounds the last write unless someone moves it again (a
	// server that took the connection over may clear deadlines): the
	// wrapped connection is closed after CloseTimeout in any case, which
	// ends a write blocked on a peer that does not read.
	time.AfterFunc(closeTimeout, func() { _ = c.Conn.Close() })
	return nil
}

// SetWriteDeadline sets the wrapped connection's write deadline. A deadline
// that has already passed (how crypto/tls ends writing after its close
// alert, and how a caller cuts writing off) first lets the bytes Write has
// accepted be written, as a socket's send buffer would hold them, for at
// most CloseTimeout: without this the last bytes of a response (a TLS
// record holding an HTTP error, the close alert) would be lost.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.drainBefore(t)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines of the wrapped connection; for the write
// side see SetWriteDeadline.
func (c *Conn) SetDeadline(t time.Time) error {
	c.drainBefore(t)
	return c.Conn.SetDeadline(t)
}

// drainBefore waits, when the deadline t has passed, until no write is in
// progress, at most CloseTimeout (then the wrapped connection's write
// deadline is cut to now, so the write in progress fails).
func (c *Conn) drainBefore(t time.Time) {
	if t.IsZero() || t.After(time.Now()) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.writing {
		return
	}
	cut := time.AfterFunc(closeTimeout, func() { _ = c.Conn.SetWriteDeadline(time.Now()) })
	defer cut.Stop()
	for c.writing {
		c.cond.Wait()
	}
}
