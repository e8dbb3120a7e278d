package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

const (
	benchTileBytes = 256 << 10
	benchTiles     = 320 // per measurement: 80 MiB
)

// benchWriters is the number of concurrent writers (LDM_BENCH_WRITERS,
// default 16).
var benchWriters = func() int {
	if n, err := strconv.Atoi(os.Getenv("LDM_BENCH_WRITERS")); err == nil && n > 0 {
		return n
	}
	return 16
}()

// ingest appends n tiles of benchTileBytes with benchWriters concurrent
// writers and returns the bytes per second.
func ingest(tb testing.TB, n int, appendTile func(ctx context.Context, v []byte) error) float64 {
	tb.Helper()
	value := make([]byte, benchTileBytes)
	for i := range value {
		value[i] = byte(i * 31)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	start := time.Now()
	for range benchWriters {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := appendTile(ctx, value); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n*benchTileBytes) / time.Since(start).Seconds()
}

// singleNode returns an append function over one file store whose
// appends are durable when they return (storage.Store.Append: concurrent
// appends share an fsync), the single-node ingest a replicated write is
// compared with.
func singleNode(tb testing.TB) func(context.Context, []byte) error {
	s := openFileStore(tb, filepath.Join(tb.TempDir(), "single")).(fileStore)
	tb.Cleanup(func() { s.Close() })
	mustCreateStore(tb, s, "bench")
	return func(ctx context.Context, v []byte) error {
		_, err := s.Store.Append(ctx, "bench", storage.Tile{Value: v})
		return err
	}
}

// singleNodeNoSync is singleNode with appends that return before the disk
// holds them (storage.Store.AppendDeferred, what the FSM uses): the page
// cache's speed, not a durable ingest.
func singleNodeNoSync(tb testing.TB) func(context.Context, []byte) error {
	s := openFileStore(tb, filepath.Join(tb.TempDir(), "nosync"))
	tb.Cleanup(func() { s.Close() })
	mustCreateStore(tb, s, "bench")
	return func(ctx context.Context, v []byte) error {
		_, err := s.Append(ctx, "bench", storage.Tile{Value: v})
		return err
	}
}

func mustCreateStore(tb testing.TB, s storage.LDM, name string) {
	tb.Helper()
	if _, err := s.CreateVolume(context.Background(), storage.VolumeMeta{Name: name, Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8}); err != nil {
		tb.Fatal(err)
	}
}

// replicated returns an append function over a three-node cluster (through
// the leader's Node).
func replicated(tb testing.TB) func(context.Context, []byte) error {
	return appendVia(benchLeader(tb))
}

// replicatedStoreSync is replicated with the store fsynced on every apply
// (the FSM's group commit), as before the store's sync left the commit
// path: the same cluster otherwise, for a before/after in one run.
func replicatedStoreSync(tb testing.TB) func(context.Context, []byte) error {
	return appendVia(benchLeaderWith(tb, func(tb testing.TB, dir string) Store {
		return syncedStore{openFileStore(tb, dir).(fileStore)}
	}, benchTune))
}

func appendVia(l *Node) func(context.Context, []byte) error {
	return func(ctx context.Context, v []byte) error {
		_, err := l.Append(ctx, "bench", storage.Tile{Value: v})
		return err
	}
}

// syncedStore is a file store whose appends are durable before they
// return (storage.Store.Append under its sync policy).
type syncedStore struct{ fileStore }

func (s syncedStore) Append(ctx context.Context, name string, tiles ...storage.Tile) (uint64, error) {
	return s.Store.Append(ctx, name, tiles...)
}

// benchLeader starts a three-node cluster tuned for ingest and returns the
// leader's Node with the volume "bench" created.
func benchLeader(tb testing.TB) *Node { return benchLeaderWith(tb, nil, benchTune) }

// benchLeaderWith is benchLeader over stores from newStore (nil: file
// stores), with every node's Config set by tune.
func benchLeaderWith(tb testing.TB, newStore func(testing.TB, string) Store, tune func(*Config)) *Node {
	tb.Helper()
	c := newTestCluster(tb)
	if newStore != nil {
		c.newStore = newStore
	}
	c.tune = tune
	c.add("n1")
	c.leader(20 * time.Second)
	c.add("n2")
	c.add("n3")
	c.waitVoters(30*time.Second, "n1", "n2", "n3")
	l := c.leader(20 * time.Second)
	mustCreate(tb, l.node, "bench")
	return l.node
}

// Raft timeouts of the ingest benchmarks (their clusters and raw Raft
// alike): generous, so that a leader keeps its lease on a 2-core machine
// that other work keeps busy (several clusters run in one process).
const (
	benchHeartbeat = 3 * time.Second
	benchLease     = 1500 * time.Millisecond
)

func benchTune(cfg *Config) {
	cfg.HeartbeatTimeout = benchHeartbeat
	cfg.ElectionTimeout = benchHeartbeat
	cfg.LeaderLeaseTimeout = benchLease
	cfg.CommitTimeout = 0
}

// discardFSM is the FSM of raw Raft: it keeps nothing.
type discardFSM struct{}

func (discardFSM) Apply(*raft.Log) any                 { return nil }
func (discardFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("no snapshots") }
func (discardFSM) Restore(io.ReadCloser) error         { return nil }

// rawRaft returns an append function over three plain hashicorp/raft
// nodes: raft-wal logs and the same HTTP-upgrade transport, an FSM that
// drops entries. Entries carry the same bytes as a tile command.
func rawRaft(tb testing.TB) func(context.Context, []byte) error {
	type rawNode struct {
		r    *raft.Raft
		wal  *raftwal.WAL
		meta *metadb.BoltMetaDB
		tr   *raft.NetworkTransport
		srv  *http.Server
	}
	var nodes []*rawNode
	var servers []raft.Server
	var lns []net.Listener
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		lns = append(lns, ln)
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprint("r", i)), Address: raft.ServerAddress(ln.Addr().String())})
	}
	hl := newHCLogger(testLogger(), "raft")
	for i := range 3 {
		dir := filepath.Join(tb.TempDir(), fmt.Sprint("r", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			tb.Fatal(err)
		}
		meta := &metadb.BoltMetaDB{}
		wal, err := raftwal.Open(dir, raftwal.WithMetaStore(meta), raftwal.WithSegmentSize(DefaultWALSegmentBytes))
		if err != nil {
			tb.Fatal(err)
		}
		snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 1, hl)
		if err != nil {
			tb.Fatal(err)
		}
		sl := newStreamLayer(lns[i].Addr().String(), nil, nil, defaultAuthorize)
		tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: sl, MaxPool: 8, Timeout: 10 * time.Second, Logger: hl})
		mux := http.NewServeMux()
		mux.Handle(RaftPath, sl)
		srv := &http.Server{Handler: mux}
		go srv.Serve(lns[i])
		rc := raft.DefaultConfig()
		rc.LocalID = servers[i].ID
		rc.Logger = hl
		rc.BatchApplyCh = true
		rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = benchHeartbeat, benchHeartbeat, benchLease
		if err := raft.BootstrapCluster(rc, wal, wal, snaps, tr, raft.Configuration{Servers: servers}); err != nil {
			tb.Fatal(err)
		}
		r, err := raft.NewRaft(rc, discardFSM{}, wal, wal, snaps, tr)
		if err != nil {
			tb.Fatal(err)
		}
		nodes = append(nodes, &rawNode{r: r, wal: wal, meta: meta, tr: tr, srv: srv})
	}
	tb.Cleanup(func() {
		for _, n := range nodes {
			n.srv.Close()
			n.r.Shutdown().Error()
			n.tr.Close()
			n.wal.Close()
			n.meta.Close()
		}
	})
	var leader *raft.Raft
	testutil.WaitFor(tb, 40*time.Second, "a raw raft leader", func() bool {
		for _, n := range nodes {
			if n.r.State() == raft.Leader {
				leader = n.r
				return true
			}
		}
		return false
	})
	return func(ctx context.Context, v []byte) error {
		cmd, err := encodeAppend("bench", []storage.Tile{{Value: v}})
		if err != nil {
			return err
		}
		return leader.Apply(cmd, 10*time.Second).Error()
	}
}

