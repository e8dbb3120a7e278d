package statefulset

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

const (
	// writeEvery paces the write load: one write at a time, at most one
	// per writeEvery.
	writeEvery = 10 * time.Millisecond
	// maxWrites and loadTimeout bound the write load.
	maxWrites   = 20000
	loadTimeout = 120 * time.Second
	// readyTimeout bounds a restarted pod's way back to ready.
	readyTimeout = 30 * time.Second
)

// ack is an acknowledged write.
type ack struct {
	offset uint64
	value  []byte
}

// writer writes tiles one after another through the Go client (which
// follows the leader) and measures the longest time between two
// acknowledgements. A failed write is sent again with its request id, so
// a retry never stores a tile twice.
type writer struct {
	c      *client.Client
	volume string
	stop   chan struct{}
	done   chan struct{}

	mu      sync.Mutex
	acks    []ack
	maxGap  time.Duration
	gapEnd  time.Time
	fails   int
	lastErr error
}

func startWriter(c *client.Client, volume string) *writer {
	w := &writer{c: c, volume: volume, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	deadline := time.Now().Add(loadTimeout)
	tick := time.NewTicker(writeEvery) // paces the load; not a wait for a condition
	defer tick.Stop()
	var last time.Time
	for i := 0; i < maxWrites && time.Now().Before(deadline); i++ {
		value := bytes.Repeat([]byte(fmt.Sprintf("tile %06d|", i)), 64)
		req := &ldmv1.WriteTileRequest{Volume: w.volume, Tile: &ldmv1.Tile{Value: value}, RequestId: client.NewRequestID()}
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			res, err := w.c.WriteTile(ctx, req)
			cancel()
			now := time.Now()
			w.mu.Lock()
			if err != nil {
				w.fails++
				w.lastErr = err
				w.mu.Unlock()
				if now.After(deadline) {
					return
				}
				continue
			}
			if !last.IsZero() && now.Sub(last) > w.maxGap {
				w.maxGap, w.gapEnd = now.Sub(last), now
			}
			last = now
			w.acks = append(w.acks, ack{offset: res.GetOffset(), value: value})
			w.mu.Unlock()
			break
		}
	}
}

func (w *writer) finish() {
	close(w.stop)
	<-w.done
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *writer) last() (ack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acks) == 0 {
		return ack{}, false
	}
	return w.acks[len(w.acks)-1], true
}

// ready reports whether p is ready: its /readyz answers 200 when the
// server has one; without it, it knows a leader and every pod as a voter
// and has the write acknowledged last before the check.
func (s *sts) ready(p *pod, volume string, last ack) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url()+"/readyz", nil)
	resp, err := s.hc.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		return resp.StatusCode == http.StatusOK
	}
	v, err := s.view(p)
	if err != nil || v.leader == "" || len(v.voters) != len(s.pods) {
		return false
	}
	return s.has(ctx, p, volume, last)
}

// has reports whether p serves the acknowledged write a, from its own
// store.
func (s *sts) has(ctx context.Context, p *pod, volume string, a ack) bool {
	res, err := ldmv1connect.NewTileServiceClient(s.hc, p.url()).ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: volume, Offset: a.offset}))
	return err == nil && bytes.Equal(res.Msg.GetTile().GetValue(), a.value)
}

// waitLogging waits up to readyTimeout for cond and, when it times out,
// logs what every pod reports (/readyz, members) and the ends of their
// logs.
func (s *sts) waitLogging(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ok := false
	defer func() {
		if ok {
			return
		}
		for _, p := range s.pods {
			body := ""
			if resp, err := s.hc.Get(p.url() + "/readyz"); err == nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				resp.Body.Close()
				body = resp.Status + " " + string(b)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			res, err := s.clusterClient(p).GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
			cancel()
			var servers any = err
			if err == nil {
				servers = res.Msg.GetServers()
			}
			t.Logf("%s at %s: readyz %s; servers %v; log:\n%s", p.id, p.ip, body, servers, tail(p.logPath, 25))
		}
	}()
	testutil.WaitFor(t, readyTimeout, what, cond)
	ok = true
}

// allAlive reports whether every pod lists every pod with gossip status
// alive.
func (s *sts) allAlive() bool {
	for _, p := range s.pods {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := s.clusterClient(p).GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
		cancel()
		if err != nil {
			return false
		}
		alive := 0
		for _, srv := range res.Msg.GetServers() {
			if srv.GetStatus() == "alive" {
				alive++
			}
		}
		if alive != len(s.pods) {
			return false
		}
	}
	return true
}

