package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/service/auth"
)

// scrape GETs url + /metrics with the header and parses it with the
// Prometheus text parser. It fails the test on a status other than 200.
func scrape(tb testing.TB, url string, header http.Header) map[string]*dto.MetricFamily {
	tb.Helper()
	code, body := get(tb, url+server.MetricsPath, header)
	if code != http.StatusOK {
		tb.Fatalf("GET /metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func get(tb testing.TB, url string, header http.Header) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	res, err := (&http.Client{Transport: probeTransport()}).Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, body
}

// sample returns the value of the series of family name whose labels
// include want; -1 when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func createVolume(tb testing.TB, vc ldmv1connect.VolumeServiceClient, name string) {
	tb.Helper()
	if _, err := vc.CreateVolume(context.Background(), connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: name, Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		tb.Fatalf("create %s: %v", name, err)
	}
}

// TestServer_metrics_known_workload runs a workload of known tiles, sizes
// and errors over every protocol and checks the exact counts in /metrics.
func TestServer_metrics_known_workload(t *testing.T) {
	t.Parallel()
	s, _ := serve(t, server.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet,
		Telemetry: server.TelemetryConfig{MaxVolumeLabels: 1},
	})
	ctx := context.Background()
	hc := &http.Client{Transport: client.NewTransport(nil)}
	createVolume(t, volumeClient(s), "a")
	createVolume(t, volumeClient(s), "b")

	protocols := []connect.ClientOption{connect.WithProtoJSON(), connect.WithGRPC(), connect.WithGRPCWeb()}
	tc := func(i int) ldmv1connect.TileServiceClient {
		return ldmv1connect.NewTileServiceClient(hc, s.URL(), protocols[i%len(protocols)])
	}
	// 6 unary writes to a (100, 200, ... 600 bytes), 2 to b (1000, 2000).
	var bytesA, bytesB float64
	for i := range 6 {
		n := 100 * (i + 1)
		bytesA += float64(n)
		if _, err := tc(i).WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "a", Tile: &ldmv1.Tile{Value: make([]byte, n)}})); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		n := 1000 * (i + 1)
		bytesB += float64(n)
		if _, err := tc(i).WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "b", Tile: &ldmv1.Tile{Value: make([]byte, n)}})); err != nil {
			t.Fatal(err)
		}
	}
	// 3 tiles to a through WriteTileStream (gRPC): 50 bytes each.
	st := tc(1).WriteTileStream(ctx)
	for range 3 {
		if err := st.Send(&ldmv1.WriteTileStreamRequest{Volume: "a", Tile: &ldmv1.Tile{Value: make([]byte, 50)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Receive(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CloseRequest(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of WriteTileStream: %v", err)
	}
	if err := st.CloseResponse(); err != nil {
		t.Fatal(err)
	}
	bytesA += 150
	// 4 reads of a: offsets 0..3 (100+200+300+400 bytes).
	for i := range 4 {
		if _, err := tc(i).ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "a", Offset: uint64(i)})); err != nil {
			t.Fatal(err)
		}
	}
	// Errors: 2 reads past the end (OutOfRange), 1 of a missing volume
	// (NotFound), 1 write too large for the volume name rule
	// (InvalidArgument).
	for i := range 2 {
		_, err := tc(i).ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "a", Offset: 100}))
		if connect.CodeOf(err) != connect.CodeOutOfRange {
			t.Fatalf("read past the end: %v", err)
		}
	}
	if _, err := tc(0).ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "nope", Offset: 0})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("read of a missing volume: %v", err)
	}
	if _, err := tc(2).WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "Bad Name", Tile: &ldmv1.Tile{Value: []byte{1}}})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("write with a bad volume name: %v", err)
	}

	fams := scrape(t, s.URL(), nil)
	const (
		write = "/ldm.v1.TileService/WriteTile"
		read  = "/ldm.v1.TileService/ReadTile"
	)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ldm_rpc_requests_total", map[string]string{"procedure": write, "code": "ok"}, 8},
		{"ldm_rpc_requests_total", map[string]string{"procedure": write, "code": "invalid_argument"}, 1},
		{"ldm_rpc_requests_total", map[string]string{"procedure": read, "code": "ok"}, 4},
		{"ldm_rpc_requests_total", map[string]string{"procedure": read, "code": "out_of_range"}, 2},
		{"ldm_rpc_requests_total", map[string]string{"procedure": read, "code": "not_found"}, 1},
		{"ldm_rpc_requests_total", map[string]string{"procedure": "/ldm.v1.TileService/WriteTileStream", "code": "ok"}, 1},
		{"ldm_rpc_duration_seconds", map[string]string{"procedure": read}, 7},
		// MaxVolumeLabels 1: a has its own label, b counts as other.
		{"ldm_volume_tiles_written_total", map[string]string{"volume": "a"}, 9},
		{"ldm_volume_bytes_written_total", map[string]string{"volume": "a"}, bytesA},
		{"ldm_volume_tiles_written_total", map[string]string{"volume": "other"}, 2},
		{"ldm_volume_bytes_written_total", map[string]string{"volume": "other"}, bytesB},
		{"ldm_volume_tiles_written_total", map[string]string{"volume": "b"}, -1},
		{"ldm_volume_tiles_read_total", map[string]string{"volume": "a"}, 4},
		{"ldm_volume_bytes_read_total", map[string]string{"volume": "a"}, 1000},
		{"ldm_streams_open", map[string]string{"kind": "WriteTileStream"}, 0},
		{"ldm_ready", nil, 1},
		{"ldm_store_volumes", nil, 2},
		{"ldm_store_tiles", nil, 11},
		{"ldm_store_value_bytes", nil, bytesA + bytesB},
	}
	for _, c := range checks {
		if got := sample(fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The store reported its fsyncs and group commits (one write per
	// commit: at least one per acknowledged write batch).
	if got := sample(fams, "ldm_store_commit_batch_tiles", nil); got < 1 {
		t.Errorf("ldm_store_commit_batch_tiles count %v", got)
	}
	if got := sample(fams, "ldm_store_fsync_seconds", nil); got < 1 {
		t.Errorf("ldm_store_fsync_seconds count %v", got)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

// TestServer_metrics_off: with metrics and tracing off, /metrics says so
// with 404 (not the viewer's page), and the probes still answer.
func TestServer_metrics_off(t *testing.T) {
	t.Parallel()
	s, _ := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet,
		Telemetry: server.TelemetryConfig{DisableMetrics: true, DisableTracing: true}})
	if code, body := get(t, s.URL()+server.MetricsPath, nil); code != http.StatusNotFound || !strings.Contains(string(body), "--metrics=false") {
		t.Fatalf("GET /metrics with metrics off: %d %s", code, body)
	}
	for _, p := range []string{server.LivezPath, server.ReadyzPath} {
		if code, body := get(t, s.URL()+p, nil); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
}

// TestServer_metrics_authorization: with authentication on, /metrics needs
// the action read on the object "metrics": the default policy gives it to
// the subject "metrics" (and to administrators), not to others, and the
// denials are counted. The probes stay open.
func TestServer_metrics_authorization(t *testing.T) {
	t.Parallel()
	scraper, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	reader, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(auth.HashToken(scraper)+" metrics\n"+auth.HashToken(reader)+" someone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet, Auth: server.AuthConfig{TokensFile: file}})
	bearerHeader := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

	if code, body := get(t, s.URL()+server.MetricsPath, nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /metrics without credentials: %d %s", code, body)
	}
	if code, body := get(t, s.URL()+server.MetricsPath, bearerHeader(reader)); code != http.StatusForbidden {
		t.Fatalf("GET /metrics as a subject without the metrics role: %d %s", code, body)
	}
	fams := scrape(t, s.URL(), bearerHeader(scraper))
	if got := sample(fams, "ldm_auth_denials_total", map[string]string{"reason": "unauthenticated"}); got != 1 {
		t.Errorf("unauthenticated denials = %v, want 1", got)
	}
	if got := sample(fams, "ldm_auth_denials_total", map[string]string{"reason": "permission_denied"}); got != 1 {
		t.Errorf("permission denials = %v, want 1", got)
	}
	for _, p := range []string{server.LivezPath, server.ReadyzPath} {
		if code, body := get(t, s.URL()+p, nil); code != http.StatusOK {
			t.Errorf("GET %s without credentials: %d %s", p, code, body)
		}
	}
}

// TestServer_tracing_propagates_trace_context: a call that carries a W3C
// traceparent is served in that trace, and the access log record of the
// call carries its trace id.
func TestServer_tracing_propagates_trace_context(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s, _ := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: jsonLogger(&logs)})
	createVolume(t, volumeClient(s), "v")
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	req := connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte{1, 2, 3}}})
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header()))
	hc := &http.Client{Transport: client.NewTransport(nil)}
	if _, err := ldmv1connect.NewTileServiceClient(hc, s.URL(), connect.WithGRPC()).WriteTile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the access log record of WriteTile", func() bool {
		return strings.Contains(logs.String(), "WriteTile")
	})
	var found bool
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if !strings.Contains(line, `"procedure":"/ldm.v1.TileService/WriteTile"`) {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["trace_id"] != traceID.String() {
			t.Fatalf("access log record without the caller's trace id: %s", line)
		}
		found = true
	}
	if !found {
		t.Fatalf("no access log record of WriteTile:\n%s", logs.String())
	}
}

