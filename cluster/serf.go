package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/xcheng85/go-ldm/storage"
)

// Serf tags every go-ldm member carries.
const (
	tagRole = "role" // always "ldm"
	tagID   = "id"   // the Raft server id
	tagAddr = "addr" // the main port (RPC and Raft)
)

func (n *Node) startSerf() error {
	cfg := n.cfg
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("%w: GossipAddr %q: %v", storage.ErrInvalidArgument, cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("%w: GossipAddr %q: %v", storage.ErrInvalidArgument, cfg.GossipAddr, err)
	}
	serfDir := filepath.Join(cfg.Dir, "serf")
	if err := os.MkdirAll(serfDir, 0o755); err != nil {
		return fmt.Errorf("serf dir: %w", err)
	}
	// A new gossip name at every start (incarnation.go).
	start, prevName, err := nextIncarnation(serfDir, cfg.NodeID, time.Now())
	if err != nil {
		return err
	}
	n.gossipName = incarnationName(cfg.NodeID, start)
	n.incs = newIncarnations()
	snapshot := filepath.Join(serfDir, "local.snapshot")
	pruneLegacy := prevName == "" && legacyLeft(snapshot, cfg.NodeID)
	if err := forgetEarlierSelf(snapshot, cfg.NodeID, prevName); err != nil {
		return err
	}
	sc := serf.DefaultConfig()
	sc.Init()
	sc.NodeName = n.gossipName
	sc.Tags = map[string]string{tagRole: "ldm", tagID: cfg.NodeID, tagAddr: cfg.AdvertiseAddr,
		tagRaft: "0", tagExpect: strconv.Itoa(cfg.BootstrapExpect), tagStart: strconv.FormatInt(start, 10),
		tagCodecs: codecsTag(cfg)}
	sc.ReconnectTimeoutOverride = n.incs
	if n.hadState {
		sc.Tags[tagRaft] = "1"
		n.raftStateTagged.Store(true)
	}
	events := make(chan serf.Event, 256)
	sc.EventCh = events
	logger := log.New(&slogWriter{log: cfg.Logger.With("component", "serf", "node", cfg.NodeID)}, "", 0)
	sc.Logger = logger
	if cfg.LocalGossip {
		sc.MemberlistConfig = memberlist.DefaultLocalConfig()
	} else {
		sc.MemberlistConfig = memberlist.DefaultLANConfig()
	}
	sc.MemberlistConfig.Name = n.gossipName
	if len(cfg.GossipKey) > 0 {
		sc.MemberlistConfig.SecretKey = append([]byte(nil), cfg.GossipKey...)
	}
	sc.MemberlistConfig.Logger = logger
	sc.MemberlistConfig.BindAddr = host
	sc.MemberlistConfig.BindPort = port
	if cfg.GossipAdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(cfg.GossipAdvertiseAddr)
		if err != nil {
			return fmt.Errorf("%w: GossipAdvertiseAddr %q: %v", storage.ErrInvalidArgument, cfg.GossipAdvertiseAddr, err)
		}
		sc.MemberlistConfig.AdvertiseAddr = ah
		sc.MemberlistConfig.AdvertisePort, _ = strconv.Atoi(ap)
	}
	sc.SnapshotPath = snapshot
	s, err := serf.Create(sc)
	if err != nil {
		return fmt.Errorf("start serf: %w", err)
	}
	n.serf = s
	n.wg.Add(1)
	go n.serfEvents(events)
	if pruneLegacy {
		n.wg.Add(1)
		go n.pruneLegacySelf()
	}
	if len(cfg.Join) > 0 {
		n.wg.Add(1)
		go n.joinLoop()
	}
	return nil
}

// GossipAddr returns the address Serf listens on (with the port it picked
// when configured with port 0), or "" without gossip.
func (n *Node) GossipAddr() string {
	if n.serf == nil {
		return ""
	}
	m := n.serf.Memberlist().LocalNode()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// serfEvents drains Serf's event channel (never blocking Serf) and asks
// for a reconcile on membership changes.
func (n *Node) serfEvents(events chan serf.Event) {
	defer n.wg.Done()
	for {
		select {
		case <-n.shutdown:
			return
		case e := <-events:
			if me, ok := e.(serf.MemberEvent); ok {
				for _, m := range me.Members {
					n.incs.observe(m)
					n.log.Info("member event", "event", me.Type.String(), "member", m.Name, "id", memberNodeID(m),
						"gossip_addr", net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))), "status", m.Status.String())
				}
				n.triggerReconcile()
			}
		}
	}
}

