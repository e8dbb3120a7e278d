package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
)

// Defaults of the readiness settings in TelemetryConfig.
const (
	// DefaultReadyMaxLag is how many Raft entries a node's applied index
	// may trail its commit index (on a follower, the leader's commit index
	// as of the last append) and still be ready.
	DefaultReadyMaxLag = 1024
	// DefaultReadyMaxContact is how long a follower may go without
	// hearing from the leader and still be ready. Raft itself forgets the
	// leader after its heartbeat timeout (one second by default), which
	// normally comes first.
	DefaultReadyMaxContact = 5 * time.Second
	// DefaultHealthInterval is how often readiness is evaluated for the
	// gRPC health service and the ldm_ready gauge.
	DefaultHealthInterval = 250 * time.Millisecond
)

// healthServices are the services grpc.health.v1 reports on, besides the
// server as a whole ("").
var healthServices = []string{
	ldmv1connect.TileServiceName,
	ldmv1connect.VolumeServiceName,
	ldmv1connect.ClusterServiceName,
}

// health decides whether the server is ready and reports it through
// /readyz, grpc.health.v1 (Check and Watch) and the ldm_ready gauge. It is
// safe for concurrent use.
type health struct {
	tiles      service.Tiles
	node       *cluster.Node // nil when the server runs alone
	checker    *grpchealth.StaticChecker
	maxLag     uint64
	maxContact time.Duration
	interval   time.Duration
	stopping   atomic.Bool // set when Serve starts shutting down
	// stopped ends when Serve starts shutting down; Watch streams end
	// once they have sent NOT_SERVING (see watchEnder).
	stopped    context.Context
	stopCancel context.CancelFunc

	mu    sync.Mutex // serializes update
	ready bool       // last status reported (mu)
	gauge prometheus.Gauge
}

// newHealth returns the health of a server serving tiles (and node, when
// it is a cluster node), not ready until its first update.
func newHealth(tc TelemetryConfig, tiles service.Tiles, node *cluster.Node, reg prometheus.Registerer) *health {
	h := &health{
		tiles:      tiles,
		node:       node,
		checker:    grpchealth.NewStaticChecker(healthServices...),
		maxLag:     tc.ReadyMaxLag,
		maxContact: tc.ReadyMaxContact,
		interval:   tc.HealthInterval,
		ready:      true, // what NewStaticChecker reports; the first update corrects it
	}
	if h.maxLag == 0 {
		h.maxLag = DefaultReadyMaxLag
	}
	if h.maxContact == 0 {
		h.maxContact = DefaultReadyMaxContact
	}
	if h.interval == 0 {
		h.interval = DefaultHealthInterval
	}
	h.stopped, h.stopCancel = context.WithCancel(context.Background())
	if reg != nil {
		h.gauge = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ldm_ready",
			Help: "1 when the server is ready (see /readyz), else 0.",
		})
		reg.MustRegister(h.gauge)
	}
	h.update()
	return h
}

// check reports whether the server is ready, and why not.
func (h *health) check() (bool, string) {
	if h.stopping.Load() {
		return false, "shutting down"
	}
	if _, err := h.tiles.Volumes(); err != nil {
		return false, "store: " + err.Error()
	}
	if h.node == nil {
		return true, "store open"
	}
	r := h.node.Raft()
	_, leader := h.node.Leader()
	if leader == "" {
		return false, "no known leader (" + r.State().String() + ")"
	}
	if r.State() != raft.Leader {
		if since := time.Since(r.LastContact()); since > h.maxContact {
			return false, fmt.Sprintf("no contact with the leader %s for %s", leader, since.Round(time.Millisecond))
		}
	}
	commit, applied := r.CommitIndex(), r.AppliedIndex()
	if commit > applied+h.maxLag {
		return false, fmt.Sprintf("applied index %d trails commit index %d by more than %d", applied, commit, h.maxLag)
	}
	return true, fmt.Sprintf("%s, leader %s, applied index %d of %d", r.State(), leader, applied, commit)
}

// update checks readiness and reports a change to grpc.health.v1 and the
// gauge. It returns the result of the check.
func (h *health) update() (bool, string) {
	ok, reason := h.check()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gauge != nil {
		if ok {
			h.gauge.Set(1)
		} else {
			h.gauge.Set(0)
		}
	}
	if ok == h.ready {
		return ok, reason
	}
	h.ready = ok
	status := grpchealth.StatusNotServing
	if ok {
		status = grpchealth.StatusServing
	}
	h.checker.SetStatus("", status)
	for _, s := range healthServices {
		h.checker.SetStatus(s, status)
	}
	return ok, reason
}

// run updates readiness every interval until ctx ends.
func (h *health) run(ctx context.Context) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.update()
		}
	}
}

// stop marks the server not ready for good (it is shutting down).
func (h *health) stop() {
	h.stopping.Store(true)
	h.update()
	h.stopCancel()
}

// watchProcedure is grpc.health.v1's streaming method.
const watchProcedure = "/" + grpchealth.HealthV1ServiceName + "/Watch"

// watchEnder is an interceptor that ends grpc.health.v1 Watch streams
// cleanly when the server shuts down, right after they have sent
// NOT_SERVING: otherwise a watcher (a load balancer, a sidecar) would hold
// the connection open, and the shutdown would wait its whole timeout.
type watchEnder struct{ h *health }

func (w watchEnder) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc { return next }

func (w watchEnder) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (w watchEnder) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if conn.Spec().Procedure != watchProcedure {
			return next(ctx, conn)
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ec := &endingConn{StreamingHandlerConn: conn, cancel: cancel}
		stop := context.AfterFunc(w.h.stopped, ec.stop)
		defer stop()
		return next(ctx, ec)
	}
}

// endingConn cancels its Watch stream once the server stops and the
// stream has sent NOT_SERVING, whichever comes last.
type endingConn struct {
	connect.StreamingHandlerConn
	cancel   context.CancelFunc
	mu       sync.Mutex
	stopping bool
	last     protoreflect.EnumNumber // the status last sent
}

// notServing is grpc.health.v1.HealthCheckResponse.ServingStatus
// NOT_SERVING.
const notServing protoreflect.EnumNumber = 2

// healthStatus returns the status field of a HealthCheckResponse.
func healthStatus(msg any) (protoreflect.EnumNumber, bool) {
	m, ok := msg.(proto.Message)
	if !ok {
		return 0, false
	}
	r := m.ProtoReflect()
	fd := r.Descriptor().Fields().ByName("status")
	if fd == nil || fd.Kind() != protoreflect.EnumKind {
		return 0, false
	}
	return r.Get(fd).Enum(), true
}

func (c *endingConn) Send(msg any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.StreamingHandlerConn.Send(msg)
	if st, ok := healthStatus(msg); ok && err == nil {
		c.last = st
		if c.stopping && c.last == notServing {
			c.cancel()
		}
	}
	return err
}

func (c *endingConn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	if c.last == notServing {
		c.cancel()
	}
}

// healthReply is the body of /livez and /readyz.
type healthReply struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Reason string `json:"reason"`
}

func writeHealth(w http.ResponseWriter, ok bool, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	rep := healthReply{Status: "ok", Reason: reason}
	if !ok {
		rep.Status = "unavailable"
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rep)
}

// livez answers 200 while the process serves HTTP.
func (h *health) livez(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, true, "serving")
}

// readyz answers 200 when the server is ready, else 503, with the reason.
func (h *health) readyz(w http.ResponseWriter, _ *http.Request) {
	ok, reason := h.update()
	writeHealth(w, ok, reason)
}
