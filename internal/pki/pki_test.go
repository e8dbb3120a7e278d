package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestPKI_IssueAndVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := InitCA(dir, "", Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Fatal("LoadCA returned another certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)

	certPEM, keyPEM, err := loaded.IssueServer([]string{"localhost", "127.0.0.1", "::1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "example.com"}); err == nil {
		t.Error("server certificate verifies for a host it does not name")
	}
	// Nodes present their server certificates to each other.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("server certificate for client authentication: %v", err)
	}
	if !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || leaf.DNSNames[0] != "localhost" {
		t.Errorf("SANs = %v %v", leaf.DNSNames, leaf.IPAddresses)
	}

	certPEM, keyPEM, err = loaded.IssueClient("alice", Options{URIs: []string{"spiffe://ldm/alice"}})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Leaf.Subject.CommonName != "alice" || len(cp.Leaf.URIs) != 1 || cp.Leaf.URIs[0].String() != "spiffe://ldm/alice" {
		t.Fatalf("client certificate names %q %v", cp.Leaf.Subject.CommonName, cp.Leaf.URIs)
	}
	if _, err := cp.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate: %v", err)
	}
	if _, err := cp.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "alice"}); err == nil {
		t.Fatal("a client certificate verifies as a server certificate")
	}
}

func TestPKI_ValidityAndErrors(t *testing.T) {
	t.Parallel()
	ca, _, err := NewCA("test", Options{ValidFor: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// A certificate never outlives its CA.
	certPEM, keyPEM, err := ca.IssueClient("bob", Options{ValidFor: 365 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := tls.X509KeyPair(certPEM, keyPEM)
	if pair.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Fatalf("certificate ends %v after its CA %v", pair.Leaf.NotAfter, ca.Cert.NotAfter)
	}
	// An expired certificate does not verify.
	certPEM, keyPEM, err = ca.IssueClient("old", Options{NotBefore: time.Now().Add(-3 * time.Hour), ValidFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pair, _ = tls.X509KeyPair(certPEM, keyPEM)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("an expired certificate verifies")
	}
	for _, name := range []string{"", "anonymous", "ca", "a b", "role:admin", "../x"} {
		if _, _, err := ca.IssueClient(name, Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("client name %q: %v, want ErrInvalid", name, err)
		}
	}
	for _, hosts := range [][]string{nil, {"a/b"}, {"host:1"}} {
		if _, _, err := ca.IssueServer(hosts, Options{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("hosts %q: %v, want ErrInvalid", hosts, err)
		}
	}
	if _, _, err := ca.IssueClient("u", Options{URIs: []string{"no-scheme"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("URI without scheme: %v", err)
	}
}

func TestPKI_WriteFileNeverOverwritesWithoutForce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := InitCA(dir, "", Options{}, false); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, CAKeyFile)
	before, _ := os.ReadFile(key)
	if _, err := InitCA(dir, "", Options{}, false); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA: %v, want ErrExists", err)
	}
	if err := WriteFile(key, []byte("x"), 0o600, false); !errors.Is(err, ErrExists) {
		t.Fatalf("WriteFile over a key: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(key)
	if string(before) != string(after) {
		t.Fatal("the key changed")
	}
	if _, err := InitCA(dir, "", Options{}, true); err != nil {
		t.Fatalf("InitCA --force: %v", err)
	}
	forced, _ := os.ReadFile(key)
	if string(forced) == string(before) {
		t.Fatal("--force kept the old key")
	}
	fi, _ := os.Stat(key)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != CACertFile && e.Name() != CAKeyFile {
			t.Errorf("stray file %s", e.Name())
		}
	}
	if _, err := LoadCA(t.TempDir()); err == nil {
		t.Fatal("LoadCA of an empty directory succeeded")
	}
}

// TestPKI_LoadCARefusesAnotherKey checks that a CA whose key belongs to
// another certificate does not load: it would sign certificates that no
// client or server verifies.
func TestPKI_LoadCARefusesAnotherKey(t *testing.T) {
	t.Parallel()
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		if _, err := InitCA(dir, "", Options{}, false); err != nil {
			t.Fatal(err)
		}
	}
	other, err := os.ReadFile(filepath.Join(b, CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(a, CAKeyFile), other, 0o600, true); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(a); !errors.Is(err, ErrInvalid) {
		t.Fatalf("LoadCA with another CA's key: %v, want ErrInvalid", err)
	}
	if _, err := LoadCA(b); err != nil {
		t.Fatal(err)
	}
}

// TestPKI_ServerCommonNameTrimmed checks that the common name of a server
// certificate is its first host without the spaces a comma-separated
// --server list leaves around it, like its DNS names.
func TestPKI_ServerCommonNameTrimmed(t *testing.T) {
	t.Parallel()
	ca, _, err := NewCA("", Options{})
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.IssueServer([]string{" node-1 ", " 127.0.0.1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "node-1" || len(c.DNSNames) != 1 || c.DNSNames[0] != "node-1" {
		t.Fatalf("common name %q, DNS names %q", c.Subject.CommonName, c.DNSNames)
	}
}
