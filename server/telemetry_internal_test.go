package server

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/xcheng85/go-ldm/cluster"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
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

// TestServer_metrics_raft_snapshot: a Raft snapshot of a cluster node is
// timed in ldm_raft_snapshot_seconds, capture and persist.
func TestServer_metrics_raft_snapshot(t *testing.T) {
	t.Parallel()
	s, err := New(context.Background(), Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler),
		Cluster: ClusterConfig{NodeID: "n1", GossipAddr: "127.0.0.1:0", LocalGossip: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "a leader", s.node.IsLeader)
	if _, err := s.tiles.CreateVolume(ctx, storage.VolumeMeta{Name: "v", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8}); err != nil {
		t.Fatal(err)
	}
	if err := s.node.Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{cluster.SnapshotCapture, cluster.SnapshotPersist} {
		m, err := s.tel.snapshots.GetMetricWithLabelValues(phase)
		if err != nil {
			t.Fatal(err)
		}
		var d dto.Metric
		if err := m.(prometheus.Metric).Write(&d); err != nil {
			t.Fatal(err)
		}
		if n := d.GetHistogram().GetSampleCount(); n != 1 {
			t.Errorf("ldm_raft_snapshot_seconds{phase=%q} count %d, want 1", phase, n)
		}
	}
}
