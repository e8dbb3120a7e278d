package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/pki"
)

// DefaultHosts are the names a server certificate is issued for when the
// caller names none: a server listening on 127.0.0.1 is reachable as
// either.
var DefaultHosts = []string{"localhost", "127.0.0.1"}

// PKI is a certificate authority for tests. Its directory holds the CA's
// files (pki.CACertFile, pki.CAKeyFile) and the files WriteServerFiles
// writes; it is removed when the test ends. Certificates are issued by
// internal/pki, so they have the shape of those `ldm certs` makes: server
// certificates are valid for server and client authentication (node to
// node mutual TLS), client certificates carry the identity as common name.
//
// A PKI is safe for concurrent use.
type PKI struct {
	// CA is the certificate authority that signs every certificate.
	CA *pki.CA
	// Dir is the directory of the CA's files.
	Dir string
	// CAFile is the path of the CA certificate (PEM), for configurations
	// that name a client CA file.
	CAFile string

	files atomic.Int64 // numbers the pairs WriteServerFiles writes
}

// NewPKI makes a CA with default validity in a fresh tb.TempDir().
func NewPKI(tb testing.TB) *PKI {
	tb.Helper()
	dir := tb.TempDir()
	ca, err := pki.InitCA(dir, "go-ldm test CA", pki.Options{}, false)
	if err != nil {
		tb.Fatalf("testutil: make CA: %v", err)
	}
	return &PKI{CA: ca, Dir: dir, CAFile: filepath.Join(dir, pki.CACertFile)}
}

// Pool returns a new pool that holds the CA certificate only.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CA.Cert)
	return pool
}

// ServerCert issues a server certificate for hosts (host names or IP
// addresses; DefaultHosts if none), valid for server and client
// authentication. Its common name is the first host.
func (p *PKI) ServerCert(tb testing.TB, hosts ...string) tls.Certificate {
	tb.Helper()
	certPEM, keyPEM := p.serverPEM(tb, hosts)
	return keyPair(tb, certPEM, keyPEM)
}

// NodeCert issues the certificate of cluster node id: common name id,
// valid for 127.0.0.1, for server and client authentication, so the node
// presents it both on its port and when it dials its peers.
func (p *PKI) NodeCert(tb testing.TB, id string) tls.Certificate {
	tb.Helper()
	return p.ServerCert(tb, id, "127.0.0.1")
}

// ClientCert issues a client certificate whose common name is name (the
// identity a server sees) with the given URI SANs (for example
// spiffe://domain/workload). name must satisfy pki.ValidateName.
func (p *PKI) ClientCert(tb testing.TB, name string, uris ...string) tls.Certificate {
	tb.Helper()
	certPEM, keyPEM, err := p.CA.IssueClient(name, pki.Options{URIs: uris})
	if err != nil {
		tb.Fatalf("testutil: issue client certificate %q: %v", name, err)
	}
	return keyPair(tb, certPEM, keyPEM)
}

// ExpiredClientCert issues a client certificate for name, signed by the
// CA, that was valid from two hours ago until an hour ago.
func (p *PKI) ExpiredClientCert(tb testing.TB, name string) tls.Certificate {
	tb.Helper()
	o := pki.Options{NotBefore: time.Now().Add(-2 * time.Hour), ValidFor: time.Hour}
	certPEM, keyPEM, err := p.CA.IssueClient(name, o)
	if err != nil {
		tb.Fatalf("testutil: issue expired client certificate %q: %v", name, err)
	}
	return keyPair(tb, certPEM, keyPEM)
}

// Issue signs a certificate made from tmpl with the CA, for certificates
// internal/pki refuses to make on purpose (a reserved or malformed common
// name, for a test that the server rejects it). Zero fields get defaults:
// a random serial number, validity from an hour ago for two hours, and
// digital-signature key usage. tmpl is modified.
func (p *PKI) Issue(tb testing.TB, tmpl *x509.Certificate) tls.Certificate {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testutil: generate key: %v", err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			tb.Fatalf("testutil: serial: %v", err)
		}
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = tmpl.NotBefore.Add(2 * time.Hour)
	}
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CA.Cert, key.Public(), p.CA.Key)
	if err != nil {
		tb.Fatalf("testutil: sign %q: %v", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testutil: parse: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// WriteServerFiles issues a server certificate for hosts (DefaultHosts if
// none) and writes it and its key as PEM files into Dir, under names no
// other call uses, for configurations that read certificate files.
func (p *PKI) WriteServerFiles(tb testing.TB, hosts ...string) (certFile, keyFile string) {
	tb.Helper()
	certPEM, keyPEM := p.serverPEM(tb, hosts)
	name := fmt.Sprintf("server-%d", p.files.Add(1))
	certFile, keyFile, err := pki.WritePair(p.Dir, name, certPEM, keyPEM, false)
	if err != nil {
		tb.Fatalf("testutil: write %s: %v", name, err)
	}
	return certFile, keyFile
}

// ServerConfig is the TLS of a server that presents cert, offers HTTP/2
// and HTTP/1.1, and verifies a client certificate against the CA when the
// client gives one.
func (p *PKI) ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    p.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientConfig is the TLS of a client that trusts the CA and presents
// certs (none: no client certificate).
func (p *PKI) ClientConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: certs, RootCAs: p.Pool(), MinVersion: tls.VersionTLS12}
}

func (p *PKI) serverPEM(tb testing.TB, hosts []string) (certPEM, keyPEM []byte) {
	tb.Helper()
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	certPEM, keyPEM, err := p.CA.IssueServer(hosts, pki.Options{})
	if err != nil {
		tb.Fatalf("testutil: issue server certificate for %v: %v", hosts, err)
	}
	return certPEM, keyPEM
}

func keyPair(tb testing.TB, certPEM, keyPEM []byte) tls.Certificate {
	tb.Helper()
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		tb.Fatalf("testutil: load key pair: %v", err)
	}
	return c
}