// TestServer_readiness_follower_cut_off: in a three-node cluster, a
// follower that the leader cannot reach turns not ready (/readyz 503,
// grpc.health.v1 NOT_SERVING in Check and Watch) and ready again once the
// leader reaches it.
func TestServer_readiness_follower_cut_off(t *testing.T) {
	t.Parallel()
	g1 := testutil.FixedAddr(t)
	var nodes []*server.Server
	var cuts []*cutListener
	for i, id := range []string{"n1", "n2", "n3"} {
		l := newCutListener(t)
		cuts = append(cuts, l)
		s, _ := startNode(t, id, g1, i == 0, server.Config{Listener: l})
		nodes = append(nodes, s)
	}
	hc := &http.Client{Transport: probeTransport()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ready := func(s *server.Server) (bool, string) {
		res, err := hc.Get(s.URL() + server.ReadyzPath)
		if err != nil {
			return false, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode == http.StatusOK, string(b)
	}
	testutil.WaitFor(t, 60*time.Second, "three voters, all ready", func() bool {
		voters, leader := clusterView(ctx, ldmv1connect.NewClusterServiceClient(hc, nodes[0].URL()))
		if len(voters) != 3 || leader == "" {
			return false
		}
		for _, s := range nodes {
			if ok, _ := ready(s); !ok {
				return false
			}
		}
		return true
	})
	_, leaderAddr := clusterView(ctx, ldmv1connect.NewClusterServiceClient(hc, nodes[0].URL()))
	f := slices.IndexFunc(nodes, func(s *server.Server) bool { return s.Addr().String() != leaderAddr })
	follower := nodes[f]

	// grpc.health.v1 with a real grpc-go client, Watch and Check.
	conn, err := grpc.NewClient(follower.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return probeDial(ctx, addr) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hcl := healthpb.NewHealthClient(conn)
	watch, err := hcl.Watch(ctx, &healthpb.HealthCheckRequest{Service: ldmv1connect.TileServiceName})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for {
			r, err := watch.Recv()
			if err != nil {
				t.Fatalf("Watch: %v", err)
			}
			if r.GetStatus() == want {
				return
			}
		}
	}
	next(healthpb.HealthCheckResponse_SERVING)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := hcl.Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return r.GetStatus()
	}

	cuts[f].cut(true)
	var reason string
	testutil.WaitFor(t, 30*time.Second, "the cut-off follower not ready", func() bool {
		var ok bool
		ok, reason = ready(follower)
		return !ok
	})
	if !strings.Contains(reason, "leader") {
		t.Errorf("/readyz reason %q does not name the leader", reason)
	}
	next(healthpb.HealthCheckResponse_NOT_SERVING)
	if st := check(); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check of the cut-off follower: %v", st)
	}
	for i, s := range nodes {
		if i != f {
			if ok, reason := ready(s); !ok {
				t.Errorf("%s not ready while another follower is cut off: %s", s.Addr(), reason)
			}
		}
	}
	fams := scrape(t, follower.URL(), nil)
	if got := sample(fams, "ldm_raft_has_leader", nil); got != 0 {
		t.Errorf("ldm_raft_has_leader of the cut-off follower = %v", got)
	}

	cuts[f].cut(false)
	testutil.WaitFor(t, 30*time.Second, "the follower ready again", func() bool {
		ok, _ := ready(follower)
		return ok
	})
	next(healthpb.HealthCheckResponse_SERVING)
	if st := check(); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check of the reconnected follower: %v", st)
	}
	// The connect-go health client agrees.
	cc := grpchealth.NewClient(hc, follower.URL(), connect.WithGRPC())
	if r, err := cc.Check(ctx, &grpchealth.CheckRequest{Service: ldmv1connect.VolumeServiceName}); err != nil || r.Status != grpchealth.StatusServing {
		t.Errorf("grpchealth Check: %v, %v", r, err)
	}
}

