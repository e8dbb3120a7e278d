package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

// childArgsEnv carries the `ldm` arguments of a child process started by
// startChild; the child is this test binary running
// TestClusterHelperProcess.
const childArgsEnv = "LDM_TEST_CHILD_ARGS"

// TestClusterHelperProcess is the body of a child `ldm` process; it does
// nothing unless started by startChild.
func TestClusterHelperProcess(t *testing.T) {
	raw := os.Getenv(childArgsEnv)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ldm:", err)
		os.Exit(exitCode(err))
	}
	os.Exit(0)
}

// child is one `ldm serve` process of a cluster.
type child struct {
	id, addr, gossip, dir string
	join                  []string
	cmd                   *exec.Cmd
	done                  chan struct{}
	api                   ldmv1connect.TileServiceClient
	cluster               ldmv1connect.ClusterServiceClient
	volumes               ldmv1connect.VolumeServiceClient
}

func (c *child) start(tb testing.TB) {
	tb.Helper()
	args := []string{"serve", "--addr", c.addr, "--data", filepath.Join(c.dir, "data"), "--log-level", "warn", "--log-format", "json",
		"--node-id", c.id, "--gossip-addr", c.gossip,
		"--gossip-key", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="} // 32 bytes
	for _, j := range c.join {
		args = append(args, "--join", j)
	}
	raw, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^TestClusterHelperProcess$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+string(raw))
	logf, err := os.OpenFile(filepath.Join(c.dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c.cmd, c.done = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(c.done)
	}()
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.kill()
	}
}

// leaderOf asks c for the servers; it returns the leader's address.
func (c *child) leader(ctx context.Context) (string, int) {
	res, err := c.cluster.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
	if err != nil {
		return "", 0
	}
	leader, voters := "", 0
	for _, s := range res.Msg.GetServers() {
		if s.GetIsLeader() {
			leader = s.GetRpcAddr()
		}
		if s.GetVoter() {
			voters++
		}
	}
	return leader, voters
}

