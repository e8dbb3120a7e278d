package cluster

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/storage"
)

// TestNode_MutualTLS runs the cluster over TLS: Raft streams and forwarded
// writes arrive as ordinary requests whose verified client certificate is
// visible to the HTTP handler chain, and a peer without a certificate
// cannot open a Raft stream.
func TestNode_MutualTLS(t *testing.T) {
	c := newTestCluster(t)
	c.pki = testutil.NewPKI(t)
	var mu sync.Mutex
	seen := map[string]map[string]bool{} // path -> client CNs
	c.observe = func(_ string, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, HandlerPrefix) {
			return
		}
		cn := "<none>"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		mu.Lock()
		if seen[r.URL.Path] == nil {
			seen[r.URL.Path] = map[string]bool{}
		}
		seen[r.URL.Path][cn] = true
		mu.Unlock()
	}
	n1, n2, n3 := startThree(t, c)
	mustCreate(t, n2.node, "vol")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, n := range []*testNode{n1, n2, n3} {
		mustAppend(t, n.node, "vol", storage.Tile{Value: []byte("over tls via " + n.id)})
	}
	for _, n := range c.running() {
		if err := n.node.ReadBarrier(ctx); err != nil {
			t.Fatalf("read barrier on %s: %v", n.id, err)
		}
	}
	sameLogs(t, c, "vol")

	mu.Lock()
	// Copies: the handlers go on adding to the maps.
	raftCNs, applyCNs := maps.Clone(seen[RaftPath]), maps.Clone(seen[pathApply])
	mu.Unlock()
	if len(raftCNs) == 0 || raftCNs["<none>"] {
		t.Fatalf("raft streams came from %v, want node certificates only", raftCNs)
	}
	if len(applyCNs) == 0 || applyCNs["<none>"] {
		t.Fatalf("forwarded writes came from %v, want node certificates", applyCNs)
	}

	// Without a client certificate the upgrade is refused.
	noCert := &tls.Config{RootCAs: c.pki.Pool(), MinVersion: tls.VersionTLS12}
	_, err := dialUpgrade(ctx, (&net.Dialer{}).DialContext, noCert, n1.addr, "")
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("raft upgrade without a client certificate: %v, want 403", err)
	}
	// A valid certificate that is not a member's (a user's) is refused too.
	stranger := &tls.Config{Certificates: []tls.Certificate{c.pki.NodeCert(t, "mallory")}, RootCAs: c.pki.Pool(), MinVersion: tls.VersionTLS12}
	_, err = dialUpgrade(ctx, (&net.Dialer{}).DialContext, stranger, n1.addr, "")
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("raft upgrade with a non-member certificate: %v, want 403", err)
	}
}
