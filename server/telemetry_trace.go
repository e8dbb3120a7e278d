package server

import (
	"context"
	"math/rand/v2"
	"net/http"

	"connectrpc.com/connect"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// idTracing is the interceptor of tracing without an exporter: nothing
// would see a recorded span, so it makes no span at all. Each call gets
// a span context in the trace of the caller's W3C traceparent (keeping
// its sampled flag and tracestate, so writes forwarded to the leader
// carry the caller's decision) or in a new trace, with a span id of its
// own. The logs and the forwarded writes read the ids from the context as
// they would read those of an otelconnect span. It does what otelconnect
// with WithTrustRemote and a ParentBased(NeverSample) sampler does to the
// context, without the span, its attributes and its per-message events.
type idTracing struct{}

// traceContextPropagator reads the traceparent and tracestate headers.
var traceContextPropagator = propagation.TraceContext{}

// callContext returns ctx with the span context of a call that came with
// the headers h.
func callContext(ctx context.Context, h http.Header) context.Context {
	var sc trace.SpanContext
	if h.Get("traceparent") != "" {
		sc = trace.SpanContextFromContext(traceContextPropagator.Extract(ctx, propagation.HeaderCarrier(h)))
	}
	cfg := trace.SpanContextConfig{SpanID: newSpanID()}
	if sc.IsValid() {
		cfg.TraceID, cfg.TraceFlags, cfg.TraceState = sc.TraceID(), sc.TraceFlags(), sc.TraceState()
	} else {
		cfg.TraceID = newTraceID()
	}
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(cfg))
}

// newTraceID and newSpanID return random non-zero ids from the runtime's
// per-thread generator (no lock).
func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		putUint64(id[:8], rand.Uint64())
		putUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		putUint64(id[:], rand.Uint64())
	}
	return id
}

func putUint64(b []byte, v uint64) {
	for i := range 8 {
		b[i] = byte(v >> (8 * i))
	}
}

func (idTracing) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		return next(callContext(ctx, req.Header()), req)
	}
}

func (idTracing) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (idTracing) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(callContext(ctx, conn.RequestHeader()), conn)
	}
}
