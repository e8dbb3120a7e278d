package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// testLogger discards logs unless LDM_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("LDM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
}

// testNode is one node of an in-process cluster: its own HTTP server on
// 127.0.0.1 and its own gossip port.
type testNode struct {
	id         string
	dir        string
	addr       string // main port (RPC and Raft), stays the same across restarts
	gossipAddr string
	store      Store
	node       *Node
	srv        *http.Server
	srvDone    chan struct{}
}

// testCluster runs nodes in one process. Its net field decides which
// node may reach which (see partitionNet).
type testCluster struct {
	tb        testing.TB
	base      string
	net       *partitionNet
	newStore  func(tb testing.TB, dir string) Store
	tune      func(*Config)
	pki       *testutil.PKI                    // non-nil: TLS with client certificates
	observe   func(id string, r *http.Request) // sees every request a node serves
	mu        sync.Mutex
	nodes     map[string]*testNode
	bootstrap string
}

func newTestCluster(tb testing.TB) *testCluster {
	tb.Helper()
	c := &testCluster{
		tb:       tb,
		base:     tb.TempDir(),
		net:      newPartitionNet(),
		newStore: openFileStore,
		nodes:    map[string]*testNode{},
	}
	tb.Cleanup(func() {
		c.mu.Lock()
		nodes := make([]*testNode, 0, len(c.nodes))
		for _, n := range c.nodes {
			nodes = append(nodes, n)
		}
		c.mu.Unlock()
		for _, n := range nodes {
			c.stop(n)
		}
	})
	return c
}

// fastConfig returns Raft timings for tests on a busy machine.
func (c *testCluster) config(n *testNode, bootstrap bool, join []string) Config {
	cfg := Config{
		NodeID:             n.id,
		Dir:                filepath.Join(n.dir, "raft"),
		AdvertiseAddr:      n.addr,
		Bootstrap:          bootstrap,
		GossipAddr:         n.gossipAddr,
		Join:               join,
		LocalGossip:        true,
		Dial:               c.net.dialer(n.id),
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		ReconcileInterval:  200 * time.Millisecond,
		LeaderWait:         3 * time.Second,
		Logger:             testLogger().With("test_node", n.id),
	}
	if c.pki != nil {
		cfg.TLS = c.pki.ClientConfig(c.pki.NodeCert(c.tb, n.id))
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	return cfg
}

// add starts a new node; the first one bootstraps, the others join it.
func (c *testCluster) add(id string) *testNode {
	c.tb.Helper()
	n := &testNode{id: id, dir: filepath.Join(c.base, id), gossipAddr: "127.0.0.1:0"}
	bootstrap := false
	var join []string
	c.mu.Lock()
	if c.bootstrap == "" {
		c.bootstrap = id
		bootstrap = true
	} else {
		for _, o := range c.nodes {
			if o.node != nil {
				join = append(join, o.gossipAddr)
			}
		}
	}
	c.nodes[id] = n
	c.mu.Unlock()
	c.start(n, bootstrap, join)
	return n
}

func (c *testCluster) start(n *testNode, bootstrap bool, join []string) {
	c.tb.Helper()
	addr := n.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.tb.Fatalf("listen %s: %v", addr, err)
	}
	n.addr = ln.Addr().String()
	c.net.register(n.id, n.addr)
	if n.store == nil {
		n.store = c.newStore(c.tb, filepath.Join(n.dir, "data"))
	}
	node, err := New(c.config(n, bootstrap, join), n.store)
	if err != nil {
		ln.Close()
		c.tb.Fatalf("start node %s: %v", n.id, err)
	}
	n.node = node
	n.gossipAddr = node.GossipAddr()
	mux := http.NewServeMux()
	mux.Handle(HandlerPrefix, node.Handler())
	var h http.Handler = mux
	if obs := c.observe; obs != nil {
		id := n.id
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			obs(id, r)
			mux.ServeHTTP(w, r)
		})
	}
	n.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if c.pki != nil {
		n.srv.TLSConfig = c.pki.ServerConfig(c.pki.NodeCert(c.tb, n.id))
		ln = tls.NewListener(ln, n.srv.TLSConfig)
	}
	n.srvDone = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(ln)
	}(n.srv, n.srvDone)
}

