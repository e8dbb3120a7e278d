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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/serf/serf"
	"go.opentelemetry.io/otel/trace"

	"github.com/xcheng85/go-ldm/storage"
)

// Config configures a Node. Zero durations take the defaults named on each
// field; NodeID, Dir and AdvertiseAddr are required.
type Config struct {
	// NodeID names the node in Raft and Serf. It must stay the same across
	// restarts. Serf knows each start of the node as a member of its own
	// (the id, "#" and the start time), with the id in a tag; see
	// incarnation.go.
	NodeID string
	// Dir holds the Raft log (wal/), snapshots (snapshots/) and the Serf
	// snapshot (serf/). The tile store lives elsewhere.
	Dir string
	// AdvertiseAddr is the host:port of the main port as peers and clients
	// reach it. Raft, forwarding and the RPC API all use it.
	AdvertiseAddr string
	// Bootstrap makes the node form a one-voter cluster if it has no Raft
	// state yet. A node with existing state ignores it, so restarting the
	// bootstrap node is safe.
	Bootstrap bool
	// BootstrapExpect, when positive, forms a cluster of that many voters
	// from nodes started in parallel: a node without Raft state waits until
	// the gossip pool holds BootstrapExpect members that have no Raft state
	// either (and expect the same number), and the one of them with the
	// lowest NodeID bootstraps with them all as voters; the others wait to
	// be contacted by its leader. A node with Raft state never bootstraps,
	// nor does an empty one that sees a member with state: that cluster's
	// leader adds it. Needs GossipAddr; excludes Bootstrap. See
	// bootstrap.go.
	BootstrapExpect int

	// GossipAddr is the host:port Serf binds (UDP and TCP); empty disables
	// Serf, and membership changes only through Raft. Port 0 picks one.
	GossipAddr string
	// GossipAdvertiseAddr is the gossip address peers use, when it differs
	// from GossipAddr.
	GossipAdvertiseAddr string
	// Join lists gossip addresses of existing members: host:port, or a
	// host alone (then the port is this node's gossip port). A host name is
	// resolved again before every attempt and each of its addresses (A and
	// AAAA) is a peer, as a Kubernetes headless service lists its pods. The
	// node retries in the background, with backoff, until a member answers.
	Join []string
	// LookupHost resolves the host names in Join; nil means
	// net.DefaultResolver.LookupHost.
	LookupHost LookupHostFunc
	// GossipKey encrypts and authenticates gossip (AES-GCM; 16, 24 or 32
	// bytes, the same on every member). The leader makes every alive
	// member with go-ldm's tags a Raft voter, so without a key anyone who
	// reaches the gossip port can join and become a voter (and, without
	// TLS, receive the replicated data). Nil gossips in the clear, for a
	// trusted network.
	GossipKey []byte
	// LocalGossip selects memberlist's local-network profile: faster
	// failure detection, for tests and clusters on one host.
	LocalGossip bool

	// TLS is the client configuration for connections to peers (Raft and
	// forwarded writes), with this node's certificate for mutual TLS. Nil
	// means plain TCP.
	TLS *tls.Config
	// Dial opens TCP connections to peers; nil means a net.Dialer.
	Dial DialFunc
	// Authorize decides whether a peer may use the cluster endpoints
	// (Raft, forwarding). Nil means: under TLS the peer must present a
	// verified client certificate whose common name is the id of a member
	// (in the Raft configuration or the gossip pool), so a user's client
	// certificate cannot replicate or forward writes; without TLS anyone
	// may (the main port is then trusted, see the security flags).
	Authorize func(*http.Request) error
	// Key is a secret shared by every node (at least MinKeyBytes). When
	// set, every node-to-node request carries an HMAC of it
	// (ClusterAuthHeader) and a request without a valid one is refused
	// before Authorize runs, so without TLS only nodes can replicate,
	// forward writes or change membership. It also signs a member's
	// answer to the identity check before it becomes a voter. Nil: peers
	// are authenticated by TLS only (or not at all, on a trusted network).
	Key []byte

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and
	// CommitTimeout tune Raft (defaults: raft.DefaultConfig).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotInterval, SnapshotThreshold and TrailingLogs control
	// snapshots (defaults: raft.DefaultConfig).
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// ReconcileInterval is how often the leader compares Serf members with
	// the Raft configuration (default 30s).
	ReconcileInterval time.Duration
	// WALSegmentBytes is the size of a Raft log segment file (default
	// DefaultWALSegmentBytes). The log is truncated after a snapshot in
	// whole segments only; larger segments rotate less often, which
	// matters for large tiles.
	WALSegmentBytes int
	// LeaderWait bounds how long a write waits for a leader to be elected
	// before it fails with storage.ErrNotLeader (default 5s).
	LeaderWait time.Duration
	// StoreSyncInterval is how often the store is made durable in the
	// background (default DefaultStoreSyncInterval; negative: only past
	// StoreSyncBytes, before snapshots and at Close). Writes never wait
	// for it: the Raft log is the durable copy, and a restart replays the
	// log from the store's last durable index.
	StoreSyncInterval time.Duration
	// StoreSyncBytes of tile values applied since the last sync also
	// start one (default DefaultStoreSyncBytes; negative: never).
	StoreSyncBytes int64
	// MaxTileBytes is the largest tile value a write may carry; zero means
	// storage.DefaultMaxTileBytes. It must equal the store's
	// storage.Config.MaxTileBytes and be the same on every node. A larger
	// tile fails with storage.ErrTooLarge before it is proposed or
	// forwarded. It also sets the cap on one Raft command, on the leader
	// and on followers alike: a batch of forwardBatchBytes of tile values
	// (what WriteTileStream gathers) plus one tile and the framing.
	MaxTileBytes int

	// maxCommandBytes overrides the command cap derived from MaxTileBytes,
	// for tests only.
	maxCommandBytes int
	// barrierReads makes the leader commit a barrier entry per
	// linearizable read instead of using read-index; only the benchmark
	// that compares the two sets it.
	barrierReads bool
	// raftTune changes the Raft configuration after every other setting;
	// only benchmarks of Raft's knobs set it.
	raftTune func(*raft.Config)
	// advertiseCodecs, when not nil, replaces the codecs the node
	// announces in gossip (codecs.go), for tests of a cluster with a node
	// of an older version.
	advertiseCodecs []storage.CodecKind

	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Tracer, when set, makes the leader's span around a write a follower
	// forwarded, in the trace the follower's request carries (see
	// trace.go). Nil makes no span; the trace context still travels.
	Tracer trace.Tracer
	// ObserveSnapshot, when set, receives the duration and outcome of
	// every snapshot phase Raft runs (SnapshotCapture, SnapshotPersist,
	// SnapshotRestore), for metrics. It must not block.
	ObserveSnapshot func(phase string, d time.Duration, err error)
}