// BenchmarkIngest measures each ingest path alone (MB/s).
func BenchmarkIngest(b *testing.B) {
	for _, bc := range []struct {
		name  string
		setup func(testing.TB) func(context.Context, []byte) error
	}{{"single", singleNode}, {"single_nosync", singleNodeNoSync}, {"replicated3", replicated}, {"replicated3_storesync", replicatedStoreSync}, {"rawraft3", rawRaft}} {
		b.Run(bc.name, func(b *testing.B) {
			appendTile := bc.setup(b)
			b.SetBytes(benchTileBytes)
			b.ReportAllocs()
			b.ResetTimer()
			rate := ingest(b, b.N, appendTile)
			b.ReportMetric(rate/benchTileBytes, "tiles/s")
		})
	}
}

// BenchmarkIngestRatio measures the paths in the same run, in turn, and
// reports replicated ingest as a ratio of single-node ingest (durable
// appends, storage.Store.Append) and of raw Raft with the same entry size
// and transport; storesync is the replicated path with the store fsynced
// in the commit path (the model before the background sync), for a
// before/after in one run; nosync is one store whose appends do not wait
// for the disk (the page cache's speed, for reference). Each round writes
// about 0.6 GB to the test's temporary directory: give -benchtime as a
// count (3x), not a duration.
func BenchmarkIngestRatio(b *testing.B) {
	single, nosync, repl, old, raw := singleNode(b), singleNodeNoSync(b), replicated(b), replicatedStoreSync(b), rawRaft(b)
	var s, n, r, o, w float64
	rounds := 0
	for b.Loop() {
		s += ingest(b, benchTiles, single)
		n += ingest(b, benchTiles, nosync)
		r += ingest(b, benchTiles, repl)
		o += ingest(b, benchTiles, old)
		w += ingest(b, benchTiles, raw)
		rounds++
	}
	b.ReportMetric(s/float64(rounds)/(1<<20), "single_MiB/s")
	b.ReportMetric(n/float64(rounds)/(1<<20), "nosync_MiB/s")
	b.ReportMetric(r/float64(rounds)/(1<<20), "replicated_MiB/s")
	b.ReportMetric(o/float64(rounds)/(1<<20), "storesync_MiB/s")
	b.ReportMetric(w/float64(rounds)/(1<<20), "rawraft_MiB/s")
	b.ReportMetric(r/s, "replicated/single")
	b.ReportMetric(r/w, "replicated/rawraft")
	b.ReportMetric(o/s, "storesync/single")
	b.ReportMetric(o/w, "storesync/rawraft")
}

