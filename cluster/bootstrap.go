// Forming a cluster from nodes started in parallel (BootstrapExpect).
//
// A StatefulSet with podManagementPolicy Parallel starts every pod at once,
// each with the same flags, so no node can be told "you bootstrap". If
// each bootstrapped alone, Raft would never merge the clusters: their first
// entries share term and index, so log matching takes them for the same
// entry. Options considered:
//
//  1. Every node bootstraps with the same configuration once it sees N
//     members (Consul and Nomad with bootstrap_expect; rqlite with
//     -bootstrap-expect, from the nodes that contacted it). Safe only
//     while every node computes the same set; a node that saw a different
//     N members (a slow DNS answer, a late extra pod) writes a different
//     first configuration.
//  2. One deterministic node bootstraps, the others wait (chosen). Once
//     gossip shows BootstrapExpect members without Raft state (tag "raft"
//     0) that expect the same number (tag "expect"), the one with the
//     lowest id proves each is a node (identify, as before AddVoter) and
//     bootstraps with all of them as voters; the others hold no
//     configuration, grant it their votes and receive the log. The set
//     must stay the same for bootstrapSettle first, so a join that is
//     still spreading is seen. Only one node ever writes a first entry.
//
// Guards: a node with Raft state never bootstraps and announces it (tag
// "raft" 1, also set once a node without state knows a leader); an empty
// node that sees such a member waits to be added by that cluster's
// leader (scale-up, a pod whose volume was lost); a member without the
// tag counts as having state; different expect values stop the bootstrap
// with a log line. Join names are resolved again until joined, and while
// no leader is known the node keeps re-resolving and joining addresses
// that are not members yet, so nodes that first found only themselves
// still meet (discover.go). BootstrapExpect must be the number of nodes
// started together: a larger set of empty nodes whose gossip views
// differ could still pick two lowest ids.

package cluster

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"
)

// Serf tags of the bootstrap protocol (see BootstrapExpect).
const (
	// tagRaft is "1" when the member has Raft state (it bootstrapped, was
	// added to a cluster or restarted with a log), "0" when it starts
	// empty. A member without the tag counts as having state, so a node
	// never bootstraps next to one it cannot judge.
	tagRaft = "raft"
	// tagExpect is the member's BootstrapExpect ("0" without it).
	tagExpect = "expect"
)

// Timings of the bootstrap protocol.
const (
	// bootstrapPoll is how often a node waiting for BootstrapExpect
	// members looks at the gossip pool.
	bootstrapPoll = 100 * time.Millisecond
	// bootstrapSettle is how long the set of empty members must stay the
	// same before the chosen node bootstraps, so that a member whose join
	// is still spreading through gossip is seen by everyone first.
	bootstrapSettle = 500 * time.Millisecond
)

// bootCandidate is a gossip member as the bootstrap protocol sees it.
type bootCandidate struct {
	id, addr string
	hasState bool
	expect   int
}

// bootstrapPlan decides, on the node self, what to do with the alive
// go-ldm members of the gossip pool (self included) when this node has no
// Raft state and expects expect servers. It returns the voters to
// bootstrap with when self must bootstrap now, or nil and why it waits.
//
// The rule: no member may have Raft state (then a cluster exists and its
// leader adds this node); every empty member that expects servers must
// expect the same number; at least expect empty members must be seen;
// and only the one with the lowest id among them bootstraps, with all of
// them as voters. Every other node waits to be contacted by the leader
// that election makes of it. Because exactly one node writes an initial
// configuration, parallel starts form one cluster, not several.
func bootstrapPlan(self string, expect int, members []bootCandidate) ([]bootCandidate, string) {
	var fresh []bootCandidate
	for _, m := range members {
		if m.hasState {
			return nil, fmt.Sprintf("member %s already has Raft state: waiting for its leader to add this node", m.id)
		}
		switch m.expect {
		case 0:
			// A node started without BootstrapExpect waits to be added.
		case expect:
			fresh = append(fresh, m)
		default:
			return nil, fmt.Sprintf("member %s expects %d servers, this node %d: every node must be started with the same --bootstrap-expect", m.id, m.expect, expect)
		}
	}
	if len(fresh) < expect {
		ids := make([]string, 0, len(fresh))
		for _, m := range fresh {
			ids = append(ids, m.id)
		}
		slices.Sort(ids)
		return nil, fmt.Sprintf("%d of %d expected servers in the gossip pool (%s)", len(fresh), expect, strings.Join(ids, ", "))
	}
	slices.SortFunc(fresh, func(a, b bootCandidate) int { return strings.Compare(a.id, b.id) })
	if fresh[0].id != self {
		return nil, fmt.Sprintf("%s, the member with the lowest id, forms the cluster", fresh[0].id)
	}
	return fresh, ""
}

