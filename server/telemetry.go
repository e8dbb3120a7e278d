package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/cluster"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// Defaults of TelemetryConfig.
const (
	// DefaultMaxVolumeLabels is how many volumes get a label of their own
	// in the per-volume metrics; the others share volume="other".
	DefaultMaxVolumeLabels = 32
	// MetricsPath, LivezPath and ReadyzPath are where the main port serves
	// the Prometheus metrics and the probes.
	MetricsPath = "/metrics"
	LivezPath   = "/livez"
	ReadyzPath  = "/readyz"
	// ObjectMetrics is the authorization object of MetricsPath: a caller
	// needs the action "read" on it (see docs/observability.md).
	ObjectMetrics = "metrics"
)

// TelemetryConfig configures metrics and tracing. The zero value serves
// metrics at /metrics and traces every call (W3C trace context in and
// out, trace ids in the logs) without exporting spans.
type TelemetryConfig struct {
	// DisableMetrics turns /metrics and the RPC and store metrics off
	// (--metrics=false).
	DisableMetrics bool
	// DisableTracing turns tracing off (--tracing=false): no spans, no
	// trace ids in the logs, incoming trace context is not propagated.
	DisableTracing bool
	// OTLPEndpoint, when set, exports spans with OTLP over HTTP to this
	// collector URL (--otlp-endpoint, for example http://otel:4318; a URL
	// without a path gets /v1/traces). Empty exports nothing: spans are then not recorded, but trace ids
	// are still made, propagated and logged.
	OTLPEndpoint string
	// TraceSampleRatio is the share of new traces recorded and exported
	// when OTLPEndpoint is set (--trace-sample-ratio); traces started by
	// a caller follow the caller's decision. Zero means 1 (every trace).
	TraceSampleRatio float64
	// MaxVolumeLabels bounds the volume label of the per-volume metrics:
	// the first MaxVolumeLabels volumes seen get their own value, later
	// ones count as "other". Zero means DefaultMaxVolumeLabels.
	MaxVolumeLabels int

	// ReadyMaxLag is how many Raft entries the applied index may trail
	// the commit index on a ready node (--ready-max-lag); zero means
	// DefaultReadyMaxLag.
	ReadyMaxLag uint64
	// ReadyMaxContact is how long a ready follower may go without hearing
	// from the leader; zero means DefaultReadyMaxContact.
	ReadyMaxContact time.Duration
	// HealthInterval is how often readiness is evaluated for
	// grpc.health.v1 and the ldm_ready gauge; zero means
	// DefaultHealthInterval. /readyz always evaluates it afresh.
	HealthInterval time.Duration
}

// telemetry holds a server's metrics registry, tracer and the interceptor
// that measures every call.
type telemetry struct {
	reg    *prometheus.Registry // nil when metrics are off
	rpc    *rpcMetrics          // nil when metrics are off
	store  *storeMetrics        // nil when metrics are off
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	otel   connect.Interceptor // nil when tracing is off
	denied *prometheus.CounterVec
	// snapshots and snapshotFails time the Raft snapshots of a cluster
	// node; nil when metrics are off or the server runs alone.
	snapshots     *prometheus.HistogramVec
	snapshotFails *prometheus.CounterVec
}

