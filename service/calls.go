package service

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// DefaultDrainGrace is how long Drain lets a stream's pending write reach
// a client before the stream is reset.
const DefaultDrainGrace = 2 * time.Second

// call is the state of one HTTP request to a service handler: the pooled
// buffers and budget bytes it holds until its response is written, and the
// controller Drain uses to end a stream whose write is blocked on a client
// that does not read.
type call struct {
	rc *http.ResponseController

	mu       sync.Mutex
	bufs     []*[]byte
	releases []func()
	finished bool // the response is written: rc must not be used
}

type callKey struct{}

// callFrom returns the call ctx belongs to, or nil outside withCalls.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// afterResponse runs f once the response of ctx's call is written, or now
// outside withCalls.
func afterResponse(ctx context.Context, f func()) {
	c := callFrom(ctx)
	if c == nil {
		f()
		return
	}
	c.mu.Lock()
	c.releases = append(c.releases, f)
	c.mu.Unlock()
}

// setWriteDeadline bounds the time the call's pending and later writes may
// take. It does nothing once the response is written.
func (c *call) setWriteDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		_ = c.rc.SetWriteDeadline(t)
	}
}

// withCalls wraps h so that every request carries a call: buffers borrowed
// and budget taken while serving it (see borrowBuffer, afterResponse) are
// given back once h has written the response.
func withCalls(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{rc: http.NewResponseController(w)}
		defer c.finish()
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	})
}

// finish marks the response written and gives back what the call held.
func (c *call) finish() {
	c.mu.Lock()
	c.finished = true
	bufs, releases := c.bufs, c.releases
	c.bufs, c.releases = nil, nil
	c.mu.Unlock()
	for _, b := range bufs {
		if cap(*b) <= maxPooledBuffer {
			*b = (*b)[:0]
			tileBuffers.Put(b)
		}
	}
	for _, f := range releases {
		f()
	}
}

// streams is the set of open streams that Drain ends.
type streams struct {
	mu       sync.Mutex
	open     map[*call]struct{}
	deadline time.Time // set by Drain: the end of the grace
}

// track registers the stream of ctx's call until the returned function
// runs. After Drain it gets the drain deadline at once.
func (s *Server) trackStream(ctx context.Context) (untrack func()) {
	c := callFrom(ctx)
	if c == nil {
		return func() {}
	}
	st := &s.streams
	st.mu.Lock()
	if st.open == nil {
		st.open = map[*call]struct{}{}
	}
	st.open[c] = struct{}{}
	deadline := st.deadline
	st.mu.Unlock()
	if !deadline.IsZero() {
		c.setWriteDeadline(deadline)
	}
	return func() {
		st.mu.Lock()
		delete(st.open, c)
		st.mu.Unlock()
	}
}

// resetBlockedStreams gives every open stream until deadline to finish
// its writes; a stream whose client does not read by then is reset (the
// blocked Send fails and the handler returns).
func (s *Server) resetBlockedStreams(deadline time.Time) {
	st := &s.streams
	st.mu.Lock()
	st.deadline = deadline
	open := make([]*call, 0, len(st.open))
	for c := range st.open {
		open = append(open, c)
	}
	st.mu.Unlock()
	for _, c := range open {
		c.setWriteDeadline(deadline)
	}
}
