package statefulset

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ldm runs the ldm binary in p's namespace, as a command in the pod's
// container does, and returns its output and exit code.
func (s *sts) ldm(t *testing.T, p *pod, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.ns, s.bin}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	t.Fatalf("ldm %s: %v", strings.Join(args, " "), err)
	return "", 0
}

// scale adds a fourth replica (a new pod: empty volume, found through
// DNS), then removes it the way the StatefulSet's preStop hook does, with
// `ldm cluster leave` while it leads, and stops it.
func (s *sts) scale(t *testing.T) {
	p := s.all[len(s.all)-1]
	s.pods = s.all
	s.dns.publish(p.dnsName(), p.ip)
	if err := p.start(s.bin); err != nil {
		t.Fatal(err)
	}
	s.waitOneCluster(time.Now(), "the new replica "+p.id+" to be a voter every pod agrees on")

	// It leads, so leaving must hand leadership away first.
	if out, code := s.ldm(t, p, "cluster", "transfer-leader", p.id, "--server", p.url()); code != 0 || !strings.Contains(out, "leader: "+p.id) {
		t.Fatalf("transfer-leader %s: exit %d: %s", p.id, code, out)
	}
	if out, code := s.ldm(t, p, "cluster", "leave", "--server", p.url()); code != 0 || !strings.Contains(out, p.id+" left the cluster") {
		t.Fatalf("ldm cluster leave on %s: exit %d: %s", p.id, code, out)
	}
	s.pods = s.all[:len(s.all)-1]
	// Removed at once, not when the process stops.
	s.waitOneCluster(time.Now(), p.id+" out of the configuration of every other pod")
	if out, code := s.ldm(t, p, "cluster", "leave", "--server", p.url()); code != 0 {
		t.Fatalf("ldm cluster leave again on %s: exit %d: %s", p.id, code, out)
	}
	p.stop(t)
	s.dns.withdraw(p.dnsName())
	s.waitOneCluster(time.Now(), "the remaining replicas after "+p.id+" stopped")
	for _, q := range s.pods {
		if v, err := s.view(q); err != nil || v.leader == p.id {
			t.Fatalf("%s after %s left: leader %q, %v", q.id, p.id, v.leader, err)
		}
	}
}
