package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// startThree starts n1 (bootstrap), n2 and n3 and waits for three voters.
func startThree(t *testing.T, c *testCluster) (n1, n2, n3 *testNode) {
	t.Helper()
	n1 = c.add("n1")
	c.leader(10 * time.Second)
	n2 = c.add("n2")
	n3 = c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	return n1, n2, n3
}

// logOf reads a volume's whole log on one node.
func logOf(t *testing.T, n *testNode, volume string) [][]byte {
	t.Helper()
	info, err := n.node.Volume(volume)
	if err != nil {
		t.Fatalf("%s: volume %s: %v", n.id, volume, err)
	}
	out := make([][]byte, info.NextOffset)
	for off := range info.NextOffset {
		tile, err := n.node.Read(volume, off)
		if err != nil {
			t.Fatalf("%s: read %s@%d: %v", n.id, volume, off, err)
		}
		out[off] = tile.Value
	}
	return out
}

// sameLogs checks that every running node holds the same log and returns it.
func sameLogs(t *testing.T, c *testCluster, volume string) [][]byte {
	t.Helper()
	c.converge(20 * time.Second)
	var ref [][]byte
	var refID string
	for _, n := range c.running() {
		l := logOf(t, n, volume)
		if ref == nil {
			ref, refID = l, n.id
			continue
		}
		if len(l) != len(ref) {
			t.Fatalf("%s holds %d tiles, %s holds %d", n.id, len(l), refID, len(ref))
		}
		for i := range l {
			if !bytes.Equal(l[i], ref[i]) {
				t.Fatalf("offset %d: %s holds %q, %s holds %q", i, n.id, l[i], refID, ref[i])
			}
		}
	}
	return ref
}

type ack struct {
	value  string
	offset uint64
}

// TestNode_LeaderKilledDuringWrites kills the leader abruptly while
// writers append through every node, with retries. A new leader takes
// over; every acknowledged write is present exactly once at its offset on
// every node, including the killed one after its restart.
func TestNode_LeaderKilledDuringWrites(t *testing.T) {
	c := newTestCluster(t)
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n1.node, "vol")
	nodes := []*Node{n1.node, n2.node, n3.node}

	var (
		mu    sync.Mutex
		acks  []ack
		nAcks atomic.Int64
	)
	stop := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	const writers = 4
	for w := range writers {
		wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				// Each attempt writes distinct bytes: an attempt that
				// failed ambiguously may exist once, never twice.
				for attempt := 0; ; attempt++ {
					if attempt == 100 || ctx.Err() != nil {
						t.Errorf("writer %d: write %d not acknowledged after %d attempts", w, seq, attempt)
						return
					}
					v := fmt.Sprintf("w%d-s%d-a%d", w, seq, attempt)
					wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
					off, err := nodes[(w+attempt)%len(nodes)].Append(wctx, "vol", storage.Tile{Value: []byte(v)})
					wcancel()
					if err != nil {
						continue
					}
					mu.Lock()
					acks = append(acks, ack{v, off})
					mu.Unlock()
					nAcks.Add(1)
					break
				}
			}
		})
	}
	testutil.WaitFor(t, 30*time.Second, "30 acknowledged writes", func() bool { return nAcks.Load() >= 30 })
	old := c.leader(10 * time.Second)
	before := nAcks.Load()
	c.stop(old)
	newLeader := c.leader(15 * time.Second)
	if newLeader == old {
		t.Fatalf("the killed node %s still leads", old.id)
	}
	testutil.WaitFor(t, 30*time.Second, "30 more acknowledged writes after the kill", func() bool { return nAcks.Load() >= before+30 })
	close(stop)
	wg.Wait()

	c.restart(old)
	log := sameLogs(t, c, "vol")
	seen := map[string]uint64{}
	for off, v := range log {
		if prev, dup := seen[string(v)]; dup {
			t.Fatalf("value %q at offsets %d and %d", v, prev, off)
		}
		seen[string(v)] = uint64(off)
	}
	for _, a := range acks {
		off, ok := seen[a.value]
		if !ok {
			t.Fatalf("acknowledged write %q (offset %d) is lost", a.value, a.offset)
		}
		if off != a.offset {
			t.Fatalf("acknowledged write %q at offset %d, acknowledged as %d", a.value, off, a.offset)
		}
	}
	t.Logf("%d acknowledged writes, %d tiles in the log, leader %s killed, %s took over", len(acks), len(log), old.id, newLeader.id)
}

