package main

import (
	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/server"
)

// telemetryFlags are the metrics, tracing and readiness flags of `ldm
// serve` (each also an LDM_* environment variable, for example
// LDM_OTLP_ENDPOINT).
type telemetryFlags struct {
	metrics, tracing bool
	cfg              server.TelemetryConfig
}

func (f *telemetryFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.metrics, "metrics", true, "serve Prometheus metrics at /metrics on the main port (protected like the API when authentication is on: the scraper needs read on the object \"metrics\")")
	fs.BoolVar(&f.tracing, "tracing", true, "trace calls with OpenTelemetry (W3C traceparent in and out, trace ids in the logs); spans are exported only with --otlp-endpoint")
	fs.StringVar(&f.cfg.OTLPEndpoint, "otlp-endpoint", "", "export spans with OTLP over HTTP to this collector URL (for example http://otel-collector:4318); empty exports nothing")
	fs.Float64Var(&f.cfg.TraceSampleRatio, "trace-sample-ratio", 1, "share of new traces exported when --otlp-endpoint is set (0 to 1; a caller's sampled traceparent is followed)")
	fs.IntVar(&f.cfg.MaxVolumeLabels, "metrics-max-volumes", server.DefaultMaxVolumeLabels, "volumes that get a label of their own in the per-volume metrics; later ones count as volume=\"other\"")
	fs.Uint64Var(&f.cfg.ReadyMaxLag, "ready-max-lag", server.DefaultReadyMaxLag, "Raft entries a cluster node's applied index may trail the commit index while /readyz reports ready")
	fs.DurationVar(&f.cfg.ReadyMaxContact, "ready-max-contact", server.DefaultReadyMaxContact, "how long a follower may go without hearing from the leader while /readyz reports ready")
}

// config returns the server.TelemetryConfig of the flags.
func (f *telemetryFlags) config() server.TelemetryConfig {
	c := f.cfg
	c.DisableMetrics = !f.metrics
	c.DisableTracing = !f.tracing
	return c
}
