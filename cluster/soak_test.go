package cluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// soakRounds is the number of leader kills of TestNode_RepeatedLeaderKills:
// 2 by default, LDM_SOAK_ROUNDS for a longer soak.
func soakRounds() int {
	if n, err := strconv.Atoi(os.Getenv("LDM_SOAK_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// TestNode_RepeatedLeaderKills kills whichever node leads, again and
// again, while writers append through every node; each killed node
// restarts before the next kill. At the end all nodes hold the same log,
// with every acknowledged write once at its offset.
func TestNode_RepeatedLeaderKills(t *testing.T) {
	c := newTestCluster(t)
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n1.node, "soak")
	all := []*testNode{n1, n2, n3}

	var (
		mu     sync.Mutex
		nodes  = []*Node{n1.node, n2.node, n3.node} // guarded by mu: restarts replace them
		acks   = map[string]uint64{}
		nAcks  atomic.Int64
		writes sync.WaitGroup
	)
	stop := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(soakRounds())*60*time.Second)
	defer cancel()
	for w := range 4 {
		writes.Go(func() {
			for seq := 0; ; seq++ {
				for attempt := 0; ; attempt++ {
					select {
					case <-stop:
						return
					default:
					}
					if attempt == 200 || ctx.Err() != nil {
						t.Errorf("writer %d: write %d not acknowledged after %d attempts", w, seq, attempt)
						return
					}
					mu.Lock()
					node := nodes[(w+attempt)%len(nodes)]
					mu.Unlock()
					v := fmt.Sprintf("w%d-s%d-a%d", w, seq, attempt)
					wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
					off, err := node.Append(wctx, "soak", storage.Tile{Value: []byte(v)})
					wcancel()
					if err == nil {
						mu.Lock()
						acks[v] = off
						mu.Unlock()
						nAcks.Add(1)
						break
					}
				}
			}
		})
	}
	for round := range soakRounds() {
		target := nAcks.Load() + 20
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("round %d: 20 more acknowledged writes", round), func() bool { return nAcks.Load() >= target })
		victim := c.leader(15 * time.Second)
		c.stop(victim)
		c.leader(15 * time.Second)
		c.restart(victim)
		mu.Lock()
		for i, n := range all {
			nodes[i] = n.node
		}
		mu.Unlock()
	}
	close(stop)
	writes.Wait()
	log := sameLogs(t, c, "soak")
	seen := map[string]int{}
	for off, v := range log {
		if prev, dup := seen[string(v)]; dup {
			t.Fatalf("value %q at offsets %d and %d", v, prev, off)
		}
		seen[string(v)] = off
	}
	for v, off := range acks {
		if got, ok := seen[v]; !ok || uint64(got) != off {
			t.Fatalf("acknowledged write %q at offset %d: present %v at %d", v, off, ok, got)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes, %d tiles", soakRounds(), len(acks), len(log))
}