func (c *Config) validate() error {
	var missing []string
	if c.NodeID == "" {
		missing = append(missing, "NodeID")
	}
	if c.Dir == "" {
		missing = append(missing, "Dir")
	}
	if c.AdvertiseAddr == "" {
		missing = append(missing, "AdvertiseAddr")
	} else if _, _, err := net.SplitHostPort(c.AdvertiseAddr); err != nil {
		return fmt.Errorf("%w: AdvertiseAddr %q: %v", storage.ErrInvalidArgument, c.AdvertiseAddr, err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: cluster config needs %s", storage.ErrInvalidArgument, strings.Join(missing, ", "))
	}
	if k := len(c.GossipKey); k != 0 && k != 16 && k != 24 && k != 32 {
		return fmt.Errorf("%w: GossipKey of %d bytes, want 16, 24 or 32", storage.ErrInvalidArgument, k)
	}
	if k := len(c.Key); k != 0 && k < MinKeyBytes {
		return fmt.Errorf("%w: cluster Key of %d bytes, want at least %d", storage.ErrInvalidArgument, k, MinKeyBytes)
	}
	if c.BootstrapExpect < 0 {
		return fmt.Errorf("%w: BootstrapExpect %d is negative", storage.ErrInvalidArgument, c.BootstrapExpect)
	}
	if c.BootstrapExpect > 0 && (c.Bootstrap || c.GossipAddr == "") {
		return fmt.Errorf("%w: BootstrapExpect needs GossipAddr and excludes Bootstrap", storage.ErrInvalidArgument)
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = 30 * time.Second
	}
	if c.WALSegmentBytes <= 0 {
		c.WALSegmentBytes = DefaultWALSegmentBytes
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 5 * time.Second
	}
	if c.StoreSyncInterval == 0 {
		c.StoreSyncInterval = DefaultStoreSyncInterval
	}
	if c.StoreSyncBytes == 0 {
		c.StoreSyncBytes = DefaultStoreSyncBytes
	}
	if c.MaxTileBytes < 0 {
		return fmt.Errorf("%w: MaxTileBytes %d is negative", storage.ErrInvalidArgument, c.MaxTileBytes)
	}
	if c.MaxTileBytes == 0 {
		c.MaxTileBytes = storage.DefaultMaxTileBytes
	}
	if c.maxCommandBytes == 0 {
		c.maxCommandBytes = maxCommandBytes(c.MaxTileBytes)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// DefaultWALSegmentBytes is the default Raft log segment size: 256 MiB,
// four times raft-wal's default, because each entry carries tile bytes and
// segment rotation costs throughput (measured by BenchmarkIngestRatio).
const DefaultWALSegmentBytes = 256 << 20

func defaultAuthorize(r *http.Request) error {
	if r.TLS != nil && len(r.TLS.PeerCertificates) == 0 {
		return errors.New("cluster endpoint: a client certificate is required")
	}
	return nil
}

// authorizeMember is the default Authorize: under TLS, a verified client
// certificate whose common name is a member's id.
func (n *Node) authorizeMember(r *http.Request) error {
	if err := defaultAuthorize(r); err != nil || r.TLS == nil {
		return err
	}
	cn := r.TLS.PeerCertificates[0].Subject.CommonName
	if n.isMember(cn) {
		return nil
	}
	return fmt.Errorf("cluster endpoint: %q is not a member of this cluster", cn)
}

// isMember reports whether id is in the Raft configuration or the gossip
// pool.
func (n *Node) isMember(id string) bool {
	if id == "" {
		return false
	}
	if id == n.cfg.NodeID {
		return true
	}
	if n.raft != nil {
		if f := n.raft.GetConfiguration(); f.Error() == nil {
			for _, s := range f.Configuration().Servers {
				if string(s.ID) == id {
					return true
				}
			}
		}
	}
	if n.serf != nil {
		for _, m := range n.serf.Members() {
			if memberNodeID(m) == id && m.Status != serf.StatusLeft {
				return true
			}
		}
	}
	return false
}

// Node is one replica of the tile store: a Raft instance whose FSM is the
// store, Serf membership, and forwarding of writes to the leader. It
// implements storage.LDM (writes go through Raft; reads are local) and the
// optional interfaces of the service: ReadBarrier and membership.
//
// All methods are safe for concurrent use. Close closes the store too.
type Node struct {
	cfg    Config
	log    *slog.Logger
	store  Store
	fsm    *fsm
	raft   *raft.Raft
	wal    *raftwal.WAL
	meta   *metadb.BoltMetaDB // closed by Node: WAL.Close leaves it open
	trans  *raft.NetworkTransport
	stream *streamLayer
	serf   *serf.Serf // nil without gossip
	http   *http.Client
	mux    *http.ServeMux

	// gossipName is this incarnation's gossip member name and incs the
	// newest incarnation seen per node id (incarnation.go).
	gossipName string
	incs       *incarnations

	leaderMu      sync.Mutex
	leaderChanged chan struct{} // closed and replaced on every leader change

	reconcileCh chan struct{}
	shutdown    chan struct{}
	closed      atomic.Bool // set by the first Close

	hadState        bool        // the node had Raft state when it started
	raftStateTagged atomic.Bool // gossip announces that the node has Raft state

	readBase   atomic.Pointer[termBarrier] // the barrier of the latest term with a read
	readBaseMu chan struct{}               // held (one slot) while a term barrier commits
	wg         sync.WaitGroup
}

var _ storage.LDM = (*Node)(nil)

// New starts a node over store. The caller mounts Handler on the main
// port's mux (at HandlerPrefix) and serves it; peers reach the node there.
func New(cfg Config, store Store) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "cluster", "node", cfg.NodeID)
	n := &Node{
		cfg:           cfg,
		log:           log,
		store:         store,
		leaderChanged: make(chan struct{}),
		reconcileCh:   make(chan struct{}, 1),
		shutdown:      make(chan struct{}),
		readBaseMu:    make(chan struct{}, 1),
	}
	if n.cfg.Authorize == nil {
		n.cfg.Authorize = n.authorizeMember
	}
	n.fsm = newFSM(store, log)
	n.fsm.syncBytes = cfg.StoreSyncBytes
	n.stream = newStreamLayer(cfg.AdvertiseAddr, cfg.TLS, cfg.Dial, n.authorizePeer)
	if len(cfg.Key) > 0 {
		n.stream.sign = func(method, path string) string {
			return signHeader(cfg.Key, cfg.NodeID, method, path, time.Now())
		}
	}
	n.http = newHTTPClient(cfg.TLS, cfg.Dial)
	n.mux = http.NewServeMux()
	n.mux.Handle(RaftPath, n.stream)
	n.mux.HandleFunc(pathApply, n.handleApply)
	n.mux.HandleFunc(pathReadIndex, n.handleReadIndex)
	n.mux.HandleFunc(pathRemove, n.handleRemove)
	n.mux.HandleFunc(pathTransfer, n.handleTransfer)
	n.mux.HandleFunc(pathIdentify, n.handleIdentify)

	if err := n.startRaft(); err != nil {
		n.stream.Close()
		return nil, err
	}
	if cfg.GossipAddr != "" {
		if err := n.startSerf(); err != nil {
			n.stopRaft()
			close(n.shutdown) // stops the leader observer
			n.wg.Wait()
			return nil, err
		}
	}
	n.wg.Add(1)
	go n.reconcileLoop()
	n.wg.Add(1)
	go n.syncLoop()
	if n.serf != nil && !n.hadState {
		n.wg.Add(1)
		go n.raftStateLoop()
		if cfg.BootstrapExpect > 0 {
			n.wg.Add(1)
			go n.bootstrapLoop()
		}
	}
	return n, nil
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	hl := newHCLogger(cfg.Logger.With("node", cfg.NodeID), "raft")
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	// The store keeps its own state across restarts; only a store behind
	// the latest snapshot is restored (below).
	rc.NoSnapshotRestoreOnStart = true
	rc.BatchApplyCh = true
	setDur(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDur(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDur(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDur(&rc.CommitTimeout, cfg.CommitTimeout)
	setDur(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.raftTune != nil {
		cfg.raftTune(rc)
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("%w: raft config: %v", storage.ErrInvalidArgument, err)
	}

	walDir := filepath.Join(cfg.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o755); err != nil {
		return fmt.Errorf("raft dir: %w", err)
	}
	meta := &metadb.BoltMetaDB{}
	wal, err := raftwal.Open(walDir, raftwal.WithLogger(hl.Named("wal")), raftwal.WithMetaStore(meta),
		raftwal.WithSegmentSize(cfg.WALSegmentBytes), raftwal.WithSegmentFiler(newSealedTailFiler(walDir)))
	if err != nil {
		meta.Close()
		return fmt.Errorf("open raft wal: %w", err)
	}
	n.meta = meta
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hl.Named("snapshots"))
	if err != nil {
		wal.Close()
		meta.Close()
		return fmt.Errorf("open raft snapshots: %w", err)
	}
	if err := n.restoreIfBehind(snaps); err != nil {
		wal.Close()
		meta.Close()
		return err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  n.stream,
		MaxPool: 8,
		Timeout: 10 * time.Second,
		Logger:  hl.Named("net"),
	})
	has, err := raft.HasExistingState(wal, wal, snaps)
	if err != nil {
		trans.Close()
		wal.Close()
		meta.Close()
		return fmt.Errorf("raft state: %w", err)
	}
	n.hadState = has
	if cfg.Bootstrap {
		if !has {
			boot := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: rc.LocalID, Address: raft.ServerAddress(cfg.AdvertiseAddr),
			}}}
			if err := raft.BootstrapCluster(rc, wal, wal, snaps, trans, boot); err != nil {
				trans.Close()
				wal.Close()
				meta.Close()
				return fmt.Errorf("bootstrap: %w", err)
			}
			n.log.Info("bootstrapped a new cluster")
			n.hadState = true
		}
	}
	r, err := raft.NewRaft(rc, n.raftFSM(), wal, wal, snaps, trans)
	if err != nil {
		trans.Close()
		wal.Close()
		meta.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft, n.wal, n.trans = r, wal, trans

	obs := make(chan raft.Observation, 16)
	r.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	n.wg.Add(1)
	go n.observe(obs)
	return nil
}

// restoreIfBehind restores the newest snapshot into a store that does not
// hold it yet (a wiped or new data directory); Raft itself does not restore
// on start because the store keeps its state.
func (n *Node) restoreIfBehind(snaps *raft.FileSnapshotStore) error {
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil
	}
	meta, rc, err := snaps.Open(list[0].ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", list[0].ID, err)
	}
	// The snapshot's Raft index counts entries that are not commands (the
	// leader's no-op, barriers, configuration changes), which leave no
	// trace in the store; its header holds the last command it covers.
	// Only a store behind that is restored, so a normal restart does not
	// copy the whole snapshot into a store that already holds it.
	var h [snapHeaderSize]byte
	if _, err := io.ReadFull(rc, h[:]); err != nil {
		rc.Close()
		return fmt.Errorf("snapshot %s: %w: header: %v", meta.ID, ErrBadSnapshot, err)
	}
	applied, version, err := parseSnapHeader(h[:])
	if err != nil {
		rc.Close()
		return fmt.Errorf("snapshot %s: %w", meta.ID, err)
	}
	if applied <= n.store.DurableIndex() {
		// The store holds the snapshot; the request id table it carries
		// is the FSM's from there on (Raft replays the entries after it).
		if version >= 2 {
			t, err := readDedup(rc)
			if err != nil {
				rc.Close()
				return fmt.Errorf("snapshot %s: %w", meta.ID, err)
			}
			n.fsm.dedup = t
		}
		return rc.Close()
	}
	rc = readCloser{io.MultiReader(bytes.NewReader(h[:]), rc), rc}
	n.log.Info("restoring the store from a snapshot", "snapshot", meta.ID, "index", meta.Index, "applied", applied, "store_index", n.store.DurableIndex())
	if err := n.fsm.Restore(rc); err != nil {
		return fmt.Errorf("restore snapshot %s: %w", meta.ID, err)
	}
	return nil
}

