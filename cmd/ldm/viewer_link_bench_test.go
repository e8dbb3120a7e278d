package main

import (
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// link is one direction of an emulated network link shared by every
// connection through it: bytes leave at most at rate bytes/s, in the
// order they were read, and arrive delay later.
type link struct {
	mu    sync.Mutex
	rate  float64
	delay time.Duration
	free  time.Time // when the link has sent what it was given
}

// reserve books n bytes on the link and returns when they arrive.
func (l *link) reserve(n int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := time.Now()
	if l.free.After(start) {
		start = l.free
	}
	l.free = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.free.Add(l.delay)
}

// throttle runs a TCP proxy on 127.0.0.1 in front of base (an http URL)
// whose connections all share one link each way of rate bytes/s and
// one-way delay latency/2, and returns the proxy's URL. It stops when tb
// ends. It stands for a slow network in benchmarks: Chromium's network
// emulation lets a page and its dedicated worker together receive more
// than the rate asked for.
func throttle(tb testing.TB, base string, rate float64, latency time.Duration) string {
	tb.Helper()
	u, err := url.Parse(base)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	up := &link{rate: rate, delay: latency / 2}
	down := &link{rate: rate, delay: latency / 2}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns[c] = true
	}
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", u.Host)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(s)
			wg.Add(2)
			go func() { defer wg.Done(); pace(s, c, up) }()
			go func() { defer wg.Done(); pace(c, s, down) }()
		}
	}()
	return "http://" + ln.Addr().String()
}

// pace copies src to dst through l, then closes dst for writing.
func pace(dst, src net.Conn, l *link) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		for {
			b := make([]byte, 16<<10)
			n, err := src.Read(b)
			if n > 0 {
				ch <- chunk{b[:n], l.reserve(n)}
			}
			if err != nil {
				return
			}
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for c := range ch {
		if d := time.Until(c.at); d > 0 {
			t.Reset(d)
			<-t.C
		}
		if _, err := dst.Write(c.b); err != nil {
			src.Close()
			for range ch {
			}
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	} else {
		dst.Close()
	}
}
