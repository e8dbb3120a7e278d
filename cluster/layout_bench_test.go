package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// layoutCluster starts a three-node ingest cluster like benchLeader, with
// the Raft directories under logRoot (""; the test's temporary directory),
// stores from newStore (nil: file stores) and Raft's configuration changed
// by tune (nil: none).
func layoutCluster(tb testing.TB, logRoot string, newStore func(testing.TB, string) Store, tune func(*raft.Config)) func(context.Context, []byte) error {
	tb.Helper()
	return appendVia(benchLeaderWith(tb, newStore, func(cfg *Config) {
		benchTune(cfg)
		if logRoot != "" {
			cfg.Dir = filepath.Join(logRoot, cfg.NodeID)
		}
		cfg.raftTune = tune
	}))
}

// tmpfsDir returns a new directory on /dev/shm (tmpfs), removed at the
// end: a stand-in for a second, uncontended device.
func tmpfsDir(tb testing.TB) string {
	tb.Helper()
	d, err := os.MkdirTemp("/dev/shm", "ldm-bench-")
	if err != nil {
		tb.Fatalf("a directory on /dev/shm (tmpfs) for the Raft log: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// BenchmarkIngestLayout measures, in one run and in turn, where the
// replicated ingest of 256 KiB tiles loses to raw Raft: three-node
// clusters with the Raft log and the store on the same disk (disk), the
// Raft log on tmpfs standing in for a separate device (log_tmpfs), the
// store in memory, so that the tile bytes reach the disk once per node,
// through the Raft log only (the bound of a log whose entries live in the
// tile store, once_bound), and raw Raft on the disk (rawraft).
//
//	go test -run '^$' -bench IngestLayout -benchtime 3x ./cluster/
func BenchmarkIngestLayout(b *testing.B) {
	paths := []struct {
		name string
		fn   func(context.Context, []byte) error
	}{
		{"disk", layoutCluster(b, "", nil, nil)},
		{"log_tmpfs", layoutCluster(b, tmpfsDir(b), nil, nil)},
		{"once_bound", layoutCluster(b, "", func(testing.TB, string) Store { return NewMemoryStore() }, nil)},
		{"rawraft", rawRaft(b)},
	}
	sums := make([]float64, len(paths))
	rounds := 0
	for b.Loop() {
		for i, p := range paths {
			sums[i] += ingest(b, benchTiles, p.fn)
		}
		rounds++
	}
	for i, p := range paths {
		b.ReportMetric(sums[i]/float64(rounds)/(1<<20), p.name+"_MiB/s")
		if i > 0 {
			b.ReportMetric(sums[0]/sums[i], "disk/"+p.name)
		}
	}
}

// BenchmarkIngestRaftKnobs measures, in one run and in turn, three-node
// ingest with Raft's defaults against one knob changed per cluster:
// LDM_BENCH_KNOBS lists them (default
// "maxappend=16,maxappend=256,batchapply=off,trailing=1024").
//
//	go test -run '^$' -bench IngestRaftKnobs -benchtime 3x ./cluster/
func BenchmarkIngestRaftKnobs(b *testing.B) {
	spec := os.Getenv("LDM_BENCH_KNOBS")
	if spec == "" {
		spec = "maxappend=16,maxappend=256,batchapply=off,trailing=1024"
	}
	type path struct {
		name string
		fn   func(context.Context, []byte) error
	}
	paths := []path{{"defaults", layoutCluster(b, "", nil, nil)}}
	for _, k := range strings.Split(spec, ",") {
		name, val, _ := strings.Cut(k, "=")
		n, _ := strconv.Atoi(val)
		var tune func(*raft.Config)
		switch name {
		case "maxappend":
			tune = func(rc *raft.Config) { rc.MaxAppendEntries = n }
		case "batchapply":
			tune = func(rc *raft.Config) { rc.BatchApplyCh = val != "off" }
		case "trailing":
			tune = func(rc *raft.Config) { rc.TrailingLogs = uint64(n) }
		default:
			b.Fatalf("LDM_BENCH_KNOBS: unknown knob %q (maxappend=N, batchapply=on|off, trailing=N)", k)
		}
		paths = append(paths, path{k, layoutCluster(b, "", nil, tune)})
	}
	sums := make([]float64, len(paths))
	rounds := 0
	for b.Loop() {
		for i, p := range paths {
			sums[i] += ingest(b, benchTiles, p.fn)
		}
		rounds++
	}
	for i, p := range paths {
		b.ReportMetric(sums[i]/float64(rounds)/(1<<20), p.name+"_MiB/s")
		if i > 0 {
			b.ReportMetric(sums[i]/sums[0], p.name+"/defaults")
		}
	}
}
