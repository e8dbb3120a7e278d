// Gossip incarnations: one gossip member per process start.
//
// memberlist knows a member by its name and ties the name to one address.
// A node that stops without leaving (a crash, an eviction, an OOM kill)
// and comes back under the same name at a new address (a pod created
// again gets a new IP) collides with what the others remember: they hold
// the old address until they declare it dead, refuse the new one
// meanwhile (DeadNodeReclaimTime 0), and Serf's name conflict resolution
// may shut down the new process's gossip. So a node gossips under a name
// that is new at every start, its incarnation: the node id, "#" and the
// start time in base 36 (Config.NodeID "n1" -> "n1#lx3k9c0f2q8"). The node
// id travels in the "id" tag and the start time (Unix nanoseconds) in the
// "start" tag; the start time is kept in the serf directory and always
// moves forward on one data directory, so incarnations of one node order
// even when the clock steps back.
//
// Everything that reads gossip members (reconcile, bootstrap, Members and
// GetServers, metrics, authorization) sees one member per node id, the
// one nodeMembers picks: an alive incarnation over any other, then the
// newest. A failed or left old incarnation therefore never hides, demotes
// or removes the node while a newer one lives. A member without the
// "start" tag (a node of an earlier version, whose name is its id) is the
// oldest incarnation of its id.
//
// Old incarnations are cleaned up: every node reaps a failed or left
// incarnation that a newer one of the same id superseded at Serf's next
// reap pass (ReconnectTimeoutOverride) instead of after ReconnectTimeout
// (24 h), so Serf stops reconnecting to a dead address. Nodes of the
// earlier version act on every member with an id and reap nothing early:
// a member named after the id that left would make such a leader remove
// the node again on every reconcile pass after it came back. So a node
// whose previous run was the earlier version and left gracefully (its
// serf snapshot ends in a leave, legacyLeft) erases that member from every
// list once it gossips (RemoveFailedNodePrune, pruneLegacySelf;
// TestNode_PrunesEarlierVersionAfterLeave). A crashed earlier incarnation
// is failed, which such a leader ignores, and is not pruned: pruning
// marks a failed member left first. The serf snapshot's record of an
// earlier incarnation of this node is marked not alive before Serf
// starts, so a restart never rejoins the gossip pool through its own old
// entry (Serf skips only the current name).

package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/serf/serf"
)

// tagStart is the Serf tag holding the start time (Unix nanoseconds) of a
// member's incarnation.
const tagStart = "start"

// incarnationFile, in the serf directory, holds the start time and the
// gossip name of the node's latest incarnation.
const incarnationFile = "incarnation"

// incarnationName is the gossip name of node id's incarnation started at
// start (Unix nanoseconds).
func incarnationName(id string, start int64) string {
	return id + "#" + strconv.FormatInt(start, 36)
}

// nextIncarnation returns the start time of a new incarnation in dir (the
// serf directory): now, or one past the previous one when the clock is
// not past it, and the previous incarnation's gossip name ("" if none).
// It records the new one before returning.
func nextIncarnation(dir, id string, now time.Time) (start int64, prevName string, err error) {
	path := filepath.Join(dir, incarnationFile)
	start = now.UnixNano()
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, "", fmt.Errorf("read %s: %w", path, err)
	default:
		f := strings.Fields(string(b))
		if len(f) == 2 {
			if prev, perr := strconv.ParseInt(f[0], 10, 64); perr == nil {
				start = max(start, prev+1)
				prevName = f[1]
			}
		}
	}
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, []byte(fmt.Sprintf("%d %s\n", start, incarnationName(id, start)))); err != nil {
		return 0, "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, "", fmt.Errorf("record incarnation: %w", err)
	}
	return start, prevName, nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("record incarnation: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("record incarnation: %w", err)
	}
	return nil
}

// forgetEarlierSelf marks the given gossip names (earlier incarnations of
// this node) not alive in the Serf snapshot at path, if it exists, so
// Serf's rejoin from the snapshot does not pick this node's own old entry
// (Serf skips only an entry with the current name).
func forgetEarlierSelf(path string, names ...string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serf snapshot: %w", err)
	}
	var b strings.Builder
	for _, name := range names {
		if name != "" && !strings.ContainsAny(name, "\n") {
			b.WriteString("not-alive: " + name + "\n")
		}
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("serf snapshot: %w", err)
	}
	return nil
}

// memberNodeID returns the node id of a go-ldm gossip member ("" for
// another member): its id tag, or its name for a member without one.
func memberNodeID(m serf.Member) string {
	if m.Tags[tagRole] != "ldm" {
		return ""
	}
	if id := m.Tags[tagID]; id != "" {
		return id
	}
	return m.Name
}