// readCloser reads from a Reader and closes a Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

func (n *Node) observe(obs chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.shutdown:
			return
		case o := <-obs:
			lo := o.Data.(raft.LeaderObservation)
			n.log.Info("leader changed", "leader", lo.LeaderID, "addr", lo.LeaderAddr)
			n.leaderMu.Lock()
			close(n.leaderChanged)
			n.leaderChanged = make(chan struct{})
			n.leaderMu.Unlock()
			if string(lo.LeaderID) == n.cfg.NodeID {
				n.triggerReconcile()
			}
		}
	}
}

// knownLeader returns the leader's address and id, waiting up to
// LeaderWait for an election when none is known yet.
func (n *Node) knownLeader(ctx context.Context) (addr, id string, err error) {
	t := time.NewTimer(n.cfg.LeaderWait)
	defer t.Stop()
	for {
		changed := n.leaderChange()
		if a, i := n.raft.LeaderWithID(); a != "" {
			return string(a), string(i), nil
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-n.shutdown:
			return "", "", storage.ErrClosed
		case <-t.C:
			return "", "", n.notLeader(nil)
		case <-changed:
		}
	}
}

func (n *Node) leaderChange() <-chan struct{} {
	n.leaderMu.Lock()
	defer n.leaderMu.Unlock()
	return n.leaderChanged
}

