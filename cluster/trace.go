package cluster

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing of forwarded writes: the follower's node-to-node request
// carries the W3C trace context of the call that wrote, and the leader
// applies the command in a span of that trace (SpanApplyForwarded), so a
// forwarded write is one trace across both nodes. Without Config.Tracer
// the context is still carried, and no span is made.

// SpanApplyForwarded is the name of the leader's span around a command
// that a follower forwarded.
const SpanApplyForwarded = "ldm.raft.apply_forwarded"

// traceContext reads and writes the traceparent and tracestate headers.
var traceContext = propagation.TraceContext{}

// injectTrace puts the trace context of ctx, if any, on a request to a
// peer.
func injectTrace(ctx context.Context, req *http.Request) {
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))
}

// startForwarded returns the context of a forwarded command (the caller's
// trace, read from an authorized peer's request) and the span around it.
func (n *Node) startForwarded(r *http.Request) (context.Context, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	t := n.cfg.Tracer
	if t == nil {
		t = noop.NewTracerProvider().Tracer("")
	}
	return t.Start(ctx, SpanApplyForwarded, trace.WithSpanKind(trace.SpanKindServer))
}

// endSpan ends span, marking it failed with err.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
