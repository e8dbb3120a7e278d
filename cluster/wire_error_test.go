package cluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// TestWireError_RoundTrip checks that every sentinel a forwarded write can
// fail with survives the hop from leader to follower, a full disk included
// (it must stay ResourceExhausted, not become Internal).
func TestWireError_RoundTrip(t *testing.T) {
	n := &Node{}
	for _, k := range errorKinds {
		if k.kind == "not_leader" || k.kind == "unknown_outcome" {
			continue // answered from the follower's own view of the leader
		}
		err := n.fromWire(toWire(fmt.Errorf("append to v: %w", k.err)))
		if !errors.Is(err, k.err) {
			t.Errorf("%s: came back as %v", k.kind, err)
		}
	}
	if err := n.fromWire(toWire(fmt.Errorf("write /data/v/0.dat: %w", storage.ErrNoSpace))); !errors.Is(err, storage.ErrNoSpace) {
		t.Fatalf("a full disk on the leader came back as %v", err)
	}
}