// memberStart returns the start time of a member's incarnation; 0 (the
// oldest) for a member without the tag.
func memberStart(m serf.Member) int64 {
	s, _ := strconv.ParseInt(m.Tags[tagStart], 10, 64)
	return s
}

// preferred reports whether a stands for its node id rather than b: an
// alive incarnation over any other, then the newer, then (for equal
// start times, which one node never produces) the greater name, so the
// choice never depends on the order Serf lists members in.
func preferred(a, b serf.Member) bool {
	if aa, ba := a.Status == serf.StatusAlive, b.Status == serf.StatusAlive; aa != ba {
		return aa
	}
	if as, bs := memberStart(a), memberStart(b); as != bs {
		return as > bs
	}
	return a.Name > b.Name
}

// nodeMembers returns one gossip member per go-ldm node id, the
// incarnation that stands for it (preferred), sorted by node id. Every
// reader of gossip membership goes through it.
func nodeMembers(members []serf.Member) []serf.Member {
	best := map[string]serf.Member{}
	for _, m := range members {
		id := memberNodeID(m)
		if id == "" {
			continue
		}
		if cur, ok := best[id]; !ok || preferred(m, cur) {
			best[id] = m
		}
	}
	out := make([]serf.Member, 0, len(best))
	for _, m := range best {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b serf.Member) int { return strings.Compare(memberNodeID(a), memberNodeID(b)) })
	return out
}

// incarnations remembers the newest start time seen per node id. It is
// Serf's ReconnectTimeoutOverride: Serf calls it with its member lock
// held, so it reads only its own state.
type incarnations struct {
	mu     sync.Mutex
	newest map[string]int64
}

func newIncarnations() *incarnations { return &incarnations{newest: map[string]int64{}} }

// observe records a member's incarnation.
func (c *incarnations) observe(m serf.Member) {
	id := memberNodeID(m)
	if id == "" {
		return
	}
	s := memberStart(m)
	c.mu.Lock()
	if s > c.newest[id] {
		c.newest[id] = s
	}
	c.mu.Unlock()
}

// superseded reports whether a newer incarnation of m's node id was seen.
func (c *incarnations) superseded(m serf.Member) bool {
	id := memberNodeID(m)
	if id == "" {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return memberStart(m) < c.newest[id]
}

// ReconnectTimeout implements serf.ReconnectTimeoutOverrider: a failed or
// left incarnation that a newer one superseded is reaped at the next reap
// pass; any other member keeps Serf's timeout.
func (c *incarnations) ReconnectTimeout(m *serf.Member, timeout time.Duration) time.Duration {
	if c.superseded(*m) {
		return 0
	}
	return timeout
}

var _ serf.ReconnectTimeoutOverrider = (*incarnations)(nil)

// legacyLeft reports whether the Serf snapshot at path shows that the
// node's incarnation of the earlier version (gossip name id) left
// gracefully: a "leave" line with no later alive record of id.
func legacyLeft(path, id string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	left := false
	for line := range strings.SplitSeq(string(b), "\n") {
		switch {
		case line == "leave":
			left = true
		case strings.HasPrefix(line, "alive: "+id+" "):
			left = false
		}
	}
	return left
}

// Bounds of pruning the earlier version's incarnation after a start.
const (
	prunePoll     = 200 * time.Millisecond
	pruneTimeout  = 2 * time.Minute
	pruneAttempts = 3
	pruneSpacing  = time.Second
)

// pruneLegacySelf waits (up to pruneTimeout) until this node gossips with
// another alive member, then erases its incarnation of the earlier
// version, named id, from every member's list (see the file comment). It
// sends the erasure pruneAttempts times, pruneSpacing apart: a receiver
// ignores one whose Lamport time is not past the leave it recorded, and
// memberlist reports the first alive members before Serf merged their
// clocks into this node's.
func (n *Node) pruneLegacySelf() {
	defer n.wg.Done()
	t := time.NewTicker(prunePoll)
	defer t.Stop()
	deadline := time.NewTimer(pruneTimeout)
	defer deadline.Stop()
	sent := 0
	var last time.Time
	for sent < pruneAttempts {
		if time.Since(last) >= pruneSpacing && slices.ContainsFunc(n.serf.Members(), func(m serf.Member) bool {
			return m.Name != n.gossipName && m.Status == serf.StatusAlive
		}) {
			last = time.Now()
			sent++
			if err := n.serf.RemoveFailedNodePrune(n.cfg.NodeID); err != nil {
				n.log.Warn("cannot erase this node's earlier incarnation from gossip", "member", n.cfg.NodeID, "error", err)
			} else if sent == 1 {
				n.log.Info("erasing this node's earlier incarnation, which left, from gossip", "member", n.cfg.NodeID)
			}
		}
		select {
		case <-n.shutdown:
			return
		case <-deadline.C:
			return
		case <-t.C:
		}
	}
}