// stop shuts a node down abruptly: no leave, no leadership transfer, every
// connection cut.
func (c *testCluster) stop(n *testNode) {
	if n.node == nil {
		return
	}
	_ = n.srv.Close()
	<-n.srvDone
	c.net.cut(n.id)
	_ = n.node.Close()
	n.node, n.store = nil, nil
}

// restart starts a stopped node again on the same addresses and directory.
func (c *testCluster) restart(n *testNode) {
	c.tb.Helper()
	var join []string
	c.mu.Lock()
	for _, o := range c.nodes {
		if o != n {
			join = append(join, o.gossipAddr)
		}
	}
	c.mu.Unlock()
	c.start(n, n.id == c.bootstrap, join)
}

func (c *testCluster) running() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*testNode
	for _, n := range c.nodes {
		if n.node != nil {
			out = append(out, n)
		}
	}
	return out
}

// leader waits until exactly one running node leads and every running node
// agrees on it.
func (c *testCluster) leader(timeout time.Duration) *testNode {
	c.tb.Helper()
	var l *testNode
	testutil.WaitFor(c.tb, timeout, "a leader all running nodes agree on", func() bool {
		l = nil
		nodes := c.running()
		for _, n := range nodes {
			if n.node.IsLeader() {
				if l != nil {
					return false
				}
				l = n
			}
		}
		if l == nil {
			return false
		}
		for _, n := range nodes {
			if id, _ := n.node.Leader(); id != l.id {
				return false
			}
		}
		return true
	})
	return l
}

// voters waits until the leader's configuration holds exactly ids.
func (c *testCluster) waitVoters(timeout time.Duration, ids ...string) {
	c.tb.Helper()
	testutil.WaitFor(c.tb, timeout, fmt.Sprintf("voters %v", ids), func() bool {
		for _, n := range c.running() {
			if !n.node.IsLeader() {
				continue
			}
			f := n.node.Raft().GetConfiguration()
			if f.Error() != nil {
				return false
			}
			got := map[string]bool{}
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == raft.Voter {
					got[string(s.ID)] = true
				}
			}
			if len(got) != len(ids) {
				return false
			}
			for _, id := range ids {
				if !got[id] {
					return false
				}
			}
			return true
		}
		return false
	})
}

// converge waits until every running node applied the leader's index.
func (c *testCluster) converge(timeout time.Duration) {
	c.tb.Helper()
	l := c.leader(timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := l.node.ReadBarrier(ctx); err != nil {
		c.tb.Fatalf("barrier on leader %s: %v", l.id, err)
	}
	idx := l.node.AppliedIndex()
	for _, n := range c.running() {
		if err := n.node.WaitApplied(ctx, idx); err != nil {
			c.tb.Fatalf("node %s did not apply index %d (at %d): %v", n.id, idx, n.node.AppliedIndex(), err)
		}
	}
}

// partitionNet is a controllable network between test nodes: every dial
// goes through it, it refuses dials across a partition and cuts the
// connections that cross one when it is made.
type partitionNet struct {
	mu      sync.Mutex
	addrs   map[string]string // address -> node id
	blocked map[[2]string]bool
	conns   map[*netConn]struct{}
	refused atomic.Int64 // dials refused across a partition
}

type netConn struct {
	net.Conn
	from, to string
	pn       *partitionNet
	once     sync.Once
}

func (c *netConn) Close() error {
	c.once.Do(func() {
		c.pn.mu.Lock()
		delete(c.pn.conns, c)
		c.pn.mu.Unlock()
	})
	return c.Conn.Close()
}

func newPartitionNet() *partitionNet {
	return &partitionNet{addrs: map[string]string{}, blocked: map[[2]string]bool{}, conns: map[*netConn]struct{}{}}
}

func (p *partitionNet) register(id, addr string) {
	p.mu.Lock()
	p.addrs[addr] = id
	p.mu.Unlock()
}

var errPartitioned = errors.New("test network: partitioned")

func (p *partitionNet) dialer(from string) DialFunc {
	d := &net.Dialer{}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		p.mu.Lock()
		to := p.addrs[addr]
		blocked := p.blocked[[2]string{from, to}]
		p.mu.Unlock()
		if blocked {
			p.refused.Add(1)
			return nil, fmt.Errorf("dial %s -> %s: %w", from, to, errPartitioned)
		}
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		nc := &netConn{Conn: conn, from: from, to: to, pn: p}
		p.mu.Lock()
		p.conns[nc] = struct{}{}
		p.mu.Unlock()
		return nc, nil
	}
}

