package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// ErrRateLimited is wrapped by the error of a Basic verification that was
// refused without running bcrypt, because its client or username failed
// too often or too many verifications are waiting. The interceptor maps it
// to connect.CodeResourceExhausted with a google.rpc.RetryInfo detail and
// a Retry-After header.
var ErrRateLimited = errors.New("too many failed password checks")

// RateLimitError is the error of a refused verification: it wraps
// ErrRateLimited and says when to retry.
type RateLimitError struct {
	RetryAfter time.Duration
	Reason     string
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("%v: %s; retry in %v", ErrRateLimited, e.Reason, e.RetryAfter.Round(time.Second))
}

// Unwrap makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Unwrap() error { return ErrRateLimited }

// BasicLimit bounds the CPU that Basic authentication can be made to
// spend. bcrypt is slow on purpose (tens of milliseconds of one core per
// check), so without a bound a flood of wrong passwords fills every core
// and starves valid calls. Checks whose result is cached (a username and
// password seen before) cost one HMAC and are never limited.
//
// The zero value means the defaults.
type BasicLimit struct {
	// Concurrent is how many bcrypt checks run at once; 0 means half the
	// cores (GOMAXPROCS), at least one, so the other half keeps serving.
	Concurrent int
	// Queue is how many checks may wait for a slot; a check beyond it is
	// refused at once. 0 means 4 × Concurrent.
	Queue int
	// Burst and PerSecond shape a token bucket per client IP address and
	// another per username: each bcrypt check takes a token from both
	// (returned when the password was right), and a check that finds
	// either bucket empty is refused without running bcrypt. 0 means
	// DefaultBasicBurst and DefaultBasicPerSecond.
	Burst     int
	PerSecond float64
	// Clients bounds the buckets kept (client IPs plus usernames); when
	// it is reached, buckets that have refilled are dropped, and a new
	// client or username is refused while none can be. 0 means
	// DefaultBasicClients.
	Clients int
}

// Defaults of BasicLimit.
const (
	DefaultBasicBurst     = 10
	DefaultBasicPerSecond = 1.0
	DefaultBasicClients   = 65536
)

// withDefaults returns l with zero fields set to the defaults.
func (l BasicLimit) withDefaults() BasicLimit {
	if l.Concurrent <= 0 {
		l.Concurrent = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if l.Queue <= 0 {
		l.Queue = 4 * l.Concurrent
	}
	if l.Burst <= 0 {
		l.Burst = DefaultBasicBurst
	}
	if !(l.PerSecond > 0) || math.IsInf(l.PerSecond, 0) {
		l.PerSecond = DefaultBasicPerSecond
	}
	if l.Clients <= 0 {
		l.Clients = DefaultBasicClients
	}
	return l
}

// limiter applies a BasicLimit. It is safe for concurrent use.
type limiter struct {
	l     BasicLimit
	slots chan struct{} // a token per running bcrypt check
	queue chan struct{} // a token per check waiting or running
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket

	// runs counts bcrypt checks, running the checks in flight and peak
	// the most that ran at once (for Users.Stats).
	runs, running, peak atomic.Int64
}

// bucket is a token bucket: tokens at time at.
type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(l BasicLimit) *limiter {
	l = l.withDefaults()
	return &limiter{
		l:       l,
		slots:   make(chan struct{}, l.Concurrent),
		queue:   make(chan struct{}, l.Concurrent+l.Queue),
		now:     time.Now,
		buckets: make(map[string]*bucket),
	}
}

// take takes a token from the buckets of keys, all or none. It returns a
// RateLimitError when one is empty.
func (m *limiter) take(keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	bs := make([]*bucket, len(keys))
	for i, k := range keys {
		b := m.buckets[k]
		if b == nil {
			if len(m.buckets) >= m.l.Clients {
				m.sweepLocked(now)
			}
			if len(m.buckets) >= m.l.Clients {
				return &RateLimitError{RetryAfter: m.refill(1), Reason: "too many clients are failing authentication"}
			}
			b = &bucket{tokens: float64(m.l.Burst), at: now}
			m.buckets[k] = b
		}
		b.tokens = min(float64(m.l.Burst), b.tokens+now.Sub(b.at).Seconds()*m.l.PerSecond)
		b.at = now
		if b.tokens < 1 {
			return &RateLimitError{RetryAfter: m.refill(1 - b.tokens), Reason: "too many failed sign-ins from this client or for this user"}
		}
		bs[i] = b
	}
	for _, b := range bs {
		b.tokens--
	}
	return nil
}

// refund gives back the tokens take took, after a right password.
func (m *limiter) refund(keys ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		if b := m.buckets[k]; b != nil {
			b.tokens = min(float64(m.l.Burst), b.tokens+1)
		}
	}
}

// refill is how long n tokens take to come back.
func (m *limiter) refill(n float64) time.Duration {
	return max(time.Second, time.Duration(n/m.l.PerSecond*float64(time.Second)))
}

// sweepLocked drops the buckets that are full again.
func (m *limiter) sweepLocked(now time.Time) {
	for k, b := range m.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*m.l.PerSecond >= float64(m.l.Burst) {
			delete(m.buckets, k)
		}
	}
}

// run runs check (a bcrypt comparison) when a slot is free, waiting in the
// bounded queue. It returns a RateLimitError when the queue is full, and
// ctx's error when ctx ends first.
func (m *limiter) run(ctx context.Context, check func()) error {
	select {
	case m.queue <- struct{}{}:
	default:
		return &RateLimitError{RetryAfter: time.Second, Reason: "too many password checks are waiting"}
	}
	defer func() { <-m.queue }()
	select {
	case m.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.slots }()
	n := m.running.Add(1)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
	m.runs.Add(1)
	defer m.running.Add(-1)
	check()
	return nil
}