// readLeader returns the leader of a three-node cluster that holds one
// 4 KiB tile at offset 0 of volume "bench"; barrierReads selects a barrier
// entry per linearizable read instead of read-index.
func readLeader(tb testing.TB, barrierReads bool) *Node {
	c := newTestCluster(tb)
	c.tune = func(cfg *Config) {
		cfg.HeartbeatTimeout = time.Second
		cfg.ElectionTimeout = time.Second
		cfg.LeaderLeaseTimeout = 500 * time.Millisecond
		cfg.CommitTimeout = 0
		cfg.barrierReads = barrierReads
	}
	c.add("n1")
	c.leader(10 * time.Second)
	c.add("n2")
	c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	l := c.leader(10 * time.Second)
	mustCreate(tb, l.node, "bench")
	mustAppend(tb, l.node, "bench", storage.Tile{Value: make([]byte, 4<<10)})
	return l.node
}

// BenchmarkLinearizableRead measures a linearizable ReadTile on the leader
// of a three-node loopback cluster (ReadBarrier, then Read), one reader at
// a time: read-index against a barrier entry per read, on two clusters in
// the same run, alternating read by read so both see the same load.
func BenchmarkLinearizableRead(b *testing.B) {
	ri, ba := readLeader(b, false), readLeader(b, true)
	ctx := context.Background()
	read := func(n *Node) {
		if err := n.ReadBarrier(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := n.Read("bench", 0); err != nil {
			b.Fatal(err)
		}
	}
	read(ri) // the term's barrier
	var tRI, tBA time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		read(ri)
		t1 := time.Now()
		read(ba)
		tRI += t1.Sub(t0)
		tBA += time.Since(t1)
	}
	n := float64(b.N)
	b.ReportMetric(n/tRI.Seconds(), "readindex_reads/s")
	b.ReportMetric(n/tBA.Seconds(), "barrier_reads/s")
	b.ReportMetric(tBA.Seconds()/tRI.Seconds(), "readindex/barrier")
}
