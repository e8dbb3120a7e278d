package testutil

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FixedAddr returns a 127.0.0.1 address (host:port) that is free now, for a
// server that must be told its address before it starts (a cluster node
// whose peers join it, a process restarted on the same address). The port
// lies below the kernel's ephemeral range, so listeners on port 0 elsewhere
// in the test run cannot take it between this call and its use, the race a
// port from net.Listen(":0") followed by Close has. TCP and UDP are both
// checked, since gossip uses both.
func FixedAddr(tb testing.TB) string {
	tb.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				low = n
			}
		}
	}
	for range 200 {
		port := 10000 + rand.IntN(low-10000)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		return addr
	}
	tb.Fatal(fmt.Errorf("testutil: no free port below %d after 200 tries", low))
	return ""
}
