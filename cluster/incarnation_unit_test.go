package cluster

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"
)

func incarnation(id string, start int64, status serf.MemberStatus) serf.Member {
	tags := map[string]string{tagRole: "ldm", tagID: id, tagAddr: id + ":8080", tagRaft: "0", tagExpect: "3"}
	name := id
	if start > 0 {
		tags[tagStart] = strconv.FormatInt(start, 10)
		name = incarnationName(id, start)
	}
	return serf.Member{Name: name, Tags: tags, Status: status}
}

// TestNodeMembers: one member per node id, the alive incarnation over a
// failed or left one whatever their ages, else the newest; a member
// without the start tag (the earlier version) is the oldest; members
// without go-ldm's role are left out.
func TestNodeMembers(t *testing.T) {
	cases := []struct {
		name    string
		members []serf.Member
		want    map[string]string // node id -> member name
	}{
		{"old_failed_new_alive", []serf.Member{incarnation("a", 2, serf.StatusAlive), incarnation("a", 1, serf.StatusFailed)}, map[string]string{"a": incarnationName("a", 2)}},
		{"old_left_new_alive", []serf.Member{incarnation("a", 1, serf.StatusLeft), incarnation("a", 2, serf.StatusAlive)}, map[string]string{"a": incarnationName("a", 2)}},
		{"alive_beats_newer_failed", []serf.Member{incarnation("a", 1, serf.StatusAlive), incarnation("a", 2, serf.StatusFailed)}, map[string]string{"a": incarnationName("a", 1)}},
		{"both_alive_newest", []serf.Member{incarnation("a", 2, serf.StatusAlive), incarnation("a", 1, serf.StatusAlive)}, map[string]string{"a": incarnationName("a", 2)}},
		{"newest_left_after_failed", []serf.Member{incarnation("a", 1, serf.StatusFailed), incarnation("a", 2, serf.StatusLeft)}, map[string]string{"a": incarnationName("a", 2)}},
		{"earlier_version_is_oldest", []serf.Member{incarnation("a", 0, serf.StatusLeft), incarnation("a", 5, serf.StatusFailed)}, map[string]string{"a": incarnationName("a", 5)}},
		{"earlier_version_alive", []serf.Member{incarnation("a", 0, serf.StatusAlive), incarnation("b", 3, serf.StatusAlive)}, map[string]string{"a": "a", "b": incarnationName("b", 3)}},
		{"other_roles_ignored", []serf.Member{{Name: "x", Tags: map[string]string{tagID: "x"}, Status: serf.StatusAlive}}, map[string]string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, order := range [][]serf.Member{tc.members, reversed(tc.members)} {
				got := map[string]string{}
				for _, m := range nodeMembers(order) {
					if _, dup := got[memberNodeID(m)]; dup {
						t.Fatalf("node %s listed twice", memberNodeID(m))
					}
					got[memberNodeID(m)] = m.Name
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				for id, name := range tc.want {
					if got[id] != name {
						t.Fatalf("node %s: got %q, want %q (all: %v)", id, got[id], name, got)
					}
				}
			}
		})
	}
}

func reversed(ms []serf.Member) []serf.Member {
	out := make([]serf.Member, len(ms))
	for i, m := range ms {
		out[len(ms)-1-i] = m
	}
	return out
}

// TestCandidates_CountsNodes: BootstrapExpect counts nodes, not gossip
// members: a node that restarted while its old incarnation is still
// alive in gossip counts once, so two nodes never pass for three.
func TestCandidates_CountsNodes(t *testing.T) {
	members := []serf.Member{
		incarnation("a", 1, serf.StatusAlive),
		incarnation("a", 2, serf.StatusAlive),
		incarnation("b", 1, serf.StatusAlive),
	}
	cands := candidates(members)
	if len(cands) != 2 {
		t.Fatalf("%d candidates, want 2: %+v", len(cands), cands)
	}
	if plan, reason := bootstrapPlan("a", 3, cands); plan != nil || !strings.Contains(reason, "2 of 3") {
		t.Fatalf("plan %+v (%s), want to wait for a third node", plan, reason)
	}
}

// TestIncarnations_ReconnectTimeout: an incarnation a newer one of the
// same node superseded is reaped at once; the newest keeps Serf's timeout.
func TestIncarnations_ReconnectTimeout(t *testing.T) {
	c := newIncarnations()
	old, cur := incarnation("a", 1, serf.StatusFailed), incarnation("a", 2, serf.StatusAlive)
	c.observe(old)
	if got := c.ReconnectTimeout(&old, time.Hour); got != time.Hour {
		t.Fatalf("the only incarnation: %v, want Serf's timeout", got)
	}
	c.observe(cur)
	if got := c.ReconnectTimeout(&old, time.Hour); got != 0 {
		t.Fatalf("a superseded incarnation: %v, want 0", got)
	}
	if got := c.ReconnectTimeout(&cur, time.Hour); got != time.Hour {
		t.Fatalf("the newest incarnation: %v, want Serf's timeout", got)
	}
	legacy := incarnation("a", 0, serf.StatusLeft)
	if got := c.ReconnectTimeout(&legacy, time.Hour); got != 0 {
		t.Fatalf("the earlier version's incarnation: %v, want 0", got)
	}
}

// TestNextIncarnation: every start gets a later start time on one data
// directory, even when the clock goes back, and learns the previous name.
func TestNextIncarnation(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1000, 0)
	s1, prev, err := nextIncarnation(dir, "n1", now)
	if err != nil || prev != "" || s1 != now.UnixNano() {
		t.Fatalf("first start: %d %q %v", s1, prev, err)
	}
	s2, prev, err := nextIncarnation(dir, "n1", now.Add(-time.Hour))
	if err != nil || prev != incarnationName("n1", s1) || s2 <= s1 {
		t.Fatalf("start with the clock an hour back: %d (first %d) %q %v", s2, s1, prev, err)
	}
	s3, prev, err := nextIncarnation(dir, "n1", now.Add(time.Hour))
	if err != nil || prev != incarnationName("n1", s2) || s3 != now.Add(time.Hour).UnixNano() {
		t.Fatalf("third start: %d %q %v", s3, prev, err)
	}
}

// TestForgetEarlierSelf: Serf's rejoin from its snapshot never targets
// this node's earlier incarnations; the earlier version's graceful leave
// is recognized.
func TestForgetEarlierSelf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "local.snapshot")
	if err := forgetEarlierSelf(path, "n1"); err != nil {
		t.Fatalf("no snapshot yet: %v", err)
	}
	snap := "alive: n1 127.0.0.1:7946\nalive: n2 127.0.0.2:7946\nclock: 5\nleave\n"
	if err := os.WriteFile(path, []byte(snap), 0o644); err != nil {
		t.Fatal(err)
	}
	if !legacyLeft(path, "n1") {
		t.Fatal("a snapshot ending in a leave: not seen as a graceful leave")
	}
	if err := forgetEarlierSelf(path, "n1", "n1#abc"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := snap + "not-alive: n1\nnot-alive: n1#abc\n"; string(b) != want {
		t.Fatalf("snapshot:\n%s\nwant:\n%s", b, want)
	}
	if err := os.WriteFile(path, []byte("leave\nalive: n1 127.0.0.1:7946\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if legacyLeft(path, "n1") {
		t.Fatal("a node that joined again after its leave: seen as left")
	}
}