func (n *Node) triggerReconcile() {
	select {
	case n.reconcileCh <- struct{}{}:
	default:
	}
}

// reconcileLoop makes the leader's Raft configuration follow Serf: alive
// members become voters, members that left gracefully are removed. A failed
// member stays a voter until an operator removes it. A node is the
// incarnation nodeMembers picks for its id, so an old incarnation that
// failed or left never removes a node whose newer incarnation lives.
//
// A pass in which a member could not prove its identity (it may not serve
// yet: a node joins gossip before its HTTP server runs) is followed by
// another after a backoff that starts at identifyRetryMin and doubles up
// to ReconcileInterval.
func (n *Node) reconcileLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	backoff := identifyRetryMin
	for {
		select {
		case <-n.shutdown:
			return
		case <-t.C:
		case <-n.reconcileCh:
		case <-retry.C:
		}
		if n.serf == nil || n.raft.State() != raft.Leader {
			continue
		}
		unproven, err := n.reconcilePass()
		if err != nil {
			n.log.Warn("reconcile failed", "error", err)
		}
		if unproven == 0 {
			backoff = identifyRetryMin
			continue
		}
		retry.Reset(backoff)
		backoff = min(2*backoff, n.cfg.ReconcileInterval)
	}
}

// identifyRetryMin is the first delay before a member that failed to
// prove its identity is checked again.
const identifyRetryMin = 500 * time.Millisecond

func (n *Node) reconcile() error {
	_, err := n.reconcilePass()
	return err
}

// reconcilePass reconciles once and returns how many alive members could
// not prove they are nodes.
func (n *Node) reconcilePass() (unproven int, _ error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, err
	}
	voters := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		voters[string(s.ID)] = s
	}
	var errs []error
	members := nodeMembers(n.serf.Members())
	proofs := n.identifyNew(members, voters)
	for _, m := range members {
		id, addr := memberNodeID(m), m.Tags[tagAddr]
		cur, known := voters[id]
		switch m.Status {
		case serf.StatusAlive:
			if known && string(cur.Address) == addr && cur.Suffrage == raft.Voter {
				continue
			}
			// Only a member that proves it is a node of this cluster
			// (node transport, matching identity) becomes a voter:
			// anyone who reaches the gossip port can announce tags.
			err, checked := proofs[id+"\x00"+addr]
			if !checked {
				err = errors.New("not checked")
			}
			if err != nil {
				n.log.Warn("not adding a gossip member that could not prove it is a node of this cluster", "id", id, "addr", addr, "error", err)
				unproven++
				continue
			}
			n.log.Info("adding voter", "id", id, "addr", addr)
			if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 10*time.Second).Error(); err != nil {
				errs = append(errs, fmt.Errorf("add voter %s: %w", id, err))
			}
		case serf.StatusLeft:
			if !known || id == n.cfg.NodeID {
				continue
			}
			n.log.Info("removing a member that left", "id", id)
			if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", id, err))
			}
		}
	}
	return unproven, errors.Join(errs...)
}

