package service

import (
	"context"
	"sync"
)

// maxPooledBuffer is the largest tile buffer kept for reuse; larger tiles
// get a buffer of their own.
const maxPooledBuffer = 8 << 20

// tileBuffers holds tile buffers for unary reads, which cannot reuse a
// buffer inside the handler: connect-go marshals the response after the
// handler returns. withCalls lends the buffers for one request and takes
// them back once the response is written.
var tileBuffers = sync.Pool{New: func() any { return new([]byte) }}

// borrowBuffer returns a buffer for a tile read and a function that hands
// it back (with the array the read used, which may be a new one) for
// release after the response is written. Outside withCalls it returns nil
// and a no-op.
func borrowBuffer(ctx context.Context) (buf []byte, keep func([]byte)) {
	c := callFrom(ctx)
	if c == nil {
		return nil, func([]byte) {}
	}
	b := tileBuffers.Get().(*[]byte)
	return *b, func(used []byte) {
		*b = used[:0]
		c.mu.Lock()
		c.bufs = append(c.bufs, b)
		c.mu.Unlock()
	}
}

// streamBuffer returns a pooled tile buffer for a stream handler that reads
// its tiles one after another into the same buffer, and a function that
// returns the buffer (the array the last read used) to the pool when the
// stream ends. Stream messages are marshaled by Send, so the buffer is free
// once the handler returns. When the store cannot read into a buffer (see
// ReaderInto), its tiles are its own arrays and nothing is pooled.
func (s *Server) streamBuffer() (buf []byte, done func(last []byte)) {
	if _, ok := s.store.(ReaderInto); !ok {
		return nil, func([]byte) {}
	}
	b := tileBuffers.Get().(*[]byte)
	return *b, func(last []byte) {
		if cap(last) <= maxPooledBuffer {
			*b = last[:0]
			tileBuffers.Put(b)
		}
	}
}