// TestCluster_SIGKILL_leader_real_processes runs three `ldm serve`
// processes and, round after round (sigkillRounds), SIGKILLs the leader
// during concurrent writes and restarts it; then it checks that every
// acknowledged write is on every node, once, at its offset, the killed
// nodes included.
func TestCluster_SIGKILL_leader_real_processes(t *testing.T) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	base := t.TempDir()
	var nodes []*child
	for i := range 3 {
		c := &child{id: fmt.Sprint("n", i+1), addr: testutil.FixedAddr(t), gossip: testutil.FixedAddr(t), dir: filepath.Join(base, fmt.Sprint("n", i+1))}
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			c.join = []string{nodes[0].gossip}
		}
		url := "http://" + c.addr
		c.api = ldmv1connect.NewTileServiceClient(hc, url)
		c.cluster = ldmv1connect.NewClusterServiceClient(hc, url)
		c.volumes = ldmv1connect.NewVolumeServiceClient(hc, url)
		nodes = append(nodes, c)
	}
	t.Cleanup(func() {
		for _, c := range nodes {
			if c.cmd != nil && c.cmd.ProcessState == nil {
				c.kill()
			}
		}
		if t.Failed() {
			for _, c := range nodes {
				b, _ := os.ReadFile(filepath.Join(c.dir, "log"))
				t.Logf("log of %s:\n%s", c.id, lastLines(b, 20))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(60+30*sigkillRounds(t))*time.Second)
	defer cancel()
	nodes[0].start(t)
	testutil.WaitFor(t, 30*time.Second, "n1 to lead", func() bool { l, _ := nodes[0].leader(ctx); return l == nodes[0].addr })
	nodes[1].start(t)
	nodes[2].start(t)
	testutil.WaitFor(t, 30*time.Second, "three voters", func() bool {
		for _, c := range nodes {
			if l, v := c.leader(ctx); l == "" || v != 3 {
				return false
			}
		}
		return true
	})
	create := &ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{Name: "kill", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8}}
	if _, err := nodes[1].volumes.CreateVolume(ctx, connect.NewRequest(create)); err != nil {
		t.Fatal(err)
	}

	type ack struct {
		value  string
		offset uint64
	}
	var (
		mu    sync.Mutex
		acks  []ack
		nAcks atomic.Int64
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				for attempt := 0; ; attempt++ {
					if attempt == 200 || ctx.Err() != nil {
						t.Errorf("writer %d: write %d not acknowledged after %d attempts", w, seq, attempt)
						return
					}
					v := fmt.Sprintf("w%d-s%d-a%d", w, seq, attempt)
					wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
					res, err := nodes[(w+attempt)%3].api.WriteTile(wctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "kill", Tile: &ldmv1.Tile{Value: []byte(v)}}))
					wcancel()
					if err != nil {
						continue
					}
					mu.Lock()
					acks = append(acks, ack{v, res.Msg.GetOffset()})
					mu.Unlock()
					nAcks.Add(1)
					break
				}
			}
		})
	}
	// Each round SIGKILLs whichever process leads, waits for 30 more
	// acknowledged writes without it, restarts it and waits until every
	// node sees three voters and a leader again, so the next kill keeps a
	// quorum.
	rounds := sigkillRounds(t)
	var victim *child
	for round := range rounds {
		before := nAcks.Load()
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("round %d: 30 acknowledged writes", round), func() bool { return nAcks.Load() >= before+30 })
		leaderAddr, _ := nodes[0].leader(ctx)
		if leaderAddr == "" {
			leaderAddr, _ = nodes[1].leader(ctx)
		}
		victim = nil
		for _, c := range nodes {
			if c.addr == leaderAddr {
				victim = c
			}
		}
		if victim == nil {
			t.Fatalf("round %d: no leader among %s", round, leaderAddr)
		}
		before = nAcks.Load()
		victim.kill() // SIGKILL
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("round %d: 30 more acknowledged writes after SIGKILL of %s", round, victim.id), func() bool { return nAcks.Load() >= before+30 })
		var survivor *child
		for _, c := range nodes {
			if c != victim {
				survivor = c
				break
			}
		}
		if l, _ := survivor.leader(ctx); l == "" || l == victim.addr {
			t.Fatalf("round %d: leader after SIGKILL: %q (killed %s)", round, l, victim.addr)
		}
		victim.start(t)
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("round %d: %s back, three voters and a leader on every node", round, victim.id), func() bool {
			for _, c := range nodes {
				if l, v := c.leader(ctx); l == "" || v != 3 {
					return false
				}
			}
			return true
		})
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	survivor := nodes[0]
	if survivor == victim {
		survivor = nodes[1]
	}

	// A local GetVolume on a follower may lag the last acknowledged write,
	// so the log must reach past every acknowledged offset.
	var maxAck uint64
	for _, a := range acks {
		maxAck = max(maxAck, a.offset)
	}
	var want int
	testutil.WaitFor(t, 30*time.Second, "every node to serve the whole log", func() bool {
		res, err := survivor.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "kill"}))
		if err != nil || res.Msg.GetVolume().GetNextOffset() <= maxAck {
			return false
		}
		want = int(res.Msg.GetVolume().GetNextOffset())
		for _, c := range nodes {
			_, err := c.api.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "kill", Offset: uint64(want - 1), Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE}))
			if err != nil {
				return false
			}
		}
		return true
	})
	var ref [][]byte
	for _, c := range nodes {
		var log [][]byte
		for off := range want {
			res, err := c.api.ReadTile(ctx, connect.NewRequest(&ldmv1.ReadTileRequest{Volume: "kill", Offset: uint64(off)}))
			if err != nil {
				t.Fatalf("%s: read %d: %v", c.id, off, err)
			}
			log = append(log, res.Msg.GetTile().GetValue())
		}
		if ref == nil {
			ref = log
			continue
		}
		for i := range log {
			if !bytes.Equal(log[i], ref[i]) {
				t.Fatalf("offset %d differs between nodes: %q vs %q", i, log[i], ref[i])
			}
		}
	}
	seen := map[string]int{}
	for off, v := range ref {
		if prev, dup := seen[string(v)]; dup {
			t.Fatalf("value %q at offsets %d and %d", v, prev, off)
		}
		seen[string(v)] = off
	}
	for _, a := range acks {
		off, ok := seen[a.value]
		if !ok || uint64(off) != a.offset {
			t.Fatalf("acknowledged write %q at offset %d: found %v at %d", a.value, a.offset, ok, off)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes, %d tiles, last killed %s", rounds, len(acks), len(ref), victim.id)

	// The operator commands, against a follower. Gossip converges after
	// Raft does: the restarted node is a new gossip member (a new
	// incarnation) that rejoins from its snapshot, so wait until it sees
	// all three alive.
	server := "http://" + victim.addr
	var out, errOut string
	var err error
	testutil.WaitFor(t, 30*time.Second, "cluster members: three alive on the restarted node", func() bool {
		out, errOut, err = ldmCmd(t, "", "cluster", "members", "--server", server)
		return err == nil && strings.Contains(out, "n1") && strings.Contains(out, "n2") && strings.Contains(out, "n3") && strings.Count(out, "alive") == 3
	})
	out, errOut, err = ldmCmd(t, "", "cluster", "transfer-leader", victim.id, "--server", "http://"+survivor.addr)
	if err != nil || strings.TrimSpace(out) != "leader: "+victim.id {
		t.Fatalf("cluster transfer-leader %s: %v\n%s%s", victim.id, err, out, errOut)
	}
	out, errOut, err = ldmCmd(t, "", "cluster", "status", "--server", server)
	if err != nil || !strings.Contains(out, "leader:  "+victim.id) || !strings.Contains(out, "3 alive") {
		t.Fatalf("cluster status: %v\n%s%s", err, out, errOut)
	}
	for _, c := range nodes {
		c.stop()
	}
}

// sigkillRounds is the number of leader kills of
// TestCluster_SIGKILL_leader_real_processes: 3 by default,
// LDM_SIGKILL_ROUNDS for a longer run.
func sigkillRounds(t *testing.T) int {
	v := os.Getenv("LDM_SIGKILL_ROUNDS")
	if v == "" {
		return 3
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("LDM_SIGKILL_ROUNDS=%q: want a positive number", v)
	}
	return n
}

func lastLines(b []byte, n int) string {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// TestClusterFlags_need_node_id: cluster flags without --node-id are a
// usage mistake; a bad --bootstrap value or gossip key too.
func TestClusterFlags_need_node_id(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--join", "127.0.0.1:7946"},
		{"--raft-dir", t.TempDir()},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--bootstrap", "maybe"},
		{"--gossip-key", "BwcHBwcHBwcHBwcHBwcHBw=="},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--gossip-key", "c2hvcnQ="},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--gossip-key", "not base64!"},
		{"--cluster-key", "BwcHBwcHBwcHBwcHBwcHBw=="},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--cluster-key", "c2hvcnQ="},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--cluster-key", "not base64!"},
		{"--node-id", "n1", "--gossip-addr", "127.0.0.1:0", "--tokens", "/nonexistent/tokens"},
	} {
		full := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir()}, args...)
		_, errOut, err := ldmCmd(t, "", full...)
		if exitCode(err) != 2 {
			t.Errorf("ldm %s: %v (exit %d), want a usage error\n%s", strings.Join(args, " "), err, exitCode(err), errOut)
		}
	}
}
