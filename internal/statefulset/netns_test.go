package statefulset

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// subnet is the pods' network; every namespace of a run is private to it,
// so parallel runs do not collide.
const (
	subnet    = "10.77.0."
	bridgeIP  = subnet + "254" // the test's own address: client and DNS
	dnsName   = "ldm-headless.test"
	netnsRoot = "/var/run/netns"
)

// requireNetAdmin fails the test unless it may create network namespaces.
func requireNetAdmin(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces with ip netns; run it as root: sudo go test -run TestStatefulSet ./internal/statefulset/")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("this test needs the ip command (iproute2): apt-get install iproute2: %v", err)
	}
}

// network is a bridge in a namespace of its own with one namespace per
// host attached to it by a veth pair.
type network struct {
	prefix string // unique per run
	bridge string // the bridge's namespace; the test's sockets live there
	hosts  []string
	// resolve maps a host name to an address for the test's own dials
	// (the test process does not use the hosts' resolv.conf).
	resolve func(host string) (string, bool)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetwork creates the namespaces of n hosts (host i has address
// subnet+(10+i)) and their resolv.conf, which `ip netns exec` mounts over
// /etc/resolv.conf, pointing at the test's DNS server. Everything is
// removed when the test ends.
func newNetwork(t *testing.T, n int) *network {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	nw := &network{prefix: "ldmss-" + hex.EncodeToString(b[:])}
	nw.bridge = nw.prefix + "-br"
	t.Cleanup(func() {
		for _, ns := range append([]string{nw.bridge}, nw.hosts...) {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Logf("ip netns del %s: %v: %s", ns, err, out)
			}
			os.RemoveAll(filepath.Join("/etc/netns", ns))
		}
	})
	ipCmd(t, "netns", "add", nw.bridge)
	ipCmd(t, "-n", nw.bridge, "link", "set", "lo", "up")
	ipCmd(t, "-n", nw.bridge, "link", "add", "br0", "type", "bridge")
	ipCmd(t, "-n", nw.bridge, "addr", "add", bridgeIP+"/24", "dev", "br0")
	ipCmd(t, "-n", nw.bridge, "link", "set", "br0", "up")
	for i := range n {
		ns := fmt.Sprintf("%s-%d", nw.prefix, i)
		nw.hosts = append(nw.hosts, ns)
		ipCmd(t, "netns", "add", ns)
		veth := fmt.Sprintf("v%d", i)
		ipCmd(t, "-n", nw.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ipCmd(t, "-n", nw.bridge, "link", "set", veth, "master", "br0")
		ipCmd(t, "-n", nw.bridge, "link", "set", veth, "up")
		ipCmd(t, "-n", ns, "link", "set", "lo", "up")
		ipCmd(t, "-n", ns, "addr", "add", hostIP(i)+"/24", "dev", "eth0")
		ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
		dir := filepath.Join("/etc/netns", ns)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		conf := "nameserver " + bridgeIP + "\noptions timeout:1 attempts:2\n"
		if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nw
}

func hostIP(i int) string { return fmt.Sprintf("%s%d", subnet, 10+i) }

// readdress moves host i from address old to new, as a pod created again
// gets a new IP.
func (nw *network) readdress(t *testing.T, i int, old, new string) {
	t.Helper()
	ipCmd(t, "-n", nw.hosts[i], "addr", "del", old+"/24", "dev", "eth0")
	ipCmd(t, "-n", nw.hosts[i], "addr", "add", new+"/24", "dev", "eth0")
}

// inNetns runs f on an OS thread that entered the namespace ns. Sockets
// created by f stay in ns and may be used from any goroutine afterwards.
// The thread is never unlocked, so it ends with its goroutine instead of
// going back to the pool in the wrong namespace.
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join(netnsRoot, ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// dial opens TCP connections from the bridge's namespace.
func (nw *network) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && net.ParseIP(host) == nil && nw.resolve != nil {
		ip, ok := nw.resolve(host)
		if !ok {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		addr = net.JoinHostPort(ip, port)
	}
	var c net.Conn
	err := inNetns(nw.bridge, func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// dnsServer answers A queries for dnsName with the addresses of the pods
// that exist, ready or not, like a headless service with
// publishNotReadyAddresses, and for each pod's own name (pod.dnsName)
// with its address; AAAA for those names with no records; other names
// with NXDOMAIN.
type dnsServer struct {
	conn  net.PacketConn
	mu    sync.Mutex
	names map[string]string // pod name -> address, for every pod that exists
}

func startDNS(t *testing.T, nw *network) *dnsServer {
	t.Helper()
	d := &dnsServer{names: map[string]string{}}
	if err := inNetns(nw.bridge, func() error {
		var err error
		d.conn, err = net.ListenPacket("udp4", net.JoinHostPort(bridgeIP, "53"))
		return err
	}); err != nil {
		t.Fatalf("DNS server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.serve()
	}()
	t.Cleanup(func() {
		d.conn.Close()
		<-done
	})
	return d
}

// publish records that a pod named name exists at ip; withdraw that it
// was deleted.
func (d *dnsServer) publish(name, ip string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.names[name] = ip
}

func (d *dnsServer) withdraw(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.names, name)
}

// lookup returns the addresses of name.
func (d *dnsServer) lookup(name string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == dnsName {
		var out []string
		for _, ip := range d.names {
			out = append(out, ip)
		}
		return out
	}
	if ip, ok := d.names[name]; ok {
		return []string{ip}
	}
	return nil
}

// known reports whether name is the service or a pod.
func (d *dnsServer) known(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	_, ok := d.names[name]
	return ok || name == dnsName
}

func (d *dnsServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := d.answer(buf[:n]); resp != nil {
			_, _ = d.conn.WriteTo(resp, from)
		}
	}
}

func (d *dnsServer) answer(req []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	known := d.known(q.Name.String())
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil
	}
	if known && q.Type == dnsmessage.TypeA {
		for _, ip := range d.lookup(q.Name.String()) {
			var a [4]byte
			copy(a[:], net.ParseIP(ip).To4())
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}, dnsmessage.AResource{A: a}); err != nil {
				return nil
			}
		}
	}
	msg, err := b.Finish()
	if err != nil {
		return nil
	}
	return msg
}
