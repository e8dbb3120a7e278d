package auth_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/xcheng85/go-ldm/service/auth"
)

// BenchmarkUsers_BasicFlood measures a token client's ListVolumes latency
// while 8 clients send wrong Basic passwords (bcrypt at the default cost)
// as fast as the server answers them, as a ratio of its latency with no
// flood measured in the same run (flood/idle, median of each). unlimited
// lets every check run at once (what the server did before BasicLimit);
// concurrency bounds checks to half the cores with no failure bucket;
// default is the default BasicLimit (the flood's client IP runs out of
// failures after 10).
//
//	go test ./service/auth -run '^$' -bench BasicFlood -benchtime 200x -count 3
func BenchmarkUsers_BasicFlood(b *testing.B) {
	for _, c := range []struct {
		name  string
		limit auth.BasicLimit
	}{
		{"unlimited", auth.BasicLimit{Concurrent: 64, Queue: 64, Burst: 1 << 30, PerSecond: 1 << 30}},
		{"concurrency", auth.BasicLimit{Burst: 1 << 30, PerSecond: 1 << 30}},
		{"default", auth.BasicLimit{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			tokensFile, usersFile := filepath.Join(dir, "tokens"), filepath.Join(dir, "users")
			token, err := auth.NewToken()
			if err != nil {
				b.Fatal(err)
			}
			if err := auth.AppendToken(tokensFile, token, "alice", []string{"reader"}); err != nil {
				b.Fatal(err)
			}
			if err := auth.SetUser(usersFile, "bob", "right", []string{"reader"}, bcrypt.DefaultCost); err != nil {
				b.Fatal(err)
			}
			s := startAuthServer(b, tokensFile, usersFile, c.limit, -1)
			ctx := context.Background()
			valid := auth.FormatBearer(token)
			call := func() time.Duration {
				start := time.Now()
				if _, err := s.list(ctx, valid); err != nil {
					b.Fatal(err)
				}
				return time.Since(start)
			}
			const idleCalls = 100
			idle := make([]time.Duration, idleCalls)
			for i := range idle {
				idle[i] = call()
			}

			fctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for a := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; fctx.Err() == nil && i < 1_000_000; i++ {
						_, _ = s.list(fctx, auth.FormatBasic("bob", fmt.Sprintf("wrong-%d-%d", a, i)))
					}
				}()
			}
			var flood []time.Duration
			b.ResetTimer()
			for b.Loop() {
				flood = append(flood, call())
			}
			b.StopTimer()
			stop()
			wg.Wait()
			median := func(d []time.Duration) time.Duration {
				slices.Sort(d)
				return d[len(d)/2]
			}
			b.ReportMetric(float64(median(idle).Microseconds()), "idle-µs")
			b.ReportMetric(float64(median(flood).Microseconds()), "flood-µs")
			b.ReportMetric(float64(median(flood))/float64(median(idle)), "flood/idle")
			b.ReportMetric(float64(s.users.Stats().Checks), "bcrypt-checks")
		})
	}
}
