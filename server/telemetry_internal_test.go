package server

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// BenchmarkTelemetry_interceptors measures the per-call cost of the
// telemetry interceptors (tracing with the exporter off, then metrics)
// around a unary ReadTile handler that returns a 256 KiB tile at once: the
// interceptors are called directly, so the figure is their cost alone
// (compare it with the time of a real call in BenchmarkTelemetry_overhead).
func BenchmarkTelemetry_interceptors(b *testing.B) {
	value := make([]byte, 256<<10)
	handler := connect.UnaryFunc(func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return connect.NewResponse(&ldmv1.ReadTileResponse{Tile: &ldmv1.Tile{Value: value, Offset: 7}}), nil
	})
	for _, c := range []struct {
		name string
		tc   TelemetryConfig
	}{
		{"off", TelemetryConfig{DisableMetrics: true, DisableTracing: true}},
		{"metrics", TelemetryConfig{DisableTracing: true}},
		{"tracing", TelemetryConfig{DisableMetrics: true}},
		{"on", TelemetryConfig{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tel, err := newTelemetry(Config{Telemetry: c.tc})
			if err != nil {
				b.Fatal(err)
			}
			defer tel.close()
			call := handler
			ics := tel.interceptors()
			for i := len(ics) - 1; i >= 0; i-- {
				call = ics[i].WrapUnary(call)
			}
			req := newServerRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: 7})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := call(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// newServerRequest returns a request for the interceptors.
func newServerRequest(msg *ldmv1.ReadTileRequest) connect.AnyRequest {
	return connect.NewRequest(msg)
}