// TestNode_PartitionedMinority isolates the leader: it accepts no writes
// (they fail, none is lost silently), the majority elects a leader and
// goes on, and after healing every node converges on the majority's log.
func TestNode_PartitionedMinority(t *testing.T) {
	c := newTestCluster(t)
	startThree(t, c)
	l := c.leader(10 * time.Second)
	mustCreate(t, l.node, "vol")
	var majority []*testNode
	var majorityIDs []string
	for _, n := range c.running() {
		if n != l {
			majority = append(majority, n)
			majorityIDs = append(majorityIDs, n.id)
		}
	}
	ctx := context.Background()
	mustAppend(t, l.node, "vol", storage.Tile{Value: []byte("before")})

	c.net.partition([]string{l.id}, majorityIDs)
	// The old leader steps down once its lease expires; writes to it fail.
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err := l.node.Append(wctx, "vol", storage.Tile{Value: []byte("minority")})
	cancel()
	if err == nil {
		t.Fatal("the isolated leader acknowledged a write")
	}
	if !errors.Is(err, storage.ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write to the isolated leader: %v, want ErrNotLeader", err)
	}
	testutil.WaitFor(t, 15*time.Second, "a new leader in the majority", func() bool {
		for _, n := range majority {
			if n.node.IsLeader() {
				return true
			}
		}
		return false
	})
	var acked []string
	for i := range 5 {
		v := fmt.Sprintf("majority-%d", i)
		mustAppend(t, majority[i%2].node, "vol", storage.Tile{Value: []byte(v)})
		acked = append(acked, v)
	}
	// A write to the isolated node still fails (it forwards nowhere).
	wctx, cancel = context.WithTimeout(ctx, 2*time.Second)
	_, err = l.node.Append(wctx, "vol", storage.Tile{Value: []byte("minority-2")})
	cancel()
	if err == nil {
		t.Fatal("the isolated node acknowledged a write")
	}

	c.net.heal()
	log := sameLogs(t, c, "vol")
	var got []string
	for _, v := range log {
		got = append(got, string(v))
	}
	want := append([]string{"before"}, acked...)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("log after healing: %v, want %v", got, want)
	}
}

// TestNode_RestartWholeCluster stops every node, the bootstrap node
// included, and starts them again: same data, a leader again, writable.
func TestNode_RestartWholeCluster(t *testing.T) {
	c := newTestCluster(t)
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n2.node, "vol")
	for i := range 10 {
		mustAppend(t, []*testNode{n1, n2, n3}[i%3].node, "vol", storage.Tile{Value: tileValue(t, "t", i)})
	}
	before := sameLogs(t, c, "vol")
	for _, n := range []*testNode{n1, n2, n3} {
		c.stop(n)
	}
	for _, n := range []*testNode{n1, n2, n3} {
		c.restart(n)
	}
	c.leader(20 * time.Second)
	after := sameLogs(t, c, "vol")
	if len(after) != len(before) {
		t.Fatalf("%d tiles after restart, %d before", len(after), len(before))
	}
	off := mustAppend(t, n3.node, "vol", storage.Tile{Value: []byte("after-restart")})
	if off != uint64(len(before)) {
		t.Fatalf("offset %d after restart, want %d", off, len(before))
	}
	sameLogs(t, c, "vol")
}

// compactOften makes nodes snapshot and compact their log after a few
// entries.
func compactOften(cfg *Config) {
	cfg.SnapshotThreshold = 8
	cfg.TrailingLogs = 4
	cfg.SnapshotInterval = 50 * time.Millisecond
	cfg.WALSegmentBytes = 8 << 10
}