// TestServer_health_Watch_ends_at_shutdown: a grpc.health.v1 Watch stream
// gets NOT_SERVING when the server starts shutting down and then ends
// cleanly, so it does not hold the shutdown for its whole timeout.
func TestServer_health_Watch_ends_at_shutdown(t *testing.T) {
	t.Parallel()
	s, stop := serve(t, server.Config{Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet, ShutdownTimeout: 10 * time.Second})
	conn, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first status: %v, %v", r, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status at shutdown: %v, %v", r, err)
	}
	if r, err := watch.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after NOT_SERVING: %v, %v (want the stream to end cleanly)", r, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// probeIP is the source address of the test's own probes. A cutListener
// lets it through while it refuses the nodes, which dial from 127.0.0.1.
const probeIP = "127.0.0.2"

func probeDial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(probeIP)}}
	return d.DialContext(ctx, "tcp", addr)
}

// probeTransport speaks h2c (HTTP/2 without TLS) from probeIP.
func probeTransport() http.RoundTripper {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Transport{
		Protocols: &p,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return probeDial(ctx, addr)
		},
	}
}

// cutListener is a listener that can cut a node off from its peers: while
// cut, it closes the connections it accepted and every new one, except
// those from probeIP.
type cutListener struct {
	net.Listener
	mu    sync.Mutex
	off   bool
	conns map[net.Conn]struct{}
}