// newTelemetry builds the metrics and the tracer of cfg.
func newTelemetry(cfg Config) (*telemetry, error) {
	tc := cfg.Telemetry
	if tc.MaxVolumeLabels < 0 {
		return nil, invalid("--metrics-max-volumes %d: must not be negative", tc.MaxVolumeLabels)
	}
	if tc.TraceSampleRatio < 0 || tc.TraceSampleRatio > 1 {
		return nil, invalid("--trace-sample-ratio %v: want 0 to 1", tc.TraceSampleRatio)
	}
	if tc.ReadyMaxContact < 0 || tc.HealthInterval < 0 {
		return nil, invalid("readiness durations must not be negative")
	}
	if tc.OTLPEndpoint != "" && tc.DisableTracing {
		return nil, invalid("--otlp-endpoint needs tracing on (drop --tracing=false)")
	}
	t := &telemetry{tracer: noop.NewTracerProvider().Tracer("")}
	if !tc.DisableMetrics {
		t.reg = prometheus.NewRegistry()
		t.reg.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		maxVol := tc.MaxVolumeLabels
		if maxVol == 0 {
			maxVol = DefaultMaxVolumeLabels
		}
		t.rpc = newRPCMetrics(t.reg, maxVol)
		t.store = newStoreMetrics(t.reg)
		t.denied = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_auth_denials_total",
			Help: "Requests refused by authentication or authorization, by reason (unauthenticated, permission_denied, resource_exhausted: the Basic limit).",
		}, []string{"reason"})
		t.reg.MustRegister(t.denied)
		if cfg.Cluster.NodeID != "" {
			t.snapshots = prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "ldm_raft_snapshot_seconds",
				Help:    "Duration of the Raft snapshot phases: capture (the FSM's Snapshot), persist (writing it), restore.",
				Buckets: []float64{.001, .01, .1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
			}, []string{"phase"})
			t.snapshotFails = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "ldm_raft_snapshot_errors_total",
				Help: "Raft snapshot phases that failed.",
			}, []string{"phase"})
			t.reg.MustRegister(t.snapshots, t.snapshotFails)
			for _, phase := range []string{cluster.SnapshotCapture, cluster.SnapshotPersist, cluster.SnapshotRestore} {
				t.snapshots.WithLabelValues(phase) // present before the first snapshot
				t.snapshotFails.WithLabelValues(phase)
			}
		}
	}
	if !tc.DisableTracing {
		tp, err := newTracerProvider(cfg)
		if err != nil {
			return nil, err
		}
		t.tp = tp
		t.tracer = tp.Tracer("github.com/xcheng85/go-ldm")
		if tc.OTLPEndpoint == "" {
			// No exporter: ids in the context, no otelconnect span.
			t.otel = idTracing{}
			return t, nil
		}
		ic, err := otelconnect.NewInterceptor(
			otelconnect.WithTracerProvider(tp),
			otelconnect.WithPropagator(propagation.TraceContext{}),
			otelconnect.WithTrustRemote(),
			otelconnect.WithoutMetrics(),
		)
		if err != nil {
			return nil, fmt.Errorf("tracing: %w", err)
		}
		t.otel = ic
	}
	return t, nil
}

// newTracerProvider returns the tracer provider of cfg: with an OTLP
// exporter when an endpoint is set, else one that records nothing.
func newTracerProvider(cfg Config) (*sdktrace.TracerProvider, error) {
	tc := cfg.Telemetry
	attrs := []attribute.KeyValue{attribute.String("service.name", "ldm")}
	if cfg.Cluster.NodeID != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.Cluster.NodeID))
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(resource.NewSchemaless(attrs...))}
	if tc.OTLPEndpoint == "" {
		// Nothing would see a recorded span: make trace ids and follow the
		// caller's sampling decision in what goes out, record nothing.
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
		return sdktrace.NewTracerProvider(opts...), nil
	}
	endpoint, err := otlpTracesURL(tc.OTLPEndpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, invalid("--otlp-endpoint %q: %v", tc.OTLPEndpoint, err)
	}
	ratio := tc.TraceSampleRatio
	if ratio == 0 {
		ratio = 1
	}
	opts = append(opts,
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	return sdktrace.NewTracerProvider(opts...), nil
}

// otlpTracesURL returns the URL spans are posted to: endpoint as given
// when it has a path, else endpoint + "/v1/traces", as with the standard
// OTEL_EXPORTER_OTLP_ENDPOINT.
func otlpTracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", invalid("--otlp-endpoint %q: want an http or https URL of an OTLP collector, for example http://otel-collector:4318", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// interceptors returns the interceptors that run first on every call:
// tracing (so the access log carries the trace id), then metrics.
func (t *telemetry) interceptors() []connect.Interceptor {
	var ics []connect.Interceptor
	if t.otel != nil {
		ics = append(ics, t.otel)
	}
	if t.rpc != nil {
		ics = append(ics, t.rpc)
	}
	return ics
}

// close flushes and stops the span exporter, if any.
func (t *telemetry) close() error {
	if t.tp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return t.tp.Shutdown(ctx)
}

