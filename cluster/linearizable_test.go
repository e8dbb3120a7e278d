package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/xcheng85/go-ldm/storage"
)

// logInput is one operation on a volume's log: an append of value, or a
// linearizable read of the log's length and last value.
type logInput struct {
	append bool
	value  string
}

type logOutput struct {
	offset uint64 // append: the offset assigned
	length uint64 // read: the log's length
	last   string // read: the value at length-1
}

// logModel is a volume's append-only log as a sequential object.
var logModel = porcupine.Model{
	Init: func() any { return []string(nil) },
	Step: func(state, input, output any) (bool, any) {
		s := state.([]string)
		in, out := input.(logInput), output.(logOutput)
		if in.append {
			if out.offset != uint64(len(s)) {
				return false, s
			}
			next := make([]string, len(s), len(s)+1)
			copy(next, s)
			return true, append(next, in.value)
		}
		if out.length != uint64(len(s)) {
			return false, s
		}
		return out.length == 0 || s[out.length-1] == out.last, s
	},
	Equal: func(a, b any) bool {
		x, y := a.([]string), b.([]string)
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(logInput), output.(logOutput)
		if in.append {
			return fmt.Sprintf("append(%s) -> %d", in.value, out.offset)
		}
		return fmt.Sprintf("read() -> len %d last %q", out.length, out.last)
	},
}

// TestNode_Linearizable checks with porcupine that concurrent appends and
// linearizable reads, sent to every node, form a linearizable history.
func TestNode_Linearizable(t *testing.T) {
	c := newTestCluster(t)
	// Raft's default commit timeout: followers learn of commits as late
	// as in production, so a read that skipped the barrier would be
	// stale often enough to be caught.
	c.tune = func(cfg *Config) { cfg.CommitTimeout = 50 * time.Millisecond }
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n1.node, "lin")
	c.converge(10 * time.Second) // every node knows the volume
	nodes := []*Node{n1.node, n2.node, n3.node}

	const clients, opsPerClient = 6, 30
	start := time.Now()
	var mu sync.Mutex
	var history []porcupine.Operation
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Go(func() {
			for i := range opsPerClient {
				node := nodes[(cl+i)%len(nodes)]
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				// Every third operation of a client is a read; which node
				// serves it depends on the client, so followers serve
				// reads too (a follower's read is the one that needs the
				// barrier).
				in := logInput{append: i%3 != 0, value: fmt.Sprintf("c%d-%d", cl, i)}
				var out logOutput
				call := time.Since(start).Nanoseconds()
				var err error
				if in.append {
					out.offset, err = node.Append(ctx, "lin", storage.Tile{Value: []byte(in.value)})
				} else {
					err = node.ReadBarrier(ctx)
					if err == nil {
						var info storage.VolumeInfo
						info, err = node.Volume("lin")
						out.length = info.NextOffset
						if err == nil && out.length > 0 {
							var tile storage.Tile
							tile, err = node.Read("lin", out.length-1)
							out.last = string(tile.Value)
						}
					}
				}
				ret := time.Since(start).Nanoseconds()
				cancel()
				if err != nil {
					t.Errorf("client %d op %d on %s: %v", cl, i, node.ID(), err)
					return
				}
				mu.Lock()
				history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	res := porcupine.CheckOperationsTimeout(logModel, history, 30*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("history of %d operations is not linearizable (%v)", len(history), res)
	}
	t.Logf("%d operations checked", len(history))
}
