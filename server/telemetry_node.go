package server

import (
	"context"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// registerNodeMetrics adds the Raft and Serf figures of node to reg and
// counts leader changes. The returned function stops the counting.
func registerNodeMetrics(reg prometheus.Registerer, node *cluster.Node) func() error {
	r := node.Raft()
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	changes := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ldm_raft_leader_changes_total",
		Help: "Leader changes this node has seen (including to no leader).",
	})
	reg.MustRegister(
		gauge("ldm_raft_term", "Current Raft term.", func() float64 { return float64(r.CurrentTerm()) }),
		gauge("ldm_raft_commit_index", "Raft commit index as this node knows it (a follower: the leader's, as of its last append).",
			func() float64 { return float64(r.CommitIndex()) }),
		gauge("ldm_raft_applied_index", "Raft index this node has applied to its store.", func() float64 { return float64(r.AppliedIndex()) }),
		gauge("ldm_raft_last_log_index", "Last index in this node's Raft log.", func() float64 { return float64(r.LastIndex()) }),
		gauge("ldm_raft_apply_lag_entries", "Commit index minus applied index on this node.", func() float64 {
			c, a := r.CommitIndex(), r.AppliedIndex()
			if c < a {
				return 0
			}
			return float64(c - a)
		}),
		gauge("ldm_raft_leader", "1 when this node is the leader.", func() float64 {
			if r.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("ldm_raft_has_leader", "1 when this node knows a leader.", func() float64 {
			if _, addr := node.Leader(); addr != "" {
				return 1
			}
			return 0
		}),
		gauge("ldm_raft_last_contact_seconds", "Time since a follower last heard from the leader (0 on the leader).", func() float64 {
			if r.State() == raft.Leader {
				return 0
			}
			t := r.LastContact()
			if t.IsZero() {
				return -1
			}
			return time.Since(t).Seconds()
		}),
		gauge("ldm_raft_last_snapshot_index", "Raft index of this node's latest snapshot.", func() float64 {
			v, _ := strconv.ParseUint(r.Stats()["last_snapshot_index"], 10, 64)
			return float64(v)
		}),
		changes,
		&membersCollector{node: node, desc: prometheus.NewDesc("ldm_serf_members", "Gossip members by status (alive, leaving, left, failed, unknown).", []string{"status"}, nil)},
	)
	obs := make(chan raft.Observation, 16)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(o)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-obs:
				changes.Inc()
			}
		}
	}()
	var once sync.Once
	return func() error {
		once.Do(func() {
			r.DeregisterObserver(o)
			close(done)
			wg.Wait()
		})
		return nil
	}
}

// memberStatuses are reported even when no member has them, so a query
// for one does not go absent.
var memberStatuses = []string{"alive", "leaving", "left", "failed", "unknown"}

// membersCollector reports the gossip members by status at each scrape.
type membersCollector struct {
	node *cluster.Node
	desc *prometheus.Desc
}

func (c *membersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *membersCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	members, err := c.node.Members(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	counts := map[string]int{}
	for _, m := range members {
		counts[m.Status]++
	}
	for _, s := range memberStatuses {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[s]), s)
		delete(counts, s)
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), s)
	}
}

// Span names of the write path.
const (
	spanStoreAppend = "ldm.store.append"
	spanRaftApply   = "ldm.raft.apply"
	spanForward     = "ldm.cluster.forward"
)

// traceWrites returns tiles with a span around every write, or tiles
// itself when it is of a type it does not know. The wrappers embed the
// concrete type, so every optional capability of it (service.ReaderInto,
// service.ReadBarrier, service.Membership, ...) stays visible.
func traceWrites(tiles service.Tiles, tracer trace.Tracer) service.Tiles {
	switch t := tiles.(type) {
	case *cluster.Node:
		return &tracedNode{Node: t, tracer: tracer}
	case *storage.Store:
		return &tracedStore{Store: t, tracer: tracer}
	}
	return tiles
}

// tracedStore is a single node's store with a span around each append.
type tracedStore struct {
	*storage.Store
	tracer trace.Tracer
}

func (s *tracedStore) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	ctx, span := startWrite(ctx, s.tracer, spanStoreAppend, volume, len(tiles))
	first, err := s.Store.Append(ctx, volume, tiles...)
	endSpan(span, err)
	return first, err
}

// tracedNode is a cluster node with a span around each write: Raft apply
// on the leader, the forwarded write on a follower.
type tracedNode struct {
	*cluster.Node
	tracer trace.Tracer
}

func (n *tracedNode) spanName() string {
	if n.Node.IsLeader() {
		return spanRaftApply
	}
	return spanForward
}

func (n *tracedNode) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	ctx, span := startWrite(ctx, n.tracer, n.spanName(), volume, len(tiles))
	first, err := n.Node.Append(ctx, volume, tiles...)
	endSpan(span, err)
	return first, err
}

func (n *tracedNode) AppendIdempotent(ctx context.Context, volume string, tiles []storage.Tile, ids []string) ([]uint64, error) {
	ctx, span := startWrite(ctx, n.tracer, n.spanName(), volume, len(tiles))
	offs, err := n.Node.AppendIdempotent(ctx, volume, tiles, ids)
	endSpan(span, err)
	return offs, err
}

// startWrite starts an internal span of a write. Attributes are set only
// on a recording span, so an unsampled write costs no allocation for them.
func startWrite(ctx context.Context, tracer trace.Tracer, name, volume string, tiles int) (context.Context, trace.Span) {
	ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindInternal))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("ldm.volume", volume), attribute.Int("ldm.tiles", tiles))
	}
	return ctx, span
}

// endSpan ends span with err's status.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(attribute.String("rpc.connect_rpc.error_code", connect.CodeOf(err).String()))
	}
	span.End()
}

// countDenials wraps an authentication or authorization interceptor: an
// error it returns itself (not one of the handler's that passes through
// it) is counted as a denial by t.
type countDenials struct {
	inner connect.Interceptor
	t     *telemetry
}

// passed marks an error that came from inside the wrapped interceptor.
type passed struct{ err error }

func (p passed) Error() string { return p.err.Error() }
func (p passed) Unwrap() error { return p.err }

// unmark returns err without the passed mark, and whether it had one.
func unmark(err error) (error, bool) {
	if p, ok := err.(passed); ok {
		return p.err, true
	}
	return err, false
}

func (d countDenials) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	wrapped := d.inner.WrapUnary(func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil {
			err = passed{err}
		}
		return res, err
	})
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := wrapped(ctx, req)
		err, inner := unmark(err)
		if err != nil && !inner {
			d.t.deny(err)
		}
		return res, err
	}
}

func (d countDenials) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return d.inner.WrapStreamingClient(next)
}

func (d countDenials) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	wrapped := d.inner.WrapStreamingHandler(func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := next(ctx, conn); err != nil {
			return passed{err}
		}
		return nil
	})
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err, inner := unmark(wrapped(ctx, conn))
		if err != nil && !inner {
			d.t.deny(err)
		}
		return err
	}
}