// identifyNew checks, concurrently (a few at a time, each bounded by
// identifyTimeout), the identity of every alive member that reconcile
// would make a voter, so members that never answer cannot hold up the
// others. It returns each one's result by id and address (NUL between).
// members holds one member per node id (nodeMembers).
func (n *Node) identifyNew(members []serf.Member, voters map[string]raft.Server) map[string]error {
	ctx, cancel := n.untilShutdown()
	defer cancel()
	var mu sync.Mutex
	out := map[string]error{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, m := range members {
		id, addr := memberNodeID(m), m.Tags[tagAddr]
		if id == "" || m.Status != serf.StatusAlive {
			continue
		}
		if cur, ok := voters[id]; ok && string(cur.Address) == addr && cur.Suffrage == raft.Voter {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := n.identify(ctx, id, addr)
			mu.Lock()
			out[id+"\x00"+addr] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// Member is one member of the cluster as this node sees it: a server in
// the Raft configuration, or an alive gossip member not in it yet.
type Member struct {
	ID string
	// Addr is the member's main port (RPC and Raft).
	Addr string
	// Leader is true for the member this node knows as the leader.
	Leader bool
	// Voter is true for a voter of the Raft configuration; false for a
	// gossip member that is not in the configuration yet.
	Voter bool
	// Status is the gossip status: "alive", "leaving", "left", "failed",
	// or "unknown" for a configured server gossip does not know.
	Status string
}

// Members lists every member: the Raft configuration (voters, in its
// order) followed by alive gossip members not in it yet. It fails with
// storage.ErrClosed after Close.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return nil, storage.ErrClosed
		}
		return nil, err
	}
	_, leaderID := n.raft.LeaderWithID()
	status := map[string]string{}
	var extra []Member
	inConfig := map[string]bool{}
	for _, s := range f.Configuration().Servers {
		inConfig[string(s.ID)] = true
	}
	if n.serf != nil {
		for _, m := range nodeMembers(n.serf.Members()) {
			id := memberNodeID(m)
			status[id] = m.Status.String()
			if !inConfig[id] && m.Status == serf.StatusAlive {
				extra = append(extra, Member{ID: id, Addr: m.Tags[tagAddr], Status: m.Status.String()})
			}
		}
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		st := status[string(s.ID)]
		if st == "" {
			st = "unknown"
			if string(s.ID) == n.cfg.NodeID {
				st = "alive"
			}
		}
		out = append(out, Member{
			ID:     string(s.ID),
			Addr:   string(s.Address),
			Leader: s.ID == leaderID,
			Voter:  s.Suffrage == raft.Voter,
			Status: st,
		})
	}
	return append(out, extra...), nil
}

// RemoveServer removes a member from the Raft configuration (on the leader,
// forwarded there from a follower) and from the gossip pool.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	if id == "" {
		return fmt.Errorf("%w: server id is empty", storage.ErrInvalidArgument)
	}
	if n.IsLeader() {
		return n.removeLocal(ctx, id)
	}
	addr, _, err := n.knownLeader(ctx)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(idRequest{ID: id})
	r, err := n.call(ctx, addr, pathRemove, body)
	if err != nil {
		return err
	}
	return n.fromWire(r.Error)
}

func (n *Node) removeLocal(ctx context.Context, id string) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	found := false
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("server %q: %w", id, storage.ErrNotFound)
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", n.notLeader(nil), err)
		}
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	if n.serf != nil && id != n.cfg.NodeID {
		// Mark every incarnation of it left, so the reconcile loop does
		// not add it back while it stays unreachable.
		for _, m := range n.serf.Members() {
			if memberNodeID(m) != id {
				continue
			}
			if err := n.serf.RemoveFailedNode(m.Name); err != nil {
				n.log.Warn("cannot mark member as left", "id", id, "member", m.Name, "error", err)
			}
		}
	}
	return nil
}

// TransferLeader hands leadership to id (any voter when empty) and returns
// the new leader's id.
func (n *Node) TransferLeader(ctx context.Context, id string) (string, error) {
	if n.IsLeader() {
		return n.transferLocal(ctx, id)
	}
	addr, _, err := n.knownLeader(ctx)
	if err != nil {
		return "", err
	}
	body, _ := json.Marshal(idRequest{ID: id})
	r, err := n.call(ctx, addr, pathTransfer, body)
	if err != nil {
		return "", err
	}
	return r.LeaderID, n.fromWire(r.Error)
}

func (n *Node) transferLocal(ctx context.Context, id string) (string, error) {
	var f raft.Future
	if id == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		var addr raft.ServerAddress
		cf := n.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return "", err
		}
		for _, s := range cf.Configuration().Servers {
			if string(s.ID) == id {
				addr = s.Address
			}
		}
		if addr == "" {
			return "", fmt.Errorf("server %q: %w", id, storage.ErrNotFound)
		}
		if id == n.cfg.NodeID {
			return id, nil
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(id), addr)
	}
	if err := n.waitFuture(ctx, f); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return "", storage.ErrClosed
		}
		return "", fmt.Errorf("transfer leadership: %w", err)
	}
	// Wait until a new leader is known.
	for {
		changed := n.leaderChange()
		if _, lid := n.raft.LeaderWithID(); lid != "" && string(lid) != n.cfg.NodeID {
			return string(lid), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-n.shutdown:
			return "", storage.ErrClosed
		case <-changed:
		}
	}
}