// deny counts a refused request by the Connect code of err, when err is
// one of authentication's or authorization's.
func (t *telemetry) deny(err error) {
	if t.denied == nil || err == nil {
		return
	}
	switch c := connect.CodeOf(err); c {
	case connect.CodeUnauthenticated, connect.CodePermissionDenied, connect.CodeResourceExhausted:
		t.denied.WithLabelValues(c.String()).Inc()
	}
}

// metricsHandler serves the registry in the Prometheus text format.
// authorize, when set, decides who may read it.
func (t *telemetry) metricsHandler(authorize func(*http.Request) error) http.Handler {
	h := promhttp.HandlerFor(t.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	if authorize == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := authorize(r); err != nil {
			t.deny(err)
			writeConnectError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// writeConnectError answers a plain HTTP request with err's HTTP status
// and message.
func writeConnectError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch connect.CodeOf(err) {
	case connect.CodeUnauthenticated:
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Bearer realm="ldm"`)
	case connect.CodePermissionDenied:
		status = http.StatusForbidden
	case connect.CodeResourceExhausted:
		status = http.StatusTooManyRequests
	}
	msg := err.Error()
	var ce *connect.Error
	if errors.As(err, &ce) {
		msg = ce.Message()
	}
	http.Error(w, msg, status)
}

// storeObserver returns the store's observer, nil when metrics are off.
func (t *telemetry) storeObserver() storage.Observer {
	if t.store == nil {
		return nil
	}
	return t.store
}

// observeSnapshot returns the cluster node's snapshot observer, nil when
// there is nothing to report to.
func (t *telemetry) observeSnapshot() func(string, time.Duration, error) {
	if t.snapshots == nil {
		return nil
	}
	return func(phase string, d time.Duration, err error) {
		t.snapshots.WithLabelValues(phase).Observe(d.Seconds())
		if err != nil {
			t.snapshotFails.WithLabelValues(phase).Inc()
		}
	}
}

// registerer returns the registry, nil when metrics are off.
func (t *telemetry) registerer() prometheus.Registerer {
	if t.reg == nil {
		return nil
	}
	return t.reg
}

// metricsAuthorizer returns the check of MetricsPath under a.
func metricsAuthorizer(a *auth.Auth) func(*http.Request) error {
	return func(r *http.Request) error {
		_, err := a.AuthorizeHTTP(r, ObjectMetrics, auth.ActionRead)
		return err
	}
}

// traceHandler adds the trace and span ids of the context's span, when it
// has one, to every log record.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}

// rpcMetrics measures every call: counts by procedure and code, latency,
// message bytes each way, open streams, and the tiles and bytes of each
// volume. It is a connect.Interceptor; every label value it makes comes
// from a bounded set (the procedures served, the codes, at most
// MaxVolumeLabels volumes and "other").
type rpcMetrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	sent, recv    *prometheus.CounterVec
	streams       *prometheus.GaugeVec
	brickBytes    prometheus.Counter
	brickTiles    prometheus.Counter
	tilesWritten  *prometheus.CounterVec
	bytesWritten  *prometheus.CounterVec
	tilesRead     *prometheus.CounterVec
	bytesRead     *prometheus.CounterVec
	procs         atomic.Pointer[map[string]*procMetrics] // copy on write
	vols          atomic.Pointer[map[string]*volMetrics]  // copy on write
	mu            sync.Mutex                              // serializes the writers of procs and vols
	maxVolumes    int
	otherVolume   *volMetrics
	namedVolumes  int
	volumeSeenCap int // names remembered at most
}

// procMetrics are the series of one procedure.
type procMetrics struct {
	name     string
	codes    [17]atomic.Pointer[prometheus.Counter] // by connect.Code; 0 is ok
	duration prometheus.Observer
	sent     prometheus.Counter
	recv     prometheus.Counter
	streams  prometheus.Gauge
}

// volMetrics are the series of one volume label.
type volMetrics struct {
	tilesWritten, bytesWritten, tilesRead, bytesRead prometheus.Counter
}

func newRPCMetrics(reg prometheus.Registerer, maxVolumes int) *rpcMetrics {
	m := &rpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_rpc_requests_total",
			Help: "Finished calls by procedure and code (ok, or the Connect code name).",
		}, []string{"procedure", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ldm_rpc_duration_seconds",
			Help:    "Call latency by procedure (streams: their whole life).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"procedure"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_rpc_sent_bytes_total",
			Help: "Protobuf bytes of the response messages sent, by procedure.",
		}, []string{"procedure"}),
		recv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_rpc_received_bytes_total",
			Help: "Protobuf bytes of the request messages received, by procedure.",
		}, []string{"procedure"}),
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ldm_streams_open",
			Help: "Streaming calls in progress, by kind (the procedure's method).",
		}, []string{"kind"}),
		brickBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ldm_streambricks_bytes_total",
			Help: "Tile bytes sent by StreamBricks.",
		}),
		brickTiles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ldm_streambricks_tiles_total",
			Help: "Tiles sent by StreamBricks.",
		}),
		tilesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_volume_tiles_written_total",
			Help: "Tiles acknowledged to writers (WriteTile, WriteTileStream), by volume.",
		}, []string{"volume"}),
		bytesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_volume_bytes_written_total",
			Help: "Tile value bytes acknowledged to writers, by volume.",
		}, []string{"volume"}),
		tilesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_volume_tiles_read_total",
			Help: "Tiles sent to readers (ReadTile, GetBrick, ReadTileStream, StreamBricks), by volume.",
		}, []string{"volume"}),
		bytesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ldm_volume_bytes_read_total",
			Help: "Tile value bytes sent to readers (and ReadRegion's voxel bytes), by volume.",
		}, []string{"volume"}),
		maxVolumes:    maxVolumes,
		volumeSeenCap: 4096,
	}
	reg.MustRegister(m.requests, m.duration, m.sent, m.recv, m.streams, m.brickBytes, m.brickTiles,
		m.tilesWritten, m.bytesWritten, m.tilesRead, m.bytesRead)
	m.otherVolume = m.newVol("other")
	empty := map[string]*procMetrics{}
	m.procs.Store(&empty)
	vols := map[string]*volMetrics{}
	m.vols.Store(&vols)
	return m
}

func (m *rpcMetrics) newVol(name string) *volMetrics {
	return &volMetrics{
		tilesWritten: m.tilesWritten.WithLabelValues(name),
		bytesWritten: m.bytesWritten.WithLabelValues(name),
		tilesRead:    m.tilesRead.WithLabelValues(name),
		bytesRead:    m.bytesRead.WithLabelValues(name),
	}
}

// proc returns the series of a procedure, made on first use.
func (m *rpcMetrics) proc(procedure string) *procMetrics {
	if p := (*m.procs.Load())[procedure]; p != nil {
		return p
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.procs.Load()
	if p := old[procedure]; p != nil {
		return p
	}
	p := &procMetrics{
		name:     procedure,
		duration: m.duration.WithLabelValues(procedure),
		sent:     m.sent.WithLabelValues(procedure),
		recv:     m.recv.WithLabelValues(procedure),
		streams:  m.streams.WithLabelValues(method(procedure)),
	}
	next := make(map[string]*procMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[procedure] = p
	m.procs.Store(&next)
	return p
}

// method is the last element of a procedure ("/pkg.Service/Method").
func method(procedure string) string {
	for i := len(procedure) - 1; i >= 0; i-- {
		if procedure[i] == '/' {
			return procedure[i+1:]
		}
	}
	return procedure
}

// vol returns the series of a volume label: its own for the first
// maxVolumes volumes, "other" after.
func (m *rpcMetrics) vol(name string) *volMetrics {
	if v := (*m.vols.Load())[name]; v != nil {
		return v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.vols.Load()
	if v := old[name]; v != nil {
		return v
	}
	v := m.otherVolume
	if m.namedVolumes < m.maxVolumes {
		v = m.newVol(name)
		m.namedVolumes++
	} else if len(old) >= m.volumeSeenCap {
		// Remember no more names: the map stays bounded, later volumes
		// take this slow path to "other".
		return v
	}
	next := make(map[string]*volMetrics, len(old)+1)
	for k, x := range old {
		next[k] = x
	}
	next[name] = v
	m.vols.Store(&next)
	return v
}

// done records the end of a call.
func (p *procMetrics) done(m *rpcMetrics, start time.Time, err error) {
	p.duration.Observe(time.Since(start).Seconds())
	c := 0
	if err != nil {
		c = int(connect.CodeOf(err))
		if c <= 0 || c >= len(p.codes) {
			c = int(connect.CodeUnknown)
		}
	}
	ctr := p.codes[c].Load()
	if ctr == nil {
		code := "ok"
		if c != 0 {
			code = connect.Code(c).String()
		}
		x := m.requests.WithLabelValues(p.name, code)
		p.codes[c].CompareAndSwap(nil, &x)
		ctr = p.codes[c].Load()
	}
	(*ctr).Inc()
}

func (m *rpcMetrics) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		p := m.proc(req.Spec().Procedure)
		in := req.Any()
		if msg, ok := in.(proto.Message); ok {
			p.recv.Add(float64(proto.Size(msg)))
		}
		res, err := next(ctx, req)
		if err == nil && res != nil {
			out := res.Any()
			if msg, ok := out.(proto.Message); ok {
				p.sent.Add(float64(proto.Size(msg)))
			}
			m.countUnary(in, out)
		}
		p.done(m, start, err)
		return res, err
	}
}

// message returns the generated message behind msg: the service may wrap
// a response in a type of its own that embeds it (a pre-encoded tile).
func message(msg any) any {
	if pm, ok := msg.(proto.Message); ok {
		return pm.ProtoReflect().Interface()
	}
	return msg
}

// countUnary adds a successful unary call's tiles to its volume.
func (m *rpcMetrics) countUnary(in, out any) {
	out = message(out)
	switch r := message(in).(type) {
	case *ldmv1.WriteTileRequest:
		v := m.vol(r.GetVolume())
		v.tilesWritten.Inc()
		v.bytesWritten.Add(float64(len(r.GetTile().GetValue())))
	case *ldmv1.ReadTileRequest:
		if o, ok := out.(*ldmv1.ReadTileResponse); ok {
			v := m.vol(r.GetVolume())
			v.tilesRead.Inc()
			v.bytesRead.Add(float64(len(o.GetTile().GetValue())))
		}
	case *ldmv1.GetBrickRequest:
		if o, ok := out.(*ldmv1.GetBrickResponse); ok {
			v := m.vol(r.GetVolume())
			v.tilesRead.Inc()
			v.bytesRead.Add(float64(len(o.GetTile().GetValue())))
		}
	case *ldmv1.ReadRegionRequest:
		if o, ok := out.(*ldmv1.ReadRegionResponse); ok {
			m.vol(r.GetVolume()).bytesRead.Add(float64(len(o.GetData())))
		}
	}
}

func (m *rpcMetrics) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (m *rpcMetrics) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		p := m.proc(conn.Spec().Procedure)
		p.streams.Inc()
		mc := &meteredConn{StreamingHandlerConn: conn, m: m, p: p}
		err := next(ctx, mc)
		p.streams.Dec()
		p.done(m, start, err)
		return err
	}
}

// meteredConn counts the messages of one stream: their bytes, and the
// tiles of each volume (reads as they are sent, writes as they are
// acknowledged).
type meteredConn struct {
	connect.StreamingHandlerConn
	m *rpcMetrics
	p *procMetrics

	mu      sync.Mutex // Send and Receive may run on different goroutines
	vol     *volMetrics
	pending []int // sizes of the WriteTileStream tiles not acknowledged yet
	pvols   []*volMetrics
}

func (c *meteredConn) Receive(msg any) error {
	if err := c.StreamingHandlerConn.Receive(msg); err != nil {
		return err
	}
	if pm, ok := msg.(proto.Message); ok {
		c.p.recv.Add(float64(proto.Size(pm)))
	}
	switch r := message(msg).(type) {
	case *ldmv1.WriteTileStreamRequest:
		v := c.m.vol(r.GetVolume())
		c.mu.Lock()
		c.pending = append(c.pending, len(r.GetTile().GetValue()))
		c.pvols = append(c.pvols, v)
		c.mu.Unlock()
	case *ldmv1.ReadTileStreamRequest:
		v := c.m.vol(r.GetVolume())
		c.mu.Lock()
		c.vol = v
		c.mu.Unlock()
	case *ldmv1.StreamBricksRequest:
		v := c.m.vol(r.GetVolume())
		c.mu.Lock()
		c.vol = v
		c.mu.Unlock()
	}
	return nil
}

func (c *meteredConn) Send(msg any) error {
	if err := c.StreamingHandlerConn.Send(msg); err != nil {
		return err
	}
	if pm, ok := msg.(proto.Message); ok {
		c.p.sent.Add(float64(proto.Size(pm)))
	}
	switch r := message(msg).(type) {
	case *ldmv1.WriteTileStreamResponse:
		c.mu.Lock()
		if len(c.pending) > 0 {
			n, v := c.pending[0], c.pvols[0]
			c.pending, c.pvols = c.pending[1:], c.pvols[1:]
			c.mu.Unlock()
			v.tilesWritten.Inc()
			v.bytesWritten.Add(float64(n))
		} else {
			c.mu.Unlock()
		}
	case *ldmv1.ReadTileStreamResponse:
		c.sentTile(len(r.GetTile().GetValue()), false)
	case *ldmv1.StreamBricksResponse:
		if r.GetTile() != nil {
			c.sentTile(len(r.GetTile().GetValue()), true)
		}
	}
	return nil
}

func (c *meteredConn) sentTile(n int, brick bool) {
	c.mu.Lock()
	v := c.vol
	c.mu.Unlock()
	if v != nil {
		v.tilesRead.Inc()
		v.bytesRead.Add(float64(n))
	}
	if brick {
		c.m.brickTiles.Inc()
		c.m.brickBytes.Add(float64(n))
	}
}

// storeMetrics receive the tile store's fsync latencies and group-commit
// batch sizes (a storage.Observer).
type storeMetrics struct {
	fsync      prometheus.Histogram
	fsyncFails prometheus.Counter
	batch      prometheus.Histogram
}

func newStoreMetrics(reg prometheus.Registerer) *storeMetrics {
	s := &storeMetrics{
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ldm_store_fsync_seconds",
			Help:    "Latency of the tile store's fsync and fdatasync calls.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		fsyncFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ldm_store_fsync_errors_total",
			Help: "fsync and fdatasync calls of the tile store that failed.",
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ldm_store_commit_batch_tiles",
			Help:    "Tiles made durable by one group commit (per block).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 1024},
		}),
	}
	reg.MustRegister(s.fsync, s.fsyncFails, s.batch)
	return s
}

// Synced implements storage.Observer.
func (s *storeMetrics) Synced(d time.Duration, err error) {
	s.fsync.Observe(d.Seconds())
	if err != nil {
		s.fsyncFails.Inc()
	}
}

// IndexWritten implements storage.Observer.
func (s *storeMetrics) IndexWritten(entries int) { s.batch.Observe(float64(entries)) }

// storeSizeCollector reports the size of the store at each scrape: its
// volumes, tiles and tile value bytes, summed over volumes (no volume
// label: the count of volumes is not bounded). Each tile also has a
// 48-byte entry in its block's index file, which the store maps read-only,
// so ldm_store_tiles * 48 is the size of the mapped indexes.
type storeSizeCollector struct {
	tiles                   service.Tiles
	volumes, count, byteSum *prometheus.Desc
}

func newStoreSizeCollector(tiles service.Tiles) *storeSizeCollector {
	return &storeSizeCollector{
		tiles:   tiles,
		volumes: prometheus.NewDesc("ldm_store_volumes", "Volumes in the store.", nil, nil),
		count:   prometheus.NewDesc("ldm_store_tiles", "Tiles in the store, over all volumes (each has a 48-byte entry in a memory-mapped index file).", nil, nil),
		byteSum: prometheus.NewDesc("ldm_store_value_bytes", "Tile value bytes in the store, over all volumes.", nil, nil),
	}
}

func (c *storeSizeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.volumes
	ch <- c.count
	ch <- c.byteSum
}

func (c *storeSizeCollector) Collect(ch chan<- prometheus.Metric) {
	vols, err := c.tiles.Volumes()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.volumes, err)
		return
	}
	var tiles, size uint64
	for _, v := range vols {
		tiles += v.NextOffset
		size += v.SizeBytes
	}
	ch <- prometheus.MustNewConstMetric(c.volumes, prometheus.GaugeValue, float64(len(vols)))
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(tiles))
	ch <- prometheus.MustNewConstMetric(c.byteSum, prometheus.GaugeValue, float64(size))
}
