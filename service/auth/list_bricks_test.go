package auth

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

// TestAuth_ListBricks checks that listing a volume's bricks is a read: a
// reader may, a stranger may not, and no credentials is Unauthenticated.
func TestAuth_ListBricks(t *testing.T) {
	t.Parallel()
	ts := startServer(t, serverOptions{})
	stranger := ts.pki.ClientCert(t, "stranger")
	for _, tc := range []struct {
		name string
		cr   cred
		want connect.Code
	}{
		{"reader_token", cred{name: "reader", creds: Credentials{Token: ts.tokens["reader"]}}, ok},
		{"unknown_subject_cert", cred{name: "stranger", cert: &stranger}, connect.CodePermissionDenied},
		{"no_credentials", cred{name: "none"}, connect.CodeUnauthenticated},
	} {
		for _, proto := range []string{"connect", "grpc", "grpcweb"} {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c := ts.client(t, proto, tc.cr)
				s, err := c.volumes.ListBricks(ctx, connect.NewRequest(&ldmv1.ListBricksRequest{Volume: testVolume}))
				if err == nil {
					for s.Receive() {
					}
					err = s.Err()
					s.Close()
				}
				if got := connect.CodeOf(err); err == nil && tc.want != ok || err != nil && got != tc.want {
					t.Fatalf("ListBricks: %v (code %v), want %v", err, got, tc.want)
				}
			})
		}
	}
}
