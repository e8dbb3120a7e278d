package auth_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/service/auth"
)

// handshakeSerial makes a new TLS connection to addr and returns the
// serial number of the certificate the server presents.
func handshakeSerial(tb testing.TB, addr string, cfg *tls.Config) *big.Int {
	tb.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// replaceFile puts the content of src at dst by an atomic rename.
func replaceFile(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := auth.WriteFileAtomic(dst, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// serialOf returns the serial number of the certificate in a PEM file.
func serialOf(tb testing.TB, certFile, keyFile string) *big.Int {
	tb.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		tb.Fatal(err)
	}
	return pair.Leaf.SerialNumber
}

// TestServerTLS_ReloadsCertificate rotates the certificate files of a
// running server: a new handshake presents the new certificate, without a
// restart. Then a broken pair replaces it: the server logs a warning and
// keeps presenting the last good certificate.
func TestServerTLS_ReloadsCertificate(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	certFile, keyFile := p.WriteServerFiles(t)
	newCert, newKey := p.WriteServerFiles(t)
	oldSerial, newSerial := serialOf(t, certFile, keyFile), serialOf(t, newCert, newKey)
	logs := &testutil.SyncBuffer{}
	s, err := server.New(context.Background(), server.Config{
		Listener: testutil.Listen(t), DataDir: t.TempDir(),
		TLS:    server.TLSConfig{CertFile: certFile, KeyFile: keyFile, ReloadInterval: time.Millisecond},
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	addr := s.Addr().String()
	client := p.ClientConfig()
	if got := handshakeSerial(t, addr, client); got.Cmp(oldSerial) != 0 {
		t.Fatalf("first handshake presents serial %v, want %v", got, oldSerial)
	}

	// Rotate: certificate first, then key, as a renewal tool might; a
	// handshake in between sees a mismatched pair and keeps the old one.
	replaceFile(t, newCert, certFile)
	replaceFile(t, newKey, keyFile)
	testutil.WaitFor(t, 10*time.Second, "a handshake with the new certificate", func() bool {
		return handshakeSerial(t, addr, client).Cmp(newSerial) == 0
	})
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Fatalf("no reload logged:\n%s", logs.String())
	}

	// A broken pair: the last good certificate stays.
	if err := os.WriteFile(keyFile, []byte("-----BEGIN EC PRIVATE KEY-----\nbroken\n-----END EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a warning about the broken pair", func() bool {
		if got := handshakeSerial(t, addr, client); got.Cmp(newSerial) != 0 {
			t.Fatalf("handshake with a broken pair on disk presents serial %v, want %v", got, newSerial)
		}
		return strings.Contains(logs.String(), "keeping the previous certificate")
	})
	if got := handshakeSerial(t, addr, client); got.Cmp(newSerial) != 0 {
		t.Fatalf("after the broken pair: serial %v, want %v", got, newSerial)
	}
}

// TestServerTLS_NoReload keeps the first certificate when reloading is
// off (a negative interval).
func TestServerTLS_NoReload(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	certFile, keyFile := p.WriteServerFiles(t)
	newCert, newKey := p.WriteServerFiles(t)
	cfg, err := auth.ServerTLS{CertFile: certFile, KeyFile: keyFile, ReloadInterval: -1}.Config()
	if err != nil {
		t.Fatal(err)
	}
	first, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	replaceFile(t, newCert, certFile)
	replaceFile(t, newKey, keyFile)
	again, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || again != first {
		t.Fatalf("certificate changed with reloading off: %v", err)
	}
}