// partition separates group a from group b in both directions and cuts
// the connections between them.
func (p *partitionNet) partition(a, b []string) {
	p.mu.Lock()
	for _, x := range a {
		for _, y := range b {
			p.blocked[[2]string{x, y}] = true
			p.blocked[[2]string{y, x}] = true
		}
	}
	var cut []*netConn
	for c := range p.conns {
		if p.blocked[[2]string{c.from, c.to}] {
			cut = append(cut, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// heal removes every partition.
func (p *partitionNet) heal() {
	p.mu.Lock()
	p.blocked = map[[2]string]bool{}
	p.mu.Unlock()
}

// cut closes every connection from or to id (the node died).
func (p *partitionNet) cut(id string) {
	p.mu.Lock()
	var cut []*netConn
	for c := range p.conns {
		if c.from == id || c.to == id {
			cut = append(cut, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

func tileValue(tb testing.TB, parts ...any) []byte {
	return []byte(fmt.Sprint(parts...))
}

// mustCreate creates a volume through n, retrying while leadership moves
// (an earlier attempt that committed makes a retry find it existing).
func mustCreate(tb testing.TB, n *Node, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		_, err := n.CreateVolume(ctx, storage.VolumeMeta{Name: name, Shape: storage.Shape{X: 64, Y: 64, Z: 64}, DataType: storage.Uint8})
		if err == nil || (attempt > 0 && errors.Is(err, storage.ErrExists)) {
			return
		}
		if !errors.Is(err, storage.ErrNotLeader) || attempt == 10 {
			tb.Fatalf("create volume %s on %s: %v", name, n.ID(), err)
		}
	}
}

// mustAppend appends tiles through n and returns the first offset. It
// retries refusals (the write surely was not applied) while leadership
// moves. An unknown outcome (leadership lost while committing, common on a
// loaded machine) is settled the way a careful client would: after a read
// barrier the node holds every committed write, so the tiles are either
// there, once, or never will be and are sent again. Tile values must be
// unique in the volume.
func mustAppend(tb testing.TB, n *Node, volume string, tiles ...storage.Tile) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for attempt := 0; ; attempt++ {
		first, err := n.Append(ctx, volume, tiles...)
		if err == nil {
			return first
		}
		if !errors.Is(err, storage.ErrNotLeader) || attempt == 10 {
			tb.Fatalf("append to %s via %s: %v", volume, n.ID(), err)
		}
		if errors.Is(err, ErrUnknownOutcome) {
			if first, ok := findAppended(ctx, tb, n, volume, tiles); ok {
				return first
			}
		}
	}
}

// findAppended reports where tiles stand in volume on n, once n holds
// every committed write.
func findAppended(ctx context.Context, tb testing.TB, n *Node, volume string, tiles []storage.Tile) (uint64, bool) {
	tb.Helper()
	for {
		err := n.ReadBarrier(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrNotLeader) || ctx.Err() != nil {
			tb.Fatalf("read barrier on %s: %v", n.ID(), err)
		}
	}
	info, err := n.Volume(volume)
	if err != nil {
		tb.Fatalf("%s: volume %s: %v", n.ID(), volume, err)
	}
	for off := uint64(0); off+uint64(len(tiles)) <= info.NextOffset; off++ {
		found := true
		for i := range tiles {
			t, err := n.Read(volume, off+uint64(i))
			if err != nil {
				tb.Fatalf("%s: read %s@%d: %v", n.ID(), volume, off+uint64(i), err)
			}
			if !bytes.Equal(t.Value, tiles[i].Value) {
				found = false
				break
			}
		}
		if found {
			return off, true
		}
	}
	return 0, false
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// openFileStore opens the file store in dir (it survives a node restart).
func openFileStore(tb testing.TB, dir string) Store {
	tb.Helper()
	s, err := storage.Open(dir, storage.Config{Logger: testLogger()})
	if err != nil {
		tb.Fatalf("open store %s: %v", dir, err)
	}
	return FileStore(s)
}
