package testutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

func TestWaitFor_Condition(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	go func() {
		for range 3 {
			n.Add(1)
		}
	}()
	testutil.WaitFor(t, 10*time.Second, "three increments", func() bool { return n.Load() == 3 })
}

func TestSyncBuffer_Write(t *testing.T) {
	t.Parallel()
	var b testutil.SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { fmt.Fprintf(&b, "line %d\n", i) })
	}
	wg.Wait()
	if got := strings.Count(b.String(), "\n"); got != 8 {
		t.Fatalf("%d lines, want 8: %q", got, b.String())
	}
	b.Reset()
	if b.String() != "" {
		t.Fatalf("after Reset: %q", b.String())
	}
}

// handshake runs a TLS handshake over loopback TCP and returns the
// server's view of the client certificate (or the first error).
func handshake(server, client *tls.Config) (peer *x509.Certificate, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer l.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		s := tls.Server(conn, server)
		err = s.Handshake()
		done <- result{s.ConnectionState(), err}
	}()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	cerr := tls.Client(conn, client).Handshake()
	r := <-done
	if err := errors.Join(cerr, r.err); err != nil {
		return nil, err
	}
	if len(r.st.PeerCertificates) > 0 {
		peer = r.st.PeerCertificates[0]
	}
	return peer, nil
}

func TestPKI_ServerConfig(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	srv := p.ServerConfig(p.ServerCert(t))
	t.Run("no_client_certificate", func(t *testing.T) {
		cfg := p.ClientConfig()
		cfg.ServerName = "localhost"
		peer, err := handshake(srv, cfg)
		if err != nil || peer != nil {
			t.Fatalf("peer %v, err %v", peer, err)
		}
	})
	t.Run("client_certificate", func(t *testing.T) {
		cfg := p.ClientConfig(p.ClientCert(t, "alice", "spiffe://ldm/ingest"))
		cfg.ServerName = "127.0.0.1"
		peer, err := handshake(srv, cfg)
		if err != nil || peer == nil || peer.Subject.CommonName != "alice" || len(peer.URIs) != 1 {
			t.Fatalf("peer %v, err %v", peer, err)
		}
	})
	t.Run("node_certificate", func(t *testing.T) {
		node := p.ServerConfig(p.NodeCert(t, "n1"))
		cfg := p.ClientConfig(p.NodeCert(t, "n2"))
		cfg.ServerName = "127.0.0.1"
		peer, err := handshake(node, cfg)
		if err != nil || peer == nil || peer.Subject.CommonName != "n2" {
			t.Fatalf("peer %v, err %v", peer, err)
		}
	})
	t.Run("expired_client_certificate", func(t *testing.T) {
		cfg := p.ClientConfig(p.ExpiredClientCert(t, "root"))
		cfg.ServerName = "localhost"
		if _, err := handshake(srv, cfg); err == nil {
			t.Fatal("handshake with an expired client certificate succeeded")
		}
	})
	t.Run("other_ca", func(t *testing.T) {
		cfg := testutil.NewPKI(t).ClientConfig()
		cfg.ServerName = "localhost"
		if _, err := handshake(srv, cfg); err == nil {
			t.Fatal("a client trusting another CA accepted the server")
		}
	})
}

func TestPKI_WriteServerFiles(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	c1, k1 := p.WriteServerFiles(t)
	c2, k2 := p.WriteServerFiles(t, "example.test")
	if c1 == c2 || k1 == k2 {
		t.Fatalf("two calls wrote the same files: %s %s", c1, c2)
	}
	for _, pair := range [][2]string{{c1, k1}, {c2, k2}} {
		if _, err := tls.LoadX509KeyPair(pair[0], pair[1]); err != nil {
			t.Fatal(err)
		}
	}
	if p.CAFile == "" {
		t.Fatal("no CA file")
	}
}

var _ io.Writer = (*testutil.SyncBuffer)(nil)

func TestPKI_Issue(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	c := p.Issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "a b"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	opts := x509.VerifyOptions{Roots: p.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := c.Leaf.Verify(opts); err != nil || c.Leaf.Subject.CommonName != "a b" {
		t.Fatalf("CN %q: %v", c.Leaf.Subject.CommonName, err)
	}
}
