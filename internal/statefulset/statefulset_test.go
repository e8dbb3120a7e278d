package statefulset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/internal/testutil"
)

const (
	pods       = 3
	apiPort    = "8080"
	gossipPort = "7946"
	// gossipKey is a 32-byte gossip key, the same on every pod.
	gossipKey = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="
	// formTimeout bounds one parallel start until a 3-voter leader.
	formTimeout = 30 * time.Second
	// stopTimeout bounds a pod's graceful shutdown after SIGTERM.
	stopTimeout = 30 * time.Second
	// maxGapElections is how many election timeouts writes may be
	// unavailable for during a rolling restart.
	maxGapElections = 2
)

// electionTimeout is the Raft election timeout of `ldm serve`, which has
// no flag for it: hashicorp/raft's default.
var electionTimeout = raft.DefaultConfig().ElectionTimeout

// buildLDM builds the ldm binary once, statically as the container image
// does.
func buildLDM(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ldm")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/xcheng85/go-ldm/cmd/ldm")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ldm: %v\n%s", err, out)
	}
	return bin
}

// pod is one `ldm serve` process in its host namespace.
type pod struct {
	i       int
	id, ip  string
	ns      string
	dataDir string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error // of the process, once done is closed
}

func (p *pod) url() string { return "http://" + net.JoinHostPort(p.ip, apiPort) }

// dnsName is the pod's own name under the headless service, which it
// advertises (as the manifests advertise a name per pod): its address
// changes when the pod is created again, its name does not.
func (p *pod) dnsName() string { return p.id + "." + dnsName }

// start runs `ldm serve` in the pod's namespace, appending to its log.
func (p *pod) start(bin string) error {
	args := []string{"netns", "exec", p.ns, bin, "serve",
		"--addr", net.JoinHostPort(p.ip, apiPort), "--advertise", net.JoinHostPort(p.dnsName(), apiPort), "--insecure",
		"--data", p.dataDir, "--log-format", "json", "--log-level", "info",
		"--node-id", p.id, "--gossip-addr", net.JoinHostPort(p.ip, gossipPort), "--gossip-key", gossipKey,
		"--join", dnsName, "--bootstrap-expect", strconv.Itoa(pods)}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...) // ip netns exec execs ldm: the pid is ldm's
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: it follows the thread that forked, and inNetns ends
	// threads; t.Cleanup kills the pods instead.
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", p.id, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return nil
}

func (p *pod) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the process to exit; it fails the test
// if the exit is not clean or takes longer than stopTimeout.
func (p *pod) stop(t *testing.T) {
	t.Helper()
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not stop within %v of SIGTERM; log:\n%s", p.id, stopTimeout, tail(p.logPath, 30))
	}
	if p.err != nil {
		t.Fatalf("%s exited with %v after SIGTERM; log:\n%s", p.id, p.err, tail(p.logPath, 30))
	}
}

