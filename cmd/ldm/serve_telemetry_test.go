package main

import (
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/server"
)

// TestServe_telemetry_flags maps the telemetry flags and their LDM_*
// variables onto server.TelemetryConfig.
func TestServe_telemetry_flags(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg, err := serveConfig(t)
		if err != nil {
			t.Fatal(err)
		}
		want := server.TelemetryConfig{TraceSampleRatio: 1, MaxVolumeLabels: server.DefaultMaxVolumeLabels,
			ReadyMaxLag: server.DefaultReadyMaxLag, ReadyMaxContact: server.DefaultReadyMaxContact}
		if cfg.Telemetry != want {
			t.Fatalf("Telemetry %+v, want %+v", cfg.Telemetry, want)
		}
	})
	t.Run("flags_and_env", func(t *testing.T) {
		t.Setenv("LDM_OTLP_ENDPOINT", "http://collector:4318")
		cfg, err := serveConfig(t, "--metrics=false", "--tracing=true", "--trace-sample-ratio=0.25",
			"--metrics-max-volumes=5", "--ready-max-lag=10", "--ready-max-contact=2s")
		if err != nil {
			t.Fatal(err)
		}
		want := server.TelemetryConfig{DisableMetrics: true, OTLPEndpoint: "http://collector:4318", TraceSampleRatio: 0.25,
			MaxVolumeLabels: 5, ReadyMaxLag: 10, ReadyMaxContact: 2 * time.Second}
		if cfg.Telemetry != want {
			t.Fatalf("Telemetry %+v, want %+v", cfg.Telemetry, want)
		}
	})
}
