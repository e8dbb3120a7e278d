package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// TestAuth_AuthorizeHTTP authorizes plain HTTP reads of a volume with the
// same authenticators and policy as calls: tokens, a share token, nothing.
func TestAuth_AuthorizeHTTP(t *testing.T) {
	t.Parallel()
	reader, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	nobody, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	toks, err := LoadTokens(writeFile(t, HashToken(reader)+" ann reader\n"+HashToken(nobody)+" bob\n"))
	if err != nil {
		t.Fatal(err)
	}
	shares, _ := newTestShares(t)
	sh, err := shares.Issue("a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Authenticators: []Authenticator{shares, toks}, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	for _, c := range []struct {
		name, authz, volume string
		want                connect.Code // 0: allowed
	}{
		{"no_credentials", "", "a", connect.CodeUnauthenticated},
		{"reader", "Bearer " + reader, "a", 0},
		{"reader_other_volume", "Bearer " + reader, "b", 0},
		{"no_role", "Bearer " + nobody, "a", connect.CodePermissionDenied},
		{"unknown_token", "Bearer ldm_nope", "a", connect.CodeUnauthenticated},
		{"malformed", "Bearer", "a", connect.CodeUnauthenticated},
		{"share_its_volume", "Bearer " + sh.Token, "a", 0},
		{"share_other_volume", "Bearer " + sh.Token, "b", connect.CodePermissionDenied},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/zarr/"+c.volume+"/.zattrs", nil)
			if c.authz != "" {
				r.Header.Set("Authorization", c.authz)
			}
			ctx, err := a.AuthorizeHTTP(r, VolumeObject(c.volume), ActionRead)
			if c.want == 0 {
				if err != nil {
					t.Fatalf("%v, want allowed", err)
				}
				if id, ok := IdentityFrom(ctx); !ok || id.Anonymous() {
					t.Fatalf("identity %+v %v", id, ok)
				}
				return
			}
			if connect.CodeOf(err) != c.want {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}
