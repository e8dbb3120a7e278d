package server

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

// spanRecorder is a TileService that keeps the span of the context each
// call is served in, as the handler sees it.
type spanRecorder struct {
	ldmv1connect.UnimplementedTileServiceHandler
	spans chan servedSpan
}

// servedSpan is the span context of a call and whether its span was
// recording while the call was served.
type servedSpan struct {
	sc        trace.SpanContext
	recording bool
}

func (s *spanRecorder) record(ctx context.Context) {
	span := trace.SpanFromContext(ctx)
	s.spans <- servedSpan{span.SpanContext(), span.IsRecording()}
}

func (s *spanRecorder) ReadTile(ctx context.Context, _ *connect.Request[ldmv1.ReadTileRequest]) (*connect.Response[ldmv1.ReadTileResponse], error) {
	s.record(ctx)
	return connect.NewResponse(&ldmv1.ReadTileResponse{}), nil
}

func (s *spanRecorder) ReadTileStream(ctx context.Context, _ *connect.Request[ldmv1.ReadTileStreamRequest], _ *connect.ServerStream[ldmv1.ReadTileStreamResponse]) error {
	s.record(ctx)
	return nil
}

// TestTelemetry_tracing_without_exporter: with tracing on and no OTLP
// endpoint, a call is served in the trace of the caller's traceparent
// (its trace id, sampled flag and tracestate, a span id of its own) or in
// a new trace, and no span is recorded for it: the ids are all that the
// logs and forwarded writes need, and all that is paid for.
func TestTelemetry_tracing_without_exporter(t *testing.T) {
	t.Parallel()
	tel, err := newTelemetry(Config{Telemetry: TelemetryConfig{DisableMetrics: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.close() })
	rec := &spanRecorder{spans: make(chan servedSpan, 1)}
	path, h := ldmv1connect.NewTileServiceHandler(rec, connect.WithInterceptors(tel.interceptors()...))
	mux := http.NewServeMux()
	mux.Handle(path, h)
	hs := &http.Server{Handler: mux}
	l := testutil.Listen(t)
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })
	tc := ldmv1connect.NewTileServiceClient(http.DefaultClient, "http://"+l.Addr().String())

	callerTrace, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	callerSpan, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, err := trace.ParseTraceState("ldm=1")
	if err != nil {
		t.Fatal(err)
	}
	inject := func(h http.Header, flags trace.TraceFlags) {
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: callerTrace, SpanID: callerSpan, TraceFlags: flags, TraceState: state, Remote: true})
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), propagation.HeaderCarrier(h))
	}
	unary := func(flags *trace.TraceFlags) servedSpan {
		req := connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"})
		if flags != nil {
			inject(req.Header(), *flags)
		}
		if _, err := tc.ReadTile(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		return <-rec.spans
	}
	stream := func(flags *trace.TraceFlags) servedSpan {
		req := connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "v"})
		if flags != nil {
			inject(req.Header(), *flags)
		}
		s, err := tc.ReadTileStream(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		for s.Receive() {
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		return <-rec.spans
	}
	for _, c := range []struct {
		name string
		call func(*trace.TraceFlags) servedSpan
	}{{"unary", unary}, {"server_stream", stream}} {
		for _, flags := range []trace.TraceFlags{trace.FlagsSampled, 0} {
			span := c.call(&flags)
			sc := span.sc
			if span.recording {
				t.Errorf("%s, caller's flags %v: the call's span is recorded with no exporter", c.name, flags)
			}
			if sc.TraceID() != callerTrace || sc.TraceFlags() != flags || sc.TraceState().String() != state.String() {
				t.Errorf("%s, caller's flags %v: served in trace %v flags %v state %q, want the caller's %v %v %q",
					c.name, flags, sc.TraceID(), sc.TraceFlags(), sc.TraceState().String(), callerTrace, flags, state.String())
			}
			if !sc.SpanID().IsValid() || sc.SpanID() == callerSpan {
				t.Errorf("%s, caller's flags %v: span id %v, want a new one", c.name, flags, sc.SpanID())
			}
		}
		a, b := c.call(nil).sc, c.call(nil).sc
		for _, sc := range []trace.SpanContext{a, b} {
			if !sc.IsValid() || sc.IsSampled() {
				t.Errorf("%s without a traceparent: span context %+v, want new valid unsampled ids", c.name, sc)
			}
		}
		if a.TraceID() == b.TraceID() || a.SpanID() == b.SpanID() {
			t.Errorf("%s without a traceparent: two calls share ids %v/%v", c.name, a.TraceID(), a.SpanID())
		}
	}
}