// ID returns the node's id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Addr returns the advertised address (RPC and Raft).
func (n *Node) Addr() string { return n.cfg.AdvertiseAddr }

// Raft returns the Raft instance, for stats and tests. Callers must not
// shut it down.
func (n *Node) Raft() *raft.Raft { return n.raft }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the id and address of the leader as this node knows it;
// both are empty when no leader is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// AppliedIndex returns the Raft index of the last command this node
// applied.
func (n *Node) AppliedIndex() uint64 {
	idx, _ := n.fsm.appliedIndex()
	return idx
}

// WaitApplied blocks until the node applied Raft index idx or ctx ends.
func (n *Node) WaitApplied(ctx context.Context, idx uint64) error {
	return n.fsm.waitApplied(ctx, idx, n.shutdown)
}

// Handler serves the cluster endpoints (Raft upgrade, forwarded writes,
// read index, membership). Mount it at HandlerPrefix on the main port.
func (n *Node) Handler() http.Handler { return n.mux }

// Close shuts the node down without leaving the cluster (a restart keeps
// its membership), then closes the store. Like every storage.LDM, a second
// Close fails with storage.ErrClosed (and does not wait for the first).
func (n *Node) Close() error {
	if n.closed.Swap(true) {
		return storage.ErrClosed
	}
	var errs []error
	if n.serf != nil {
		errs = append(errs, n.serf.Shutdown())
	}
	errs = append(errs, n.stopRaft())
	close(n.shutdown)
	n.wg.Wait()
	n.http.CloseIdleConnections()
	n.finalSync()
	if err := n.store.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Node) stopRaft() error {
	var errs []error
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	n.stream.Close()
	if n.wal != nil {
		errs = append(errs, n.wal.Close())
	}
	if n.meta != nil {
		errs = append(errs, n.meta.Close())
	}
	return errors.Join(errs...)
}