func newCutListener(tb testing.TB) *cutListener {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return &cutListener{Listener: l, conns: map[net.Conn]struct{}{}}
}

func fromProbe(c net.Conn) bool {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	return ok && a.IP.Equal(net.ParseIP(probeIP))
}

func (l *cutListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if fromProbe(c) {
			return c, nil
		}
		l.mu.Lock()
		if l.off {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		return c, nil
	}
}

// cut cuts the node off (true) or reconnects it (false).
func (l *cutListener) cut(off bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.off = off
	if off {
		for c := range l.conns {
			c.Close()
		}
		clear(l.conns)
	}
}

// dashboardMetric matches the metric names of go-ldm and of the Go and
// process collectors in a PromQL expression.
var dashboardMetric = regexp.MustCompile(`\b(ldm_[a-z0-9_]+|go_[a-z0-9_]+|process_[a-z0-9_]+)\b`)

// TestServer_grafana_dashboard: deploy/grafana/ldm-dashboard.json is valid
// JSON and every metric its queries name is in /metrics of a running
// cluster node after a workload.
func TestServer_grafana_dashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../deploy/grafana/ldm-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	names := map[string][]string{}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range dashboardMetric.FindAllString(tg.Expr, -1) {
				names[n] = append(names[n], p.Title)
			}
		}
	}
	if len(dash.Panels) < 10 || len(names) < 20 {
		t.Fatalf("dashboard %q: %d panels naming %d metrics", dash.Title, len(dash.Panels), len(names))
	}

	file, token := rootToken(t)
	s, _ := serve(t, server.Config{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: quiet,
		Auth:    server.AuthConfig{TokensFile: file},
		Cluster: server.ClusterConfig{NodeID: "n1", GossipAddr: "127.0.0.1:0", LocalGossip: true, Key: bytes.Repeat([]byte("k"), 32)},
	})
	hc := &http.Client{Transport: client.NewTransport(nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vc := ldmv1connect.NewVolumeServiceClient(hc, s.URL(), bearer(token))
	testutil.WaitFor(t, 30*time.Second, "a leader", func() bool {
		_, err := vc.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
			Name: "v", Shape: &ldmv1.Shape{X: 64, Y: 64, Z: 64}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
		}}))
		return err == nil
	})
	tcl := ldmv1connect.NewTileServiceClient(hc, s.URL(), bearer(token))
	if _, err := tcl.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{
		Value: make([]byte, 64*64*64), Key: &ldmv1.BrickKey{},
	}})); err != nil {
		t.Fatal(err)
	}
	if _, err := tcl.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"})); err != nil {
		t.Fatal(err)
	}
	sreq := connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: "v"})
	sreq.Header().Set("Authorization", "Bearer "+token)
	bs, err := vc.StreamBricks(ctx, sreq)
	if err != nil {
		t.Fatal(err)
	}
	for bs.Receive() {
	}
	if err := bs.Err(); err != nil {
		t.Fatal(err)
	}
	// A denial, so the denial counter has a series.
	if _, err := ldmv1connect.NewTileServiceClient(hc, s.URL()).ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v"})); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("anonymous read: %v", err)
	}
	fams := scrape(t, s.URL(), http.Header{"Authorization": {"Bearer " + token}})
	have := func(n string) bool {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count", "_total"} {
			base, ok := strings.CutSuffix(n, suffix)
			if ok && fams[base] != nil {
				return true
			}
		}
		return false
	}
	for n, panels := range names {
		if !have(n) {
			t.Errorf("metric %s (panels %q) is not in /metrics", n, panels)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the server's concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// jsonLogger logs JSON records to w.
func jsonLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// otlpReceiver is an OTLP/HTTP trace collector for tests: it keeps the
// spans posted to it.
type otlpReceiver struct {
	URL   string
	mu    sync.Mutex
	spans []otlpSpan
}

// otlpSpan is a received span with the node (service.instance.id) that
// sent it.
type otlpSpan struct {
	node, name, traceID string
}

func newOTLPReceiver(tb testing.TB) *otlpReceiver {
	tb.Helper()
	r := &otlpReceiver{}
	l := testutil.Listen(tb)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		if err != nil || req.URL.Path != "/v1/traces" {
			http.Error(w, fmt.Sprintf("%s: %v", req.URL.Path, err), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, rs := range msg.GetResourceSpans() {
			var node string
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.instance.id" {
					node = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					r.spans = append(r.spans, otlpSpan{node: node, name: sp.GetName(), traceID: hex.EncodeToString(sp.GetTraceId())})
				}
			}
		}
		r.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})}
	go srv.Serve(l)
	tb.Cleanup(func() { srv.Close() })
	r.URL = "http://" + l.Addr().String()
	return r
}