// TestNode_LateNodeCatchesUpFromSnapshot adds a node after the log was
// compacted: it can only catch up by installing a snapshot.
func TestNode_LateNodeCatchesUpFromSnapshot(t *testing.T) {
	c := newTestCluster(t)
	c.tune = compactOften
	// n3's store counts restores: installing a snapshot restores the
	// store, catching up from the log never does.
	var n3Restores atomic.Int32
	c.newStore = func(tb testing.TB, dir string) Store {
		s := openFileStore(tb, dir)
		if filepath.Base(filepath.Dir(dir)) == "n3" {
			return restoreCounter{Store: s, restores: &n3Restores}
		}
		return s
	}
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	n2 := c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")
	mustCreate(t, n1.node, "vol")
	for i := range 40 {
		key := storage.BrickKey{LOD: 0, X: uint32(i % 4)}
		v := append(tileValue(t, "tile-", i, "-"), bytes.Repeat([]byte{byte(i)}, 1<<10)...)
		mustAppend(t, []*testNode{n1, n2}[i%2].node, "vol", storage.Tile{Value: v, HasKey: true, Key: key})
	}
	// Both nodes compact, so whichever leads when n3 joins (leadership
	// may move on a loaded machine) no longer holds the log's start.
	testutil.WaitFor(t, 20*time.Second, "a snapshot and a compacted log on n1 and n2", func() bool {
		for _, n := range []*testNode{n1, n2} {
			first, err := n.node.wal.FirstIndex()
			if err != nil || first <= 1 || n.node.Raft().Stats()["last_snapshot_index"] == "0" {
				return false
			}
		}
		return true
	})
	n3 := c.add("n3")
	c.waitVoters(15*time.Second, "n1", "n2", "n3")
	log := sameLogs(t, c, "vol")
	if len(log) != 40 {
		t.Fatalf("%d tiles, want 40", len(log))
	}
	// Raft records the installed snapshot only after the store holds its
	// data, so its stats may lag what sameLogs saw; the store does not.
	if n3Restores.Load() == 0 {
		t.Fatal("n3 caught up without installing a snapshot")
	}
	for x := range uint32(4) {
		a, err := n1.node.Brick("vol", storage.BrickKey{X: x})
		if err != nil {
			t.Fatal(err)
		}
		b, err := n3.node.Brick("vol", storage.BrickKey{X: x})
		if err != nil {
			t.Fatalf("n3 brick %d: %v", x, err)
		}
		if a.Offset != b.Offset || !bytes.Equal(a.Value, b.Value) {
			t.Fatalf("brick %d: n1 %d %q, n3 %d %q", x, a.Offset, a.Value, b.Offset, b.Value)
		}
	}
}

// TestNode_WipedStoreRestoresFromSnapshot restarts a node whose tile
// store was lost but whose Raft directory survived: the node restores its
// newest snapshot into the empty store before replaying the log.
func TestNode_WipedStoreRestoresFromSnapshot(t *testing.T) {
	c := newTestCluster(t)
	c.tune = compactOften
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n1.node, "vol")
	for i := range 30 {
		mustAppend(t, []*testNode{n1, n2, n3}[i%3].node, "vol", storage.Tile{Value: tileValue(t, "tile-", i)})
	}
	c.converge(20 * time.Second)
	victim := n3
	if victim.node.IsLeader() {
		victim = n2
	}
	testutil.WaitFor(t, 20*time.Second, "a snapshot on "+victim.id, func() bool {
		return victim.node.Raft().Stats()["last_snapshot_index"] != "0"
	})
	c.stop(victim)
	if err := os.RemoveAll(filepath.Join(victim.dir, "data")); err != nil {
		t.Fatal(err)
	}
	c.restart(victim)
	log := sameLogs(t, c, "vol")
	if len(log) != 30 {
		t.Fatalf("%d tiles after restoring, want 30", len(log))
	}
}

// restoreCounter is a Store that counts calls of Restore.
type restoreCounter struct {
	Store
	restores *atomic.Int32
}

func (s restoreCounter) Restore(r io.Reader) error {
	s.restores.Add(1)
	return s.Store.Restore(r)
}

// TestNode_RestartKeepsCurrentStore restarts a node whose newest snapshot
// was taken after entries that are not commands (a barrier, the leader's
// no-op): the store already holds the snapshot's state, so the node must
// not copy the whole snapshot into it again.
func TestNode_RestartKeepsCurrentStore(t *testing.T) {
	c := newTestCluster(t)
	var restores atomic.Int32
	c.newStore = func(tb testing.TB, dir string) Store {
		return restoreCounter{Store: openFileStore(tb, dir), restores: &restores}
	}
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	mustCreate(t, n1.node, "vol")
	for i := range 5 {
		mustAppend(t, n1.node, "vol", storage.Tile{Value: tileValue(t, "tile-", i)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n1.node.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.node.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	snapIndex := n1.node.Raft().Stats()["last_snapshot_index"]
	if want := strconv.FormatUint(n1.node.AppliedIndex(), 10); snapIndex == want {
		t.Fatalf("snapshot index %s equals the last command's index: the test needs a non-command entry after it", snapIndex)
	}
	c.stop(n1)
	c.restart(n1)
	c.leader(10 * time.Second)
	if got := restores.Load(); got != 0 {
		t.Fatalf("the store was restored %d times on a restart that lost nothing", got)
	}
	if log := sameLogs(t, c, "vol"); len(log) != 5 {
		t.Fatalf("%d tiles after restart, want 5", len(log))
	}
}