// Leave hands leadership away if this node leads, asks the leader to
// remove it from the Raft configuration, then leaves the gossip pool
// gracefully (so the leader's reconcile loop also sees it as left, not
// failed). Call Close after. On a node that left, it does nothing.
func (n *Node) Leave(ctx context.Context) error {
	if n.serf != nil && n.serf.State() == serf.SerfLeft {
		return nil
	}
	if n.IsLeader() {
		if _, err := n.transferLocal(ctx, ""); err != nil {
			n.log.Warn("leadership transfer before leave failed", "error", err)
		}
	}
	if !n.IsLeader() {
		if err := n.RemoveServer(ctx, n.cfg.NodeID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			n.log.Warn("cannot remove this node from the configuration; the leader will when it sees the leave", "error", err)
		}
	}
	if n.serf == nil {
		return nil
	}
	return n.serf.Leave()
}

// Reads are served by the local store.

// Volume implements storage.LDM.
func (n *Node) Volume(name string) (storage.VolumeInfo, error) { return n.store.Volume(name) }

// Volumes implements storage.LDM.
func (n *Node) Volumes() ([]storage.VolumeInfo, error) { return n.store.Volumes() }

// Read implements storage.LDM.
func (n *Node) Read(volume string, offset uint64) (storage.Tile, error) {
	return n.store.Read(volume, offset)
}

// readerInto is the optional zero-allocation read of a store
// (storage.Store.ReadInto); the service detects it on a Node the same way.
type readerInto interface {
	ReadInto(volume string, offset uint64, buf []byte) (storage.Tile, error)
}

// ReadInto is Read into a caller-supplied buffer: the value is read into
// buf[:n] when cap(buf) is at least the tile's length n (the returned Value
// then aliases buf) and into a new buffer otherwise. It forwards to the
// store's ReadInto, so a clustered server keeps the buffer pooling of a
// single file store; over a store without it (MemoryStore) it is Read.
func (n *Node) ReadInto(volume string, offset uint64, buf []byte) (storage.Tile, error) {
	if r, ok := n.store.(readerInto); ok {
		return r.ReadInto(volume, offset, buf)
	}
	return n.store.Read(volume, offset)
}

