package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// crashChildEnv makes the test binary run one cluster node (crashChild)
// instead of the tests: a real process that a test can SIGKILL.
const crashChildEnv = "LDM_CLUSTER_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	os.Exit(m.Run())
}

// crashChild runs a node over a file store, configured from the
// environment, until SIGTERM (then it closes the node) or SIGKILL. Its
// store is never synced in the background (only at Close), and it takes no
// snapshots, so everything it applies stays unsynced until it is killed.
func crashChild() int {
	env := os.Getenv
	s, err := storage.Open(env("CHILD_DATA"), storage.Config{Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open store:", err)
		return 1
	}
	ln, err := net.Listen("tcp", env("CHILD_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	cfg := Config{
		NodeID:            env("CHILD_ID"),
		Dir:               env("CHILD_RAFT"),
		AdvertiseAddr:     env("CHILD_ADDR"),
		Bootstrap:         true,
		GossipAddr:        env("CHILD_GOSSIP"),
		LocalGossip:       true,
		CommitTimeout:     5 * time.Millisecond,
		ReconcileInterval: 200 * time.Millisecond,
		SnapshotThreshold: 1 << 40,
		SnapshotInterval:  time.Hour,
		StoreSyncInterval: -1,
		StoreSyncBytes:    -1,
		Logger:            testLogger(),
	}
	crashTune(&cfg)
	node, err := New(cfg, FileStore(s))
	if err != nil {
		fmt.Fprintln(os.Stderr, "start node:", err)
		return 1
	}
	mux := http.NewServeMux()
	mux.Handle(HandlerPrefix, node.Handler())
	// The test reads how far the node's store got.
	mux.HandleFunc("/crashtest/next", func(w http.ResponseWriter, r *http.Request) {
		info, err := node.Volume(r.URL.Query().Get("volume"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprint(w, info.NextOffset)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	srv.Close()
	if err := node.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

// crashTune gives the nodes of TestNode_SIGKILL_unsynced_store, in the
// child and in the test, Raft timeouts that a busy 2-core machine keeps
// (twice the other tests'): the test wants the child to lead until it is
// killed.
func crashTune(cfg *Config) {
	cfg.HeartbeatTimeout = time.Second
	cfg.ElectionTimeout = time.Second
	cfg.LeaderLeaseTimeout = 500 * time.Millisecond
}

// crashProc is a node running in a child process.
type crashProc struct {
	id, addr, gossip, dir string
	cmd                   *exec.Cmd
	done                  chan struct{}
}

func (p *crashProc) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(p.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", "CHILD_ID="+p.id, "CHILD_ADDR="+p.addr,
		"CHILD_GOSSIP="+p.gossip, "CHILD_DATA="+filepath.Join(p.dir, "data"), "CHILD_RAFT="+filepath.Join(p.dir, "raft"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
}

// kill sends SIGKILL and waits for the process to exit.
func (p *crashProc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM (the node closes) and waits for the process to exit.
func (p *crashProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("%s did not exit within 30s of SIGTERM", p.id)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited with %d", p.id, code)
	}
}

// TestNode_SIGKILL_unsynced_store kills -9 the leader, a real process,
// after acknowledged writes that its store has applied but not synced (its
// store is made durable only at Close, so nothing it applied is covered by
// its durable index). After it restarts, Raft replays the whole log into a
// store that already holds those tiles: every acknowledged write is there
// once, at its offset, byte for byte, and no Raft index has more tiles
// than its command carried; the request ids (AppendIdempotent) answer the
// original offsets on the restarted node too.
func TestNode_SIGKILL_unsynced_store(t *testing.T) {
	child := &crashProc{id: "n1", addr: testutil.FixedAddr(t), gossip: testutil.FixedAddr(t), dir: filepath.Join(t.TempDir(), "n1")}
	if err := os.MkdirAll(child.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if child.cmd != nil && child.cmd.ProcessState == nil {
			child.kill()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(child.dir, "log"))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("log of the child:\n%s", b)
		}
	})
	child.start(t)

	c := newTestCluster(t)
	c.tune = crashTune
	c.net.register(child.id, child.addr)
	var in []*testNode
	for _, id := range []string{"n2", "n3"} {
		n := &testNode{id: id, dir: filepath.Join(c.base, id), gossipAddr: "127.0.0.1:0"}
		c.mu.Lock()
		c.nodes[id] = n
		c.mu.Unlock()
		c.start(n, false, []string{child.gossip})
		in = append(in, n)
	}
	n2, n3 := in[0], in[1]
	voters := func(n *Node) int {
		f := n.raft.GetConfiguration()
		if f.Error() != nil {
			return 0
		}
		return len(f.Configuration().Servers)
	}
	testutil.WaitFor(t, 30*time.Second, "three voters and a leader", func() bool {
		_, id := n2.node.raft.LeaderWithID()
		return voters(n2.node) == 3 && voters(n3.node) == 3 && id != ""
	})
	mustCreate(t, n2.node, "crash")

	// Acknowledged writes through the followers (forwarded to the leader
	// in the child): single tiles, a batch, and tiles with request ids.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type ackd struct {
		value  []byte
		offset uint64
	}
	var acks []ackd
	reqOffs := map[int]uint64{} // write i -> offset of its tile with a request id
	// Writes settle a refusal or an unknown outcome (a leader change on a
	// busy machine) like a careful client: plain ones with mustAppend,
	// ones with a request id by sending the same id again.
	write := func(n *Node, i int) {
		v := tileValue(t, "crash", i, bytes.Repeat([]byte{byte(i)}, 1+i*97%3000))
		var off uint64
		switch i % 3 {
		case 0:
			off = mustAppend(t, n, "crash", storage.Tile{Value: v})
		case 1:
			for attempt := 0; ; attempt++ {
				offs, err := n.AppendIdempotent(ctx, "crash", []storage.Tile{{Value: v}}, []string{fmt.Sprint("req-", i)})
				if err == nil {
					off = offs[0]
					break
				}
				if !errors.Is(err, storage.ErrNotLeader) || attempt == 10 {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			reqOffs[i] = off
		case 2:
			w := tileValue(t, "crash-batch", i)
			off = mustAppend(t, n, "crash", storage.Tile{Value: v}, storage.Tile{Value: w})
			acks = append(acks, ackd{w, off + 1})
		}
		acks = append(acks, ackd{v, off})
	}
	const before = 60
	for i := range before {
		write([]*Node{n2.node, n3.node}[i%2], i)
	}
	// The leader applied them all: a linearizable read on a follower
	// waits for the leader's applied index.
	if err := n2.node.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	// The child bootstrapped and normally still leads; if an election on
	// the busy machine moved leadership, it is handed back (the store
	// property holds for a follower too, so a failed hand-off is only
	// logged).
	if _, id := n2.node.raft.LeaderWithID(); string(id) != child.id {
		if _, err := n2.node.TransferLeader(ctx, child.id); err != nil {
			t.Logf("leadership stays with %s: %v", id, err)
		}
	}
	child.kill()

	// The killed node's store holds tiles past its durable index: they
	// were applied but never synced.
	func() {
		s, err := storage.Open(filepath.Join(child.dir, "data"), storage.Config{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		info, err := s.Volume("crash")
		if err != nil {
			t.Fatal(err)
		}
		if s.DurableIndex() >= s.AppliedIndex() || info.NextOffset == 0 {
			t.Fatalf("the killed node's store: durable index %d, applied index %d, %d tiles; want tiles past the durable index",
				s.DurableIndex(), s.AppliedIndex(), info.NextOffset)
		}
	}()

	testutil.WaitFor(t, 30*time.Second, "a new leader", func() bool {
		_, id := n2.node.raft.LeaderWithID()
		return id != "" && string(id) != child.id
	})
	for i := before; i < before+30; i++ {
		write([]*Node{n2.node, n3.node}[i%2], i)
	}
	child.start(t)
	// Request ids sent before the kill answer their original offsets, and
	// store nothing on any node: the restarted node rebuilt its request
	// id table while it replayed the log. A last plain tile marks the end.
	for i := 1; i < before; i += 3 {
		offs, err := n3.node.AppendIdempotent(ctx, "crash", []storage.Tile{{Value: []byte("resent")}}, []string{fmt.Sprint("req-", i)})
		if err != nil {
			t.Fatalf("resend req-%d: %v", i, err)
		}
		if want := reqOffs[i]; offs[0] != want {
			t.Fatalf("resent req-%d answered offset %d, want %d", i, offs[0], want)
		}
	}
	write(n2.node, 3*before)
	if err := n2.node.ReadBarrier(ctx); err != nil {
		t.Fatal(err)
	}
	ref := logWithIndex(t, n2.node.store, "crash")
	testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("the restarted node to hold %d tiles", len(ref)), func() bool {
		return child.next("crash") >= uint64(len(ref))
	})
	child.stop(t)
	s, err := storage.Open(filepath.Join(child.dir, "data"), storage.Config{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	got := logWithIndex(t, FileStore(s), "crash")
	s.Close()
	if len(got) != len(ref) {
		t.Fatalf("the restarted node holds %d tiles, a survivor %d", len(got), len(ref))
	}
	perIndex := map[uint64]int{}
	for off, tl := range got {
		perIndex[tl.Index]++
		if off < len(ref) && (!bytes.Equal(tl.Value, ref[off].Value) || tl.Index != ref[off].Index) {
			t.Fatalf("offset %d: the restarted node holds %.24q (raft index %d), a survivor %.24q (raft index %d)",
				off, tl.Value, tl.Index, ref[off].Value, ref[off].Index)
		}
	}
	for idx, n := range perIndex {
		if n > 2 {
			t.Fatalf("raft index %d has %d tiles in the restarted node's log; no command carried more than 2", idx, n)
		}
	}
	for _, a := range acks {
		if a.offset >= uint64(len(got)) || !bytes.Equal(got[a.offset].Value, a.value) {
			t.Fatalf("acknowledged write at offset %d missing or different on the restarted node", a.offset)
		}
	}
	t.Logf("%d acknowledged tiles, %d in the log", len(acks), len(got))
}

// next returns the next offset of volume in the child's store (0 if it
// cannot tell yet).
func (p *crashProc) next(volume string) uint64 {
	res, err := http.Get("http://" + p.addr + "/crashtest/next?volume=" + volume)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	var n uint64
	if res.StatusCode != http.StatusOK {
		return 0
	}
	if _, err := fmt.Fscan(res.Body, &n); err != nil {
		return 0
	}
	return n
}

// logWithIndex reads a volume's whole log from a store.
func logWithIndex(t *testing.T, s Store, volume string) []storage.Tile {
	t.Helper()
	info, err := s.Volume(volume)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]storage.Tile, info.NextOffset)
	for off := range info.NextOffset {
		if out[off], err = s.Read(volume, off); err != nil {
			t.Fatalf("read %s@%d: %v", volume, off, err)
		}
	}
	return out
}
