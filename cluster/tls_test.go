package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"maps"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
)

// testPKI is a CA that issues node certificates usable as server and
// client certificates for 127.0.0.1.
type testPKI struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	pool  *x509.CertPool
}

func newTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{ca: ca, caKey: key, pool: pool}
}

func (p *testPKI) issue(tb testing.TB, cn string) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// serverConfig is the main port's TLS: HTTP/2 and HTTP/1.1, client
// certificates verified when given.
func (p *testPKI) serverConfig(tb testing.TB, id string) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.issue(tb, id)},
		ClientCAs:    p.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}
}

// clientConfig is a node's TLS for dialing peers, with its certificate.
func (p *testPKI) clientConfig(tb testing.TB, id string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.issue(tb, id)}, RootCAs: p.pool, MinVersion: tls.VersionTLS12}
}

// TestNode_MutualTLS runs the cluster over TLS: Raft streams and forwarded
// writes arrive as ordinary requests whose verified client certificate is
// visible to the HTTP handler chain, and a peer without a certificate
// cannot open a Raft stream.
func TestNode_MutualTLS(t *testing.T) {
	c := newTestCluster(t)
	c.pki = newTestPKI(t)
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
	noCert := &tls.Config{RootCAs: c.pki.pool, MinVersion: tls.VersionTLS12}
	_, err := dialUpgrade(ctx, (&net.Dialer{}).DialContext, noCert, n1.addr, "")
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("raft upgrade without a client certificate: %v, want 403", err)
	}
	// A valid certificate that is not a member's (a user's) is refused too.
	stranger := &tls.Config{Certificates: []tls.Certificate{c.pki.issue(t, "mallory")}, RootCAs: c.pki.pool, MinVersion: tls.VersionTLS12}
	_, err = dialUpgrade(ctx, (&net.Dialer{}).DialContext, stranger, n1.addr, "")
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("raft upgrade with a non-member certificate: %v, want 403", err)
	}
}