// Brick implements storage.LDM.
func (n *Node) Brick(volume string, key storage.BrickKey) (storage.Tile, error) {
	return n.store.Brick(volume, key)
}

// Bricks implements storage.LDM.
func (n *Node) Bricks(volume string, lod uint32) (map[storage.BrickKey]uint64, error) {
	return n.store.Bricks(volume, lod)
}

// Wait implements storage.LDM. Only committed tiles are ever applied, so a
// follower's waiters see committed tiles only.
func (n *Node) Wait(ctx context.Context, volume string, offset uint64) error {
	return n.store.Wait(ctx, volume, offset)
}

// Writes go through Raft.

// CreateVolume implements storage.LDM. The leader stamps CreatedAt so every
// replica stores the same metadata.
func (n *Node) CreateVolume(ctx context.Context, m storage.VolumeMeta) (storage.VolumeInfo, error) {
	if err := m.Normalize(); err != nil {
		return storage.VolumeInfo{}, err
	}
	// A name that is taken is AlreadyExists whatever the codec asked for,
	// so a resumed import finds its volume even while the codec gate would
	// refuse a new one (a follower's view may lag; the FSM decides again).
	if _, err := n.store.Volume(m.Name); err == nil {
		return storage.VolumeInfo{}, fmt.Errorf("volume %q: %w", m.Name, storage.ErrExists)
	}
	if err := n.checkCodec(m.Codec.Kind); err != nil {
		return storage.VolumeInfo{}, err
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC()
	}
	m.Index = 0
	cmd, err := encodeCreate(m)
	if err != nil {
		return storage.VolumeInfo{}, err
	}
	res, err := n.apply(ctx, cmd)
	if err != nil {
		return storage.VolumeInfo{}, err
	}
	return res.info, res.err
}

// DeleteVolume implements storage.LDM.
func (n *Node) DeleteVolume(ctx context.Context, name string) error {
	if err := storage.ValidateName(name); err != nil {
		return err
	}
	cmd, err := encodeDelete(name)
	if err != nil {
		return err
	}
	res, err := n.apply(ctx, cmd)
	if err != nil {
		return err
	}
	return res.err
}

// Append implements storage.LDM. It returns once the tiles are committed
// by a majority and applied on the leader.
func (n *Node) Append(ctx context.Context, volume string, tiles ...storage.Tile) (uint64, error) {
	res, err := n.appendCmd(ctx, volume, tiles, nil)
	if err != nil {
		return 0, err
	}
	return res.first, res.err
}

// AppendIdempotent appends tiles whose tile i carries the client request
// id ids[i] ("" for none; ids is as long as tiles). A tile whose id was
// applied to the volume before (within the most recent ids the FSM keeps,
// see dedup.go) is not stored again; its offset is the original one. The
// ids travel in the Raft command, so a retry after a leader change is
// recognized too. It returns the offset of every tile, in order.
func (n *Node) AppendIdempotent(ctx context.Context, volume string, tiles []storage.Tile, ids []string) ([]uint64, error) {
	if len(ids) != len(tiles) {
		return nil, fmt.Errorf("%w: %d request ids for %d tiles", storage.ErrInvalidArgument, len(ids), len(tiles))
	}
	res, err := n.appendCmd(ctx, volume, tiles, ids)
	if err != nil {
		return nil, err
	}
	if res.err != nil {
		return nil, res.err
	}
	if res.offsets != nil {
		return res.offsets, nil
	}
	out := make([]uint64, len(tiles))
	for i := range out {
		out[i] = res.first + uint64(i)
	}
	return out, nil
}

// appendCmd checks tiles, encodes them with ids (nil: none) and commits
// the command.
func (n *Node) appendCmd(ctx context.Context, volume string, tiles []storage.Tile, ids []string) (*applyResult, error) {
	if err := storage.ValidateName(volume); err != nil {
		return nil, err
	}
	for i := range tiles {
		if n, limit := len(tiles[i].Value), n.cfg.MaxTileBytes; n > limit {
			return nil, fmt.Errorf("tile of %d bytes, the limit is %d: %w", n, limit, storage.ErrTooLarge)
		}
		if c := tiles[i].CRC32C; c != 0 {
			if sum := storage.Checksum(tiles[i].Value); sum != c {
				return nil, fmt.Errorf("tile crc32c %08x does not match its bytes (%08x): %w", c, sum, storage.ErrCorrupt)
			}
		}
	}
	if allEmpty(ids) {
		ids = nil
	}
	cmd, err := encodeAppendIDs(volume, tiles, ids)
	if err != nil {
		return nil, err
	}
	if len(cmd) > n.cfg.maxCommandBytes {
		return nil, fmt.Errorf("a write of %d tiles encodes to %d bytes, the limit is %d: %w", len(tiles), len(cmd), n.cfg.maxCommandBytes, storage.ErrTooLarge)
	}
	return n.apply(ctx, cmd)
}

