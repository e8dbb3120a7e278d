package statefulset

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// killNewAddress SIGKILLs a pod (no preStop hook, no SIGTERM: a crash, an
// eviction, an OOM kill, a lost node) and creates it again with a new
// address under the same name, first the leader, then a follower. Within
// readyTimeout of its start every other pod must have logged it alive in
// gossip at its new address and every pod must list every pod as an alive
// voter of one cluster, and no pod may log a gossip name conflict.
func (s *sts) killNewAddress(t *testing.T) {
	for round := range 2 {
		var p *pod
		leader := s.leader()
		for _, q := range s.pods {
			if (round == 0) == (q.id == leader) {
				p = q
				break
			}
		}
		if p == nil {
			t.Fatalf("round %d: no pod to kill (leader %q)", round, leader)
		}
		p.kill()
		s.dns.withdraw(p.dnsName()) // the pod is deleted
		old := p.ip
		p.ip = hostIP(p.i + 20*(1+s.restarts[p.i]))
		s.restarts[p.i]++
		s.nw.readdress(t, p.i, old, p.ip)
		s.dns.publish(p.dnsName(), p.ip) // and created again
		start := time.Now()
		if err := p.start(s.bin); err != nil {
			t.Fatal(err)
		}
		gossip := net.JoinHostPort(p.ip, gossipPort)
		var scans []*logScan
		for _, q := range s.pods {
			if q != p {
				scans = append(scans, newLogScan(q.logPath, `"msg":"member event"`, `"id":"`+p.id+`"`, `"gossip_addr":"`+gossip+`"`, `"status":"alive"`))
			}
		}
		s.waitLogging(t, fmt.Sprintf("round %d: every pod to see %s (killed, leader: %t) alive at %s, one cluster", round, p.id, round == 0, gossip), func() bool {
			for _, ls := range scans {
				if !ls.seen() {
					return false
				}
			}
			ok, _ := s.oneCluster()
			return ok && s.allAlive()
		})
		t.Logf("%s (leader: %t) killed, back at %s (was %s), alive in every pod's gossip in %v", p.id, round == 0, p.ip, old, time.Since(start).Round(time.Millisecond))
		for _, q := range s.pods {
			if c := q.count("ame conflict"); c > 0 {
				t.Errorf("%s logged %d gossip name conflicts; log:\n%s", q.id, c, tail(q.logPath, 30))
			}
		}
	}
}

// logScan finds a line holding every one of want in a growing log, reading
// each byte once.
type logScan struct {
	path  string
	want  [][]byte
	off   int64
	rest  []byte // an unfinished last line
	found bool
}

func newLogScan(path string, want ...string) *logScan {
	ls := &logScan{path: path}
	for _, w := range want {
		ls.want = append(ls.want, []byte(w))
	}
	return ls
}

// seen reads what was appended to the log since the last call and
// reports whether a matching line was found.
func (ls *logScan) seen() bool {
	if ls.found {
		return true
	}
	f, err := os.Open(ls.path)
	if err != nil {
		return false
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, ls.off, 1<<40))
	if err != nil {
		return false
	}
	ls.off += int64(len(b))
	b = append(ls.rest, b...)
	end := bytes.LastIndexByte(b, '\n')
	ls.rest = append([]byte(nil), b[end+1:]...)
	for line := range bytes.SplitSeq(b[:end+1], []byte("\n")) {
		all := true
		for _, w := range ls.want {
			if !bytes.Contains(line, w) {
				all = false
				break
			}
		}
		if all {
			ls.found = true
			return true
		}
	}
	return false
}