// candidates returns the alive go-ldm nodes of the gossip pool, one per
// node id (nodeMembers): a node that restarted and still has an old
// incarnation alive in gossip counts once.
func candidates(members []serf.Member) []bootCandidate {
	var out []bootCandidate
	for _, m := range nodeMembers(members) {
		id := memberNodeID(m)
		if m.Status != serf.StatusAlive {
			continue
		}
		expect, _ := strconv.Atoi(m.Tags[tagExpect])
		out = append(out, bootCandidate{id: id, addr: m.Tags[tagAddr], hasState: m.Tags[tagRaft] != "0", expect: expect})
	}
	return out
}

// bootstrapLoop runs on a node with BootstrapExpect and no Raft state. It
// waits until the gossip pool holds the expected servers and, if this node
// is the one bootstrapPlan chooses and every chosen member proves it is a
// node (identify), bootstraps Raft with them all as voters. It ends when
// this node bootstrapped, when a leader is known (another node formed the
// cluster and this one is in it) or when the node shuts down.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	t := time.NewTicker(bootstrapPoll)
	defer t.Stop()
	var (
		lastReason string
		lastSet    string    // the chosen members, as ids and addresses
		since      time.Time // when lastSet was first seen
	)
	for {
		if _, id := n.raft.LeaderWithID(); id != "" {
			n.log.Info("joined a cluster formed by another node", "leader", id)
			return
		}
		plan, reason := bootstrapPlan(n.cfg.NodeID, n.cfg.BootstrapExpect, candidates(n.serf.Members()))
		if plan == nil {
			if reason != lastReason {
				n.log.Info("waiting to bootstrap", "expect", n.cfg.BootstrapExpect, "reason", reason)
				lastReason = reason
			}
			lastSet = ""
		} else {
			set := planKey(plan)
			switch {
			case set != lastSet:
				lastSet, since = set, time.Now()
			case time.Since(since) >= bootstrapSettle:
				done, err := n.bootstrapWith(plan)
				if err != nil {
					n.log.Warn("cannot bootstrap yet", "servers", set, "error", err)
					lastSet = ""
				}
				if done {
					return
				}
			}
		}
		select {
		case <-n.shutdown:
			return
		case <-n.leaderChange():
		case <-t.C:
		}
	}
}

func planKey(plan []bootCandidate) string {
	parts := make([]string, len(plan))
	for i, m := range plan {
		parts[i] = m.id + "@" + m.addr
	}
	return strings.Join(parts, ",")
}

// bootstrapWith checks the identity of every member of plan and
// bootstraps Raft with them as voters. It reports whether the node now has
// Raft state (it bootstrapped, or found state written meanwhile).
func (n *Node) bootstrapWith(plan []bootCandidate) (bool, error) {
	var members []serf.Member
	for _, m := range plan {
		if m.id == n.cfg.NodeID {
			continue
		}
		members = append(members, serf.Member{Status: serf.StatusAlive, Tags: map[string]string{tagRole: "ldm", tagID: m.id, tagAddr: m.addr}})
	}
	for key, err := range n.identifyNew(members, nil) {
		if err != nil {
			return false, fmt.Errorf("member %s did not prove it is a node: %w", strings.ReplaceAll(key, "\x00", " at "), err)
		}
	}
	cfg := raft.Configuration{}
	for _, m := range plan {
		cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.id), Address: raft.ServerAddress(m.addr)})
	}
	if err := n.raft.BootstrapCluster(cfg).Error(); err != nil {
		if err == raft.ErrCantBootstrap {
			n.log.Info("not bootstrapping: this node has Raft state now")
			n.markRaftState()
			return true, nil
		}
		return false, err
	}
	n.log.Info("bootstrapped a new cluster", "voters", planKey(plan))
	n.markRaftState()
	return true, nil
}

// markRaftState announces in gossip that this node has Raft state, so no
// empty node bootstraps a second cluster next to it.
func (n *Node) markRaftState() {
	if n.serf == nil || n.raftStateTagged.Swap(true) {
		return
	}
	tags := maps.Clone(n.serf.LocalMember().Tags)
	tags[tagRaft] = "1"
	if err := n.serf.SetTags(tags); err != nil {
		n.log.Warn("cannot announce Raft state in gossip", "error", err)
		n.raftStateTagged.Store(false)
	}
}

// raftStateLoop marks the node as having Raft state once it knows a
// leader: it was added to a cluster (or bootstrapped one). It runs on a
// gossiping node that started without state.
func (n *Node) raftStateLoop() {
	defer n.wg.Done()
	for {
		changed := n.leaderChange()
		if _, id := n.raft.LeaderWithID(); id != "" {
			n.markRaftState()
			return
		}
		select {
		case <-n.shutdown:
			return
		case <-changed:
		}
	}
}