// kill ends the process without waiting for anything but its exit.
func (p *pod) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last n lines of a log, without the per-call RPC lines.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	var lines []string
	for l := range strings.SplitSeq(strings.TrimRight(string(b), "\n"), "\n") {
		if !strings.Contains(l, `"msg":"rpc"`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// count returns how many lines of the pod's log contain s.
func (p *pod) count(s string) int {
	b, _ := os.ReadFile(p.logPath)
	return bytes.Count(b, []byte(s))
}

// sts is the StatefulSet: its network, DNS, pods and the test's clients.
type sts struct {
	t    *testing.T
	bin  string
	nw   *network
	dns  *dnsServer
	all  []*pod // every pod the test may run
	pods []*pod // the StatefulSet's replicas: all[:replicas]
	hc   *http.Client
	// restarts counts the restarts of each pod, which get a new address
	// each time.
	restarts []int
}

func newSTS(t *testing.T) *sts {
	requireNetAdmin(t)
	s := &sts{t: t, bin: buildLDM(t), nw: newNetwork(t, pods+1)}
	s.dns = startDNS(t, s.nw)
	s.nw.resolve = func(host string) (string, bool) {
		ips := s.dns.lookup(host)
		if len(ips) == 0 {
			return "", false
		}
		return ips[0], true
	}
	tr := client.NewTransport(nil)
	tr.Proxy = nil
	tr.DialContext = s.nw.dial
	s.hc = &http.Client{Transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	for i := range pods + 1 {
		s.all = append(s.all, &pod{i: i, id: fmt.Sprintf("ldm-%d", i), ip: hostIP(i), ns: s.nw.hosts[i]})
	}
	s.pods = s.all[:pods]
	s.restarts = make([]int, len(s.all))
	t.Cleanup(func() {
		for _, p := range s.all {
			p.kill()
		}
	})
	return s
}

// reset gives every pod an empty volume (a new StatefulSet).
func (s *sts) reset(round int) {
	dir := filepath.Join(s.t.TempDir(), fmt.Sprintf("round%d", round))
	for _, p := range s.all {
		p.dataDir = filepath.Join(dir, p.id, "data")
		p.logPath = filepath.Join(dir, p.id+".log")
		if err := os.MkdirAll(filepath.Dir(p.dataDir), 0o755); err != nil {
			s.t.Fatal(err)
		}
	}
}

// startAll publishes every pod in DNS and starts them all at the same
// moment.
func (s *sts) startAll() {
	for _, p := range s.pods {
		s.dns.publish(p.dnsName(), p.ip)
	}
	var wg sync.WaitGroup
	gate := make(chan struct{})
	errs := make([]error, len(s.pods))
	for i, p := range s.pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			errs[i] = p.start(s.bin)
		}()
	}
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sts) clusterClient(p *pod) ldmv1connect.ClusterServiceClient {
	return ldmv1connect.NewClusterServiceClient(s.hc, p.url())
}

// view is what one pod reports: its leader and voters.
type view struct {
	leader string
	voters []string
}

func (s *sts) view(p *pod) (view, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := s.clusterClient(p).GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
	if err != nil {
		return view{}, err
	}
	var v view
	for _, srv := range res.Msg.GetServers() {
		if srv.GetVoter() {
			v.voters = append(v.voters, srv.GetId())
		}
		if srv.GetIsLeader() {
			v.leader = srv.GetId()
		}
	}
	slices.Sort(v.voters)
	return v, nil
}

// oneCluster reports whether every running pod names the same leader and
// holds all pods as voters, and what they report.
func (s *sts) oneCluster() (bool, string) {
	want := make([]string, 0, len(s.pods))
	for _, p := range s.pods {
		want = append(want, p.id)
	}
	var b strings.Builder
	ok, leader := true, ""
	for _, p := range s.pods {
		v, err := s.view(p)
		fmt.Fprintf(&b, "%s: leader %q voters %v err %v; ", p.id, v.leader, v.voters, err)
		if err != nil || v.leader == "" || (leader != "" && v.leader != leader) || !slices.Equal(v.voters, want) {
			ok = false
			continue
		}
		leader = v.leader
	}
	return ok, b.String()
}

// waitOneCluster waits until oneCluster holds and returns how long it
// took since start.
func (s *sts) waitOneCluster(start time.Time, what string) time.Duration {
	s.t.Helper()
	last, formed := "", false
	defer func() {
		if !formed {
			s.t.Logf("last seen: %s", last)
			for _, p := range s.pods {
				state := "running"
				if !p.running() {
					state = fmt.Sprintf("exited: %v", p.err)
				}
				s.t.Logf("%s (%s) log:\n%s", p.id, state, tail(p.logPath, 15))
			}
		}
	}()
	var took time.Duration
	testutil.WaitFor(s.t, formTimeout, what, func() bool {
		ok, desc := s.oneCluster()
		last = desc
		if ok {
			took = time.Since(start)
		}
		return ok
	})
	formed = true
	return took
}

func rounds(t *testing.T) int {
	n := 5
	if v := os.Getenv("LDM_STATEFULSET_ROUNDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("LDM_STATEFULSET_ROUNDS=%q: want a positive number", v)
		}
	}
	return n
}

// TestStatefulSet: pods started at the same moment with --bootstrap-expect
// 3 and a headless service's DNS name form exactly one cluster every round;
// then a rolling restart under a steady write load keeps every
// acknowledged write and never leaves writes unavailable for longer than
// maxGapElections election timeouts, also when each pod first runs the
// preStop hook (ldm cluster leave); then pods killed without leaving come
// back with new addresses and every pod sees them alive in gossip; then a
// fourth replica joins through
// DNS as a voter, and `ldm cluster leave` (the preStop hook), run on it
// while it leads, takes it out again.
func TestStatefulSet(t *testing.T) {
	s := newSTS(t)
	n := rounds(t)
	var formed []time.Duration
	for round := range n {
		s.reset(round)
		start := time.Now()
		s.startAll()
		took := s.waitOneCluster(start, fmt.Sprintf("round %d: one cluster of %d voters that every pod agrees on", round, pods))
		formed = append(formed, took)
		boots := 0
		for _, p := range s.pods {
			boots += p.count(`"msg":"bootstrapped a new cluster"`)
		}
		if boots != 1 {
			t.Fatalf("round %d: %d nodes bootstrapped a cluster, want exactly 1", round, boots)
		}
		if round == n-1 {
			break
		}
		for _, p := range s.pods {
			p.stop(t)
		}
	}
	slices.Sort(formed)
	t.Logf("parallel start to a %d-voter leader over %d rounds: min %v, median %v, max %v (GOMAXPROCS %d)",
		pods, n, formed[0].Round(time.Millisecond), formed[len(formed)/2].Round(time.Millisecond), formed[len(formed)-1].Round(time.Millisecond), runtime.GOMAXPROCS(0))

	t.Run("rolling_restart_prestop_leave", func(t *testing.T) { s.rollingRestart(t, true) })
	t.Run("rolling_restart", func(t *testing.T) { s.rollingRestart(t, false) })
	t.Run("kill_new_address", func(t *testing.T) { s.killNewAddress(t) })
	t.Run("scale_up_and_down", func(t *testing.T) { s.scale(t) })
}
