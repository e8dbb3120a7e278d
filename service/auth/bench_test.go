package auth

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

const (
	benchTileBytes   = 256 << 10
	benchConcurrency = 64
)

// readTileRound makes benchConcurrency goroutines call ReadTile perWorker
// times each and returns how long the round took.
func readTileRound(tb testing.TB, c *client, perWorker int) time.Duration {
	var wg sync.WaitGroup
	errc := make(chan error, benchConcurrency)
	start := time.Now()
	for range benchConcurrency {
		wg.Go(func() {
			for range perWorker {
				resp, err := c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
				if err != nil {
					errc <- err
					return
				}
				if len(resp.Msg.GetTile().GetValue()) != benchTileBytes {
					errc <- fmt.Errorf("tile of %d bytes", len(resp.Msg.GetTile().GetValue()))
					return
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	close(errc)
	for err := range errc {
		tb.Fatal(err)
	}
	return d
}

// BenchmarkAuthOverhead measures authentication and authorization on
// 256 KiB ReadTile calls at concurrency 64 over TLS (HTTP/2, Connect
// protocol) against a baseline server without them, in the same run: each
// iteration runs one round of calls on every server, in rotating order, so
// machine noise hits all of them alike. It reports each configuration's
// throughput as a ratio of the baseline's (the median over rounds; 1.0
// means no loss, 0.95 a 5% loss), and "control/baseline", a second client
// of the baseline server, which shows how noisy the run was.
func BenchmarkAuthOverhead(b *testing.B) {
	plain := startServer(b, serverOptions{noAuth: true, tileBytes: benchTileBytes})
	authd := startServer(b, serverOptions{tileBytes: benchTileBytes})
	root := authd.pki.ClientCert(b, "root")
	type config struct {
		name   string
		c      *client
		total  time.Duration
		rounds []time.Duration
	}
	configs := []*config{
		{name: "baseline", c: plain.client(b, "connect", cred{})},
		// A second client of the baseline server: its ratio to the
		// baseline shows the noise of the measurement.
		{name: "control", c: plain.client(b, "connect", cred{})},
		{name: "token", c: authd.client(b, "connect", cred{creds: Credentials{Token: authd.tokens["reader"]}})},
		{name: "mtls", c: authd.client(b, "connect", cred{cert: &root})},
		{name: "basic", c: authd.client(b, "connect", cred{creds: Credentials{Username: "bob", Password: "bobs-password"}})},
	}
	const perWorker = 4
	for _, cf := range configs { // warm up connections and caches
		readTileRound(b, cf.c, 1)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(configs) * benchConcurrency * perWorker * benchTileBytes))
	rounds := 0
	for b.Loop() {
		for j := range configs {
			cf := configs[(rounds+j)%len(configs)]
			d := readTileRound(b, cf.c, perWorker)
			cf.total += d
			cf.rounds = append(cf.rounds, d)
		}
		rounds++
	}
	calls := float64(rounds * benchConcurrency * perWorker)
	base := configs[0]
	for _, cf := range configs {
		b.ReportMetric(calls/cf.total.Seconds(), cf.name+"_calls/s")
		if cf == base {
			continue
		}
		// The median of the per-round throughput ratios: a burst of load
		// from elsewhere on the machine spoils a round, not the figure.
		ratios := make([]float64, len(cf.rounds))
		for i := range cf.rounds {
			ratios[i] = base.rounds[i].Seconds() / cf.rounds[i].Seconds()
		}
		slices.Sort(ratios)
		b.ReportMetric(ratios[len(ratios)/2], cf.name+"/baseline")
	}
}

// BenchmarkReadTile256K is the plain throughput of each configuration on
// its own (no interleaving), with b.RunParallel at concurrency 64.
func BenchmarkReadTile256K(b *testing.B) {
	plain := startServer(b, serverOptions{noAuth: true, tileBytes: benchTileBytes})
	authd := startServer(b, serverOptions{tileBytes: benchTileBytes})
	root := authd.pki.ClientCert(b, "root")
	for _, cf := range []struct {
		name string
		c    *client
	}{
		{"baseline", plain.client(b, "connect", cred{})},
		{"token", authd.client(b, "connect", cred{creds: Credentials{Token: authd.tokens["reader"]}})},
		{"mtls", authd.client(b, "connect", cred{cert: &root})},
	} {
		b.Run(cf.name, func(b *testing.B) {
			b.SetParallelism((benchConcurrency + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.SetBytes(benchTileBytes)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := cf.c.tiles.ReadTile(context.Background(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: testVolume}))
					if err != nil {
						b.Error(err)
						return
					}
					if len(resp.Msg.GetTile().GetValue()) != benchTileBytes {
						b.Error("short tile")
						return
					}
				}
			})
		})
	}
}

// BenchmarkAuthorize is the cost of one cached authorization decision.
func BenchmarkAuthorize(b *testing.B) {
	a, err := NewAuthorizer("", "")
	if err != nil {
		b.Fatal(err)
	}
	id := Identity{Subject: "alice", Roles: []string{"reader"}, Method: MethodToken}
	b.ReportAllocs()
	for b.Loop() {
		if d, err := a.Allow(id, VolumeObject("ct-1"), ActionRead); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
}