func allEmpty(ids []string) bool {
	for _, id := range ids {
		if id != "" {
			return false
		}
	}
	return true
}

// apply commits cmd: locally when this node leads, else through the
// leader. It waits up to LeaderWait for a leader to be known.
func (n *Node) apply(ctx context.Context, cmd []byte) (*applyResult, error) {
	const attempts = 3
	var last error
	for attempt := 0; attempt < attempts; attempt++ {
		changed := n.leaderChange()
		if n.raft.State() == raft.Leader {
			res, err := n.applyLocal(ctx, cmd)
			if !errors.Is(err, raft.ErrNotLeader) {
				return res, err
			}
			last = err
		} else if addr, id := n.raft.LeaderWithID(); addr != "" && string(id) != n.cfg.NodeID {
			res, err := n.forwardApply(ctx, string(addr), cmd)
			var nl *storage.NotLeaderError
			if !errors.As(err, &nl) || errors.Is(err, ErrUnknownOutcome) {
				// Retrying a write whose outcome is unknown could
				// apply it twice; only a refusal is retried.
				return res, err
			}
			last = err
		}
		// No usable leader: wait for the next election result.
		t := time.NewTimer(n.cfg.LeaderWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-n.shutdown:
			t.Stop()
			return nil, storage.ErrClosed
		case <-changed:
			t.Stop()
		case <-t.C:
			return nil, n.notLeader(last)
		}
	}
	return nil, n.notLeader(last)
}

// ErrUnknownOutcome: a write reached the leader, but the leader lost its
// leadership or the connection broke before the result came back, so the
// write may or may not be committed. Errors wrapping it also wrap
// storage.ErrNotLeader (the service answers Unavailable); a client that
// retries may apply the write twice.
var ErrUnknownOutcome = errors.New("write outcome unknown")

func unknownOutcome(nl error, cause error) error {
	return fmt.Errorf("%w: %w (%v)", ErrUnknownOutcome, nl, cause)
}

// notLeader returns a *storage.NotLeaderError naming the leader if known.
func (n *Node) notLeader(cause error) error {
	addr, id := n.raft.LeaderWithID()
	nl := &storage.NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
	if cause != nil {
		var inner *storage.NotLeaderError
		if errors.As(cause, &inner) {
			return nl
		}
		return fmt.Errorf("%w (%v)", nl, cause)
	}
	return nl
}

// applyLocal proposes cmd to Raft on the leader and waits for its result.
// raft.ErrNotLeader is returned as is (the caller forwards); losing
// leadership after proposing is ambiguous (the entry may still commit) and
// is reported as ErrUnknownOutcome.
func (n *Node) applyLocal(ctx context.Context, cmd []byte) (*applyResult, error) {
	timeout, err := n.enqueueTimeout(ctx)
	if err != nil {
		return nil, err
	}
	f := n.raft.Apply(cmd, timeout)
	switch err := n.waitFuture(ctx, f); {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader):
		return nil, err
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Refused before it entered the log: safe to send again.
		return nil, fmt.Errorf("%w: %v", n.notLeader(nil), err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrRaftShutdown):
		// The entry may be in the log of a majority and still commit
		// under the next leader. Raft answers ErrRaftShutdown also for an
		// entry it had already sent to the followers.
		return nil, unknownOutcome(n.notLeader(nil), err)
	case ctx.Err() != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	res, ok := f.Response().(*applyResult)
	if !ok {
		return nil, fmt.Errorf("raft apply: unexpected response %T", f.Response())
	}
	return res, nil
}

// enqueueTimeout bounds how long Raft may take to accept a proposal:
// LeaderWait, or less when ctx ends sooner.
func (n *Node) enqueueTimeout(ctx context.Context) (time.Duration, error) {
	timeout := n.cfg.LeaderWait
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		// Raft reads a timeout of zero as no timeout at all.
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return 0, context.DeadlineExceeded
	}
	return timeout, nil
}

// waitFuture waits for f, for ctx to end or for the node to shut down.
// Raft never answers a proposal still queued when it shuts down, so
// without the shutdown case a caller with no deadline would wait forever;
// it gets raft.ErrRaftShutdown instead. The goroutine blocked on such a
// future stays until the process exits (hashicorp/raft gives no way to
// cancel it).
func (n *Node) waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-n.shutdown:
		return raft.ErrRaftShutdown
	}
}

// ReadBarrier makes the next local read linearizable: it returns once this
// node has applied every write acknowledged before the call. The leader
// uses read-index (leaderReadIndex); a follower asks the leader for its
// read index and waits until it applied it.
func (n *Node) ReadBarrier(ctx context.Context) error {
	if n.raft.State() == raft.Leader {
		_, err := n.leaderReadIndex(ctx)
		if err == nil || !errors.Is(err, storage.ErrNotLeader) {
			return err
		}
	}
	addr, id, err := n.knownLeader(ctx)
	if err != nil {
		return err
	}
	if id == n.cfg.NodeID {
		return n.notLeader(nil)
	}
	idx, err := n.forwardReadIndex(ctx, addr)
	if err != nil {
		return err
	}
	return n.fsm.waitApplied(ctx, idx, n.shutdown)
}

