package cluster

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Timings of joining the gossip pool.
const (
	joinBackoffMin = 200 * time.Millisecond
	joinBackoffMax = 5 * time.Second
	// resolveTimeout bounds one DNS lookup of a Join entry.
	resolveTimeout = 5 * time.Second
)

// LookupHostFunc resolves a host name to addresses, like
// (*net.Resolver).LookupHost.
type LookupHostFunc func(ctx context.Context, host string) ([]string, error)

// resolveJoin turns the Join entries into gossip addresses. An entry is
// host:port or host alone (then the port is defaultPort, this node's
// gossip port); an IP is used as is and a name is resolved with lookup,
// every address it has (A and AAAA records) being a peer, the way a
// Kubernetes headless service lists its pods. Entries that do not resolve
// are reported in the error; the addresses of the others are returned.
func resolveJoin(ctx context.Context, entries []string, defaultPort string, lookup LookupHostFunc) ([]string, error) {
	var out []string
	var errs []error
	for _, e := range entries {
		host, port, err := net.SplitHostPort(e)
		if err != nil {
			host, port = e, defaultPort
		}
		if ip := net.ParseIP(host); ip != nil {
			out = append(out, net.JoinHostPort(ip.String(), port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		addrs, err := lookup(lctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("resolve %s: %w", host, err))
			continue
		}
		for _, a := range addrs {
			if ip := net.ParseIP(a); ip != nil {
				a = ip.String()
			}
			out = append(out, net.JoinHostPort(a, port))
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(errs) > 0 {
		return out, joinErrors(errs)
	}
	return out, nil
}

func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return fmt.Errorf("%v (and %d more)", errs[0], len(errs)-1)
}

// joinLoop joins the gossip pool through the Join entries, resolving
// names again before every attempt, with a backoff between attempts, until
// a member other than this node answers or the node shuts down. With
// BootstrapExpect on a node without Raft state it goes on (re-resolving,
// to find members that appear later in DNS) until a leader is known, so
// that nodes which first found only themselves still meet.
func (n *Node) joinLoop() {
	defer n.wg.Done()
	lookup := n.cfg.LookupHost
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	ctx, cancel := n.untilShutdown()
	defer cancel()
	self := n.serf.Memberlist().LocalNode()
	selfAddr := net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	defaultPort := strconv.Itoa(int(self.Port))
	keepGoing := n.cfg.BootstrapExpect > 0 && !n.hadState
	backoff := joinBackoffMin
	joined := false
	for attempt := 1; ; attempt++ {
		if joined && (!keepGoing || n.leaderKnown()) {
			return
		}
		addrs, rerr := resolveJoin(ctx, n.cfg.Join, defaultPort, lookup)
		var peers []string
		for _, a := range addrs {
			if a != selfAddr && !n.isAliveGossipAddr(a) {
				peers = append(peers, a)
			}
		}
		switch {
		case len(peers) > 0:
			n.log.Info("joining the gossip pool", "join", n.cfg.Join, "trying", peers, "attempt", attempt)
			contacted, err := n.serf.Join(peers, true)
			if contacted > 0 {
				if !joined {
					n.log.Info("joined the gossip pool", "contacted", contacted, "members", len(n.serf.Members()))
				}
				joined = true
				backoff = joinBackoffMin
			} else {
				n.log.Warn("cannot join the gossip pool yet; retrying", "join", n.cfg.Join, "tried", peers, "error", err, "retry_in", backoff)
			}
		case rerr != nil:
			n.log.Warn("cannot resolve the join addresses yet; retrying", "join", n.cfg.Join, "error", rerr, "retry_in", backoff)
		case !joined && len(addrs) > 0 && len(n.serf.Members()) > 1:
			// Every address is this node or a member already: someone
			// joined us.
			joined = true
		case !joined:
			n.log.Info("no other member to join yet; retrying", "join", n.cfg.Join, "resolved", addrs, "retry_in", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-n.shutdown:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// isAliveGossipAddr reports whether an alive member gossips at addr.
func (n *Node) isAliveGossipAddr(addr string) bool {
	for _, m := range n.serf.Members() {
		if m.Status == serf.StatusAlive && net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))) == addr {
			return true
		}
	}
	return false
}

// leaderKnown reports whether this node knows a leader.
func (n *Node) leaderKnown() bool {
	_, id := n.raft.LeaderWithID()
	return id != ""
}

// untilShutdown returns a context that ends when the node shuts down or
// cancel is called.
func (n *Node) untilShutdown() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