func (r *otlpReceiver) received() []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.spans)
}

// TestServer_tracing_forwarded_write_otlp: with an OTLP endpoint, a write
// sent to a follower with a sampled traceparent is one trace across both
// nodes: the follower's RPC span and forward span and the leader's span
// around the forwarded command, all exported over OTLP/HTTP.
func TestServer_tracing_forwarded_write_otlp(t *testing.T) {
	t.Parallel()
	recv := newOTLPReceiver(t)
	g1 := testutil.FixedAddr(t)
	var nodes []*server.Server
	var stops []func() error
	for i, id := range []string{"n1", "n2", "n3"} {
		s, stop := startNode(t, id, g1, i == 0, server.Config{Telemetry: server.TelemetryConfig{OTLPEndpoint: recv.URL}})
		nodes, stops = append(nodes, s), append(stops, stop)
	}
	hc := &http.Client{Transport: client.NewTransport(nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var leaderAddr string
	testutil.WaitFor(t, 60*time.Second, "three voters and a leader", func() bool {
		var voters []string
		voters, leaderAddr = clusterView(ctx, ldmv1connect.NewClusterServiceClient(hc, nodes[0].URL()))
		return len(voters) == 3 && leaderAddr != ""
	})
	f := slices.IndexFunc(nodes, func(s *server.Server) bool { return s.Addr().String() != leaderAddr })
	l := slices.IndexFunc(nodes, func(s *server.Server) bool { return s.Addr().String() == leaderAddr })
	createVolume(t, volumeClient(nodes[l]), "v")

	traceID, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	spanID, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	tctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
	req := connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte{1, 2, 3}}})
	propagation.TraceContext{}.Inject(tctx, propagation.HeaderCarrier(req.Header()))
	if _, err := ldmv1connect.NewTileServiceClient(hc, nodes[f].URL(), connect.WithGRPC()).WriteTile(ctx, req); err != nil {
		t.Fatalf("write through the follower: %v", err)
	}
	// Stopping a server flushes its spans to the collector.
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	}
	ids := []string{"n1", "n2", "n3"}
	want := []otlpSpan{
		{node: ids[f], name: "ldm.v1.TileService/WriteTile", traceID: traceID.String()},
		{node: ids[f], name: "ldm.cluster.forward", traceID: traceID.String()},
		{node: ids[l], name: "ldm.raft.apply_forwarded", traceID: traceID.String()},
	}
	got := recv.received()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("span %+v not exported; got %+v", w, got)
		}
	}
}
