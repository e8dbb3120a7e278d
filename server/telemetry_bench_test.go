package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/server"
)

// BenchmarkTelemetry_overhead measures what metrics and tracing (exporter
// off, the default) cost: two servers in the same process, one with
// telemetry off and one with it on, serve the same workload in
// alternating rounds, and the benchmark reports the throughput of each
// and their ratio (on_over_off: 1 means free; 0.97 is the 3% budget), and
// the CPU time per call of each (cpu_on_over_off: 1 means free, 1.03 is
// the budget), which a loaded machine disturbs less than throughput.
//
//	go test -run '^$' -bench BenchmarkTelemetry_overhead -benchtime 40x -count 3 ./server/
//
// LDM_BENCH_TELEMETRY=aa runs both servers with telemetry off: the spread
// of those ratios around 1 is what the machine's noise alone makes.
// LDM_BENCH_TELEMETRY=metrics or =tracing turns on only that part.
func BenchmarkTelemetry_overhead(b *testing.B) {
	const tileBytes = 256 << 10
	const tiles = 64
	type target struct {
		name string
		tc   ldmv1connect.TileServiceClient
	}
	var targets [2]target
	configs := []server.TelemetryConfig{{DisableMetrics: true, DisableTracing: true}, {}}
	switch os.Getenv("LDM_BENCH_TELEMETRY") {
	case "aa":
		// A/A: both servers off, to see how far apart two identical
		// servers measure on this machine.
		configs[1] = configs[0]
	case "metrics":
		configs[1].DisableTracing = true
	case "tracing":
		configs[1].DisableMetrics = true
	}
	for i, tel := range configs {
		s, _ := serve(b, server.Config{Addr: "127.0.0.1:0", DataDir: b.TempDir(), Logger: quiet, Telemetry: tel})
		createVolume(b, volumeClient(s), "v")
		hc := &http.Client{Transport: client.NewTransport(nil)}
		tc := ldmv1connect.NewTileServiceClient(hc, s.URL(), connect.WithGRPC())
		for range tiles {
			if _, err := tc.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: make([]byte, tileBytes)}})); err != nil {
				b.Fatal(err)
			}
		}
		targets[i] = target{[]string{"off", "on"}[i], tc}
	}
	value := make([]byte, tileBytes)
	read := func(tc ldmv1connect.TileServiceClient, i int64) error {
		res, err := tc.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "v", Offset: uint64(i % tiles)}))
		if err == nil && len(res.Msg.GetTile().GetValue()) != tileBytes {
			err = fmt.Errorf("tile of %d bytes", len(res.Msg.GetTile().GetValue()))
		}
		return err
	}
	write := func(tc ldmv1connect.TileServiceClient, _ int64) error {
		_, err := tc.WriteTile(context.Background(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: value}}))
		return err
	}
	for _, w := range []struct {
		name        string
		concurrency int
		ops         int // per round and server
		op          func(ldmv1connect.TileServiceClient, int64) error
	}{
		{"ReadTile_256KiB/c=16", 16, 250, read},
		{"ReadTile_256KiB/c=64", 64, 250, read},
		{"WriteTile_256KiB/c=16", 16, 50, write},
	} {
		b.Run(w.name, func(b *testing.B) {
			var elapsed, cpu [2]time.Duration
			var ops int64
			round := 0
			for b.Loop() {
				// One round runs both servers, off then on, and the next
				// on then off: drift in the machine's load, and whatever
				// one server leaves behind for the next (dirty pages,
				// garbage), hit both alike.
				for k := range targets {
					i := k ^ (round & 1)
					t := targets[i]
					c0 := processCPU(b)
					elapsed[i] += runConcurrent(b, w.concurrency, w.ops, func(n int64) error { return w.op(t.tc, n) })
					cpu[i] += processCPU(b) - c0
				}
				ops += int64(w.ops)
				round++
			}
			mbps := func(d time.Duration) float64 {
				return float64(ops) * tileBytes / d.Seconds() / 1e6
			}
			b.ReportMetric(mbps(elapsed[0]), "off_MB/s")
			b.ReportMetric(mbps(elapsed[1]), "on_MB/s")
			b.ReportMetric(elapsed[0].Seconds()/elapsed[1].Seconds(), "on_over_off")
			// CPU time (client and both servers are this process) per
			// call: steadier than throughput on a loaded machine.
			b.ReportMetric(float64(cpu[0].Microseconds())/float64(ops), "off_cpu_us/call")
			b.ReportMetric(float64(cpu[1].Microseconds())/float64(ops), "on_cpu_us/call")
			b.ReportMetric(cpu[1].Seconds()/cpu[0].Seconds(), "cpu_on_over_off")
		})
	}
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runConcurrent runs op n times from c goroutines and returns how long
// that took.
func runConcurrent(b *testing.B, c, n int, op func(int64) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	start := time.Now()
	for range c {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if err := op(i); err != nil {
					once.Do(func() { b.Error(err) })
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}
