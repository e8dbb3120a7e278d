package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-metrics"
)

// raftStages collects hashicorp/raft's own timers (go-metrics) while it is
// installed as the process's global metrics sink.
type raftStages struct {
	sink *metrics.InmemSink
	cfg  *metrics.Config
}

func startRaftStages() *raftStages {
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname = false
	cfg.EnableRuntimeMetrics = false
	cfg.EnableServiceLabel = false
	cfg.EnableTypePrefix = false
	sink := metrics.NewInmemSink(time.Hour, time.Hour)
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		panic(err)
	}
	return &raftStages{sink: sink, cfg: cfg}
}

// stop uninstalls the sink and returns, per timer name (labels dropped),
// the number of samples and their sum in milliseconds.
func (s *raftStages) stop() map[string][2]float64 {
	if _, err := metrics.NewGlobal(s.cfg, &metrics.BlackholeSink{}); err != nil {
		panic(err)
	}
	out := map[string][2]float64{}
	for _, iv := range s.sink.Data() {
		for k, v := range iv.Samples {
			name, labels, _ := strings.Cut(k, ";")
			if labels == "" && strings.HasPrefix(name, "raft.replication.") {
				continue // the same samples again, under a name with the peer id
			}
			if v.AggregateSample == nil {
				continue
			}
			o := out[name]
			o[0] += float64(v.Count)
			o[1] += v.Sum
			out[name] = o
		}
	}
	return out
}

// replicatedMemStore is replicated over MemoryStore stores: the tile
// bytes reach the disk through the Raft log only.
func replicatedMemStore(tb testing.TB) func(context.Context, []byte) error {
	return appendVia(benchLeaderWith(tb, func(testing.TB, string) Store { return NewMemoryStore() }, benchTune))
}

// BenchmarkIngestStages shows where a replicated write's time goes: for
// the replicated cluster, the same over in-memory stores (memstore: no
// store writes reach the disk) and raw Raft (as in BenchmarkIngestRatio,
// 256 KiB tiles, LDM_BENCH_WRITERS writers), the mean of Raft's own timers per
// call in milliseconds: the leader's log write and fsync of a batch
// (leader_storelogs_ms, and how many entries one holds), an AppendEntries
// round trip as the leader sees it (append_rpc_ms), a follower's log
// write and fsync (follower_storelogs_ms), dispatch to commit
// (commit_ms), and a writer's wait per tile (write_ms).
//
//	go test -run '^$' -bench IngestStages -benchtime 320x ./cluster/
func BenchmarkIngestStages(b *testing.B) {
	for _, p := range []struct {
		name  string
		setup func(testing.TB) func(context.Context, []byte) error
	}{{"replicated3", replicated}, {"replicated3_memstore", replicatedMemStore}, {"rawraft3", rawRaft}} {
		b.Run(p.name, func(b *testing.B) {
			appendTile := p.setup(b)
			st := startRaftStages()
			b.SetBytes(benchTileBytes)
			b.ResetTimer()
			start := time.Now()
			ingest(b, b.N, appendTile)
			elapsed := time.Since(start)
			b.StopTimer()
			m := st.stop()
			mean := func(name string) float64 {
				if v := m[name]; v[0] > 0 {
					return v[1] / v[0]
				}
				return 0
			}
			b.ReportMetric(float64(benchWriters)*float64(elapsed.Milliseconds())/float64(b.N), "write_ms")
			b.ReportMetric(mean("raft.commitTime"), "commit_ms")
			b.ReportMetric(mean("raft.leader.dispatchLog"), "leader_storelogs_ms")
			if n := m["raft.leader.dispatchLog"][0]; n > 0 {
				b.ReportMetric(float64(b.N)/n, "entries/leader_storelogs")
			}
			b.ReportMetric(mean("raft.replication.appendEntries.rpc"), "append_rpc_ms")
			b.ReportMetric(mean("raft.rpc.appendEntries.storeLogs"), "follower_storelogs_ms")
		})
	}
}