// termBarrier is the barrier a leader committed at the start of its term
// before its first read-index read.
type termBarrier struct {
	term  uint64 // the leader's term when it proposed the barrier
	index uint64 // the barrier entry's Raft index
}

// leaderReadIndex returns, on the leader, once this node has applied every
// write acknowledged before the call, and then the index of the last
// command it applied (a follower that applied it may read too).
//
// It is the read-index protocol (Raft thesis 6.4): once per term a barrier
// is committed, so the commit index covers every entry of earlier terms and
// every entry the FSM cannot see (the term's no-op) lies at or below the
// barrier; then, per read, the commit index is noted, a heartbeat round
// confirms that no other leader exists (VerifyLeader), the term must not
// have changed, and the read waits until the FSM applied everything up to
// the noted index. Past the barrier every entry of the term is a command
// or a configuration change, which the FSM sees, so that wait ends.
// Config.barrierReads selects the older way instead: one barrier entry per
// read.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	if n.cfg.barrierReads {
		if _, err := n.barrier(ctx); err != nil {
			return 0, err
		}
		idx, _ := n.fsm.appliedIndex()
		return idx, nil
	}
	term := n.raft.CurrentTerm()
	tb, err := n.termBarrier(ctx, term)
	if err != nil {
		return 0, err
	}
	commit := n.raft.CommitIndex()
	switch err := n.waitFuture(ctx, n.raft.VerifyLeader()); {
	case err == nil:
	case errors.Is(err, raft.ErrRaftShutdown):
		return 0, fmt.Errorf("raft: %w", storage.ErrClosed)
	case ctx.Err() != nil:
		return 0, err
	default:
		return 0, fmt.Errorf("%w: verify leader: %v", n.notLeader(nil), err)
	}
	if n.raft.CurrentTerm() != term {
		return 0, fmt.Errorf("%w: the term changed during a read", n.notLeader(nil))
	}
	if commit > tb.index {
		if err := n.fsm.waitThrough(ctx, commit, n.shutdown); err != nil {
			return 0, err
		}
	}
	idx, _ := n.fsm.appliedIndex()
	return idx, nil
}

// termBarrier returns the barrier of term, committing it first if this is
// the term's first read. One caller at a time commits it: a second barrier
// of the same term would be an entry past the first that the FSM never
// sees.
func (n *Node) termBarrier(ctx context.Context, term uint64) (*termBarrier, error) {
	if tb := n.readBase.Load(); tb != nil && tb.term == term {
		return tb, nil
	}
	select {
	case n.readBaseMu <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-n.readBaseMu }()
	if tb := n.readBase.Load(); tb != nil && tb.term == term {
		return tb, nil
	}
	idx, err := n.barrier(ctx)
	if err != nil {
		return nil, err
	}
	tb := &termBarrier{term: term, index: idx}
	n.readBase.Store(tb)
	return tb, nil
}

// barrier commits a barrier entry and returns its index once the FSM
// applied every entry before it.
func (n *Node) barrier(ctx context.Context) (uint64, error) {
	timeout, err := n.enqueueTimeout(ctx)
	if err != nil {
		return 0, err
	}
	f := n.raft.Barrier(timeout)
	switch err := n.waitFuture(ctx, f); {
	case err == nil:
	case errors.Is(err, raft.ErrRaftShutdown):
		return 0, fmt.Errorf("raft: %w", storage.ErrClosed)
	case ctx.Err() != nil:
		return 0, err
	default:
		return 0, fmt.Errorf("%w: barrier: %v", n.notLeader(nil), err)
	}
	idx := uint64(0)
	if f, ok := f.(raft.IndexFuture); ok {
		idx = f.Index()
	}
	if idx == 0 {
		return 0, errors.New("raft barrier: committed without an index")
	}
	return idx, nil
}

// newHCLogger adapts slog for the hashicorp libraries.
func newHCLogger(log *slog.Logger, name string) hclog.Logger {
	level := hclog.Error
	ctx := context.Background()
	switch {
	case log.Enabled(ctx, slog.LevelDebug):
		level = hclog.Debug
	case log.Enabled(ctx, slog.LevelInfo):
		level = hclog.Info
	case log.Enabled(ctx, slog.LevelWarn):
		level = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  level,
		Output: &slogWriter{log: log.With("component", name)},
	})
}

// slogWriter turns lines of the hashicorp loggers into slog records.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelInfo
	switch {
	case strings.Contains(line, "[ERROR]"), strings.Contains(line, "[ERR]"):
		level = slog.LevelError
	case strings.Contains(line, "[WARN]"):
		level = slog.LevelWarn
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, line)
	return len(p), nil
}

var _ io.Writer = (*slogWriter)(nil)
