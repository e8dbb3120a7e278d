package auth

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

// TestNodePeer_NodeCertificatesOnly checks that only node certificates reach node-to-node
// endpoints under TLS.
func TestNodePeer_NodeCertificatesOnly(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := NodePeer(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
		}
	}))
	certFile, keyFile := p.WriteServerFiles(t)
	cfg, err := ServerTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: p.CAFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	// httptest serves its own certificate when Certificates is empty,
	// which it is: the server certificate comes from GetCertificate.
	cert, _ := cfg.GetCertificate(nil)
	cfg.Certificates = []tls.Certificate{*cert}
	srv.TLS = cfg
	srv.StartTLS()
	defer srv.Close()

	node := p.NodeCert(t, "node-2")
	user := p.ClientCert(t, "alice")
	for _, tt := range []struct {
		name string
		cert *tls.Certificate
		want int
	}{
		{"node_certificate", &node, http.StatusOK},
		{"user_client_certificate", &user, http.StatusForbidden},
		{"no_certificate", nil, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &tls.Config{RootCAs: p.Pool()}
			if tt.cert != nil {
				c.Certificates = []tls.Certificate{*tt.cert}
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
			defer hc.CloseIdleConnections()
			resp, err := hc.Post(srv.URL, "application/octet-stream", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if err := NodePeer(httptest.NewRequest(http.MethodPost, "/", nil)); err != nil {
		t.Fatalf("plaintext request: %v", err)
	}
}