func (s *sts) leader() string {
	for _, p := range s.pods {
		if v, err := s.view(p); err == nil && v.leader != "" {
			return v.leader
		}
	}
	return ""
}

// rollingRestart restarts the pods one at a time, highest ordinal first
// as a StatefulSet does, each once the previous one is ready again, while
// a writer writes; then every acknowledged write must be on every pod,
// and the longest time without an acknowledged write must stay within
// maxGapElections election timeouts. With preStop, each pod first runs
// `ldm cluster leave`, as the StatefulSet's preStop hook does before the
// kubelet sends SIGTERM: it leaves the configuration, and is added back
// when it starts again, with a new address as a pod created again has.
// Without preStop the pod keeps its address (see the package comment).
func (s *sts) rollingRestart(t *testing.T, preStop bool) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	seeds := make([]string, 0, len(s.pods))
	for _, p := range s.pods {
		seeds = append(seeds, p.url())
	}
	c, err := client.New(ctx, client.Config{Seeds: seeds, HTTPClient: s.hc, RefreshInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	volume := fmt.Sprintf("rolling-%t", preStop)
	if _, err := c.CreateVolume(ctx, &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{Name: volume, Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8}}); err != nil {
		t.Fatalf("create volume: %v", err)
	}
	w := startWriter(c, volume)
	stopped := false
	defer func() {
		if !stopped {
			w.finish()
		}
	}()
	testutil.WaitFor(t, readyTimeout, "the first acknowledged writes", func() bool { return w.count() >= 20 })
	restarts := s.restarts
	for i := len(s.pods) - 1; i >= 0; i-- {
		p := s.pods[i]
		wasLeader := s.leader() == p.id
		start := time.Now()
		if preStop {
			if out, code := s.ldm(t, p, "cluster", "leave", "--server", p.url()); code != 0 {
				t.Fatalf("preStop ldm cluster leave on %s: exit %d: %s", p.id, code, out)
			}
		}
		p.stop(t)
		s.dns.withdraw(p.dnsName()) // the pod is deleted
		if preStop {
			// and created again with a new address, which gossip takes
			// at once from a member that left (see the package comment)
			old := p.ip
			p.ip = hostIP(p.i + 20*(1+restarts[p.i]))
			restarts[p.i]++
			s.nw.readdress(t, p.i, old, p.ip)
		}
		s.dns.publish(p.dnsName(), p.ip)
		if err := p.start(s.bin); err != nil {
			t.Fatal(err)
		}
		last, _ := w.last()
		s.waitLogging(t, p.id+" ready again after its restart", func() bool { return s.ready(p, volume, last) })
		s.waitLogging(t, "every pod to see "+p.id+" alive in gossip at its new address", s.allAlive)
		before := w.count()
		testutil.WaitFor(t, readyTimeout, "writes after "+p.id+" is back", func() bool { return w.count() >= before+20 })
		t.Logf("%s (leader before: %t) restarted and ready in %v", p.id, wasLeader, time.Since(start).Round(time.Millisecond))
	}
	w.finish()
	stopped = true

	w.mu.Lock()
	acks, maxGap, gapEnd, fails, lastErr := w.acks, w.maxGap, w.gapEnd, w.fails, w.lastErr
	w.mu.Unlock()
	t.Logf("%d writes acknowledged, %d failed attempts (last: %v); longest time without an acknowledged write: %v (ended %s)",
		len(acks), fails, lastErr, maxGap.Round(time.Millisecond), gapEnd.Format("15:04:05.000"))
	if limit := maxGapElections * electionTimeout; maxGap > limit {
		t.Errorf("writes were unavailable for %v during the rolling restart, longer than %d election timeouts (%v)", maxGap, maxGapElections, limit)
	}

	// Every acknowledged write, once, at its offset, on every pod.
	seen := map[uint64]bool{}
	for _, a := range acks {
		if seen[a.offset] {
			t.Fatalf("offset %d acknowledged twice", a.offset)
		}
		seen[a.offset] = true
	}
	last := acks[len(acks)-1]
	for _, p := range s.pods {
		testutil.WaitFor(t, readyTimeout, p.id+" to apply the last acknowledged write", func() bool {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			defer rcancel()
			return s.has(rctx, p, volume, last)
		})
		missing := 0
		for _, a := range acks {
			if !s.has(ctx, p, volume, a) {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("%s lacks %d of %d acknowledged writes", p.id, missing, len(acks))
		}
	}
}
