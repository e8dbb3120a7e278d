package auth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// ErrNotNode: a request to a node-to-node endpoint without a node
// certificate.
var ErrNotNode = errors.New("a node certificate is required")

// NodePeer authorizes requests to the node-to-node endpoints of a cluster
// (Raft, forwarded writes), for cluster.Config.Authorize. Under TLS the
// peer must present a verified certificate that is valid for server
// authentication: a node certificate (`ldm certs issue --server`), which
// carries both the server and client usages. A user's client certificate
// from the same CA carries only the client usage and is refused, so it
// cannot speak Raft or apply commands around the authorization of the
// ldm.v1 API. Without TLS every request passes: a plaintext server is
// confined to loopback unless started with --insecure.
func NodePeer(r *http.Request) error {
	if r.TLS == nil {
		return nil
	}
	if len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return fmt.Errorf("%w: no verified client certificate", ErrNotNode)
	}
	leaf := r.TLS.VerifiedChains[0][0]
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return fmt.Errorf("%w: the certificate of %q is not valid for server authentication", ErrNotNode, leaf.Subject.CommonName)
	}
	return nil
}
