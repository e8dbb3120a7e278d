package auth

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/xcheng85/go-ldm/internal/testutil"
)

func TestTokens_AppendAndAuthenticate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "tokens")
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) != len(TokenPrefix)+43 {
		t.Fatalf("NewToken() = %q", tok)
	}
	// A file left world-readable by hand gets mode 0600 back.
	if err := os.WriteFile(path, []byte("# tokens\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := AppendToken(path, tok, "alice", []string{"reader", "writer"}); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("the token file's directory holds %d entries, want 1 (a temporary file was left)", len(ents))
	}
	if err := AppendToken(path, tok, "bob", nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("appending a duplicate token: err = %v, want ErrMalformed", err)
	}
	for _, bad := range []string{"anonymous", "role:admin", "a b", "", "x,y"} {
		if err := AppendToken(path, "ldm_other", bad, nil); !errors.Is(err, ErrMalformed) {
			t.Fatalf("subject %q: err = %v, want ErrMalformed", bad, err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), tok) {
		t.Fatal("token file stores the token itself")
	}
	ts, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok, err := ts.Authenticate(context.Background(), &Request{Credential: Credential{Scheme: SchemeBearer, Token: tok}})
	if err != nil || !ok || id.Subject != "alice" || strings.Join(id.Roles, ",") != "reader,writer" || id.Method != MethodToken {
		t.Fatalf("Authenticate = %+v, %v, %v", id, ok, err)
	}
	_, ok, err = ts.Authenticate(context.Background(), &Request{Credential: Credential{Scheme: SchemeBearer, Token: tok + "x"}})
	if ok || !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong token: ok = %v, err = %v", ok, err)
	}
	_, ok, err = ts.Authenticate(context.Background(), &Request{Credential: Credential{Scheme: SchemeBasic, Username: "a"}})
	if ok || err != nil {
		t.Fatalf("basic credentials to Tokens: ok = %v, err = %v; want not mine", ok, err)
	}
}

func TestParseTokens_Malformed(t *testing.T) {
	t.Parallel()
	h := HashToken("t")
	for name, in := range map[string]string{
		"one_field":   h + "\n",
		"bad_prefix":  "md5:" + strings.Repeat("0", 64) + " a\n",
		"short_hash":  "sha256:abcd a\n",
		"bad_hex":     "sha256:" + strings.Repeat("z", 64) + " a\n",
		"four_fields": h + " a b c\n",
		"bad_role":    h + " a role:x\n",
		"duplicate":   h + " a\n" + h + " b\n",
	} {
		if _, err := ParseTokens([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	m, err := ParseTokens([]byte("# comment\n\n  " + h + "\tcarol  \n"))
	if err != nil || len(m) != 1 {
		t.Fatalf("ParseTokens with comments = %v, %v", m, err)
	}
}

func TestUsers_SetUserAndAuthenticate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users")
	if err := SetUser(path, "bob", "hunter2", []string{"writer"}, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := SetUser(path, "carol", "pw", nil, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	// Replacing bob's password keeps carol.
	if err := SetUser(path, "bob", "correct horse", []string{"writer"}, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := SetUser(path, "role:x", "pw", nil, bcrypt.MinCost); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reserved name: err = %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 2 {
		t.Fatalf("Len = %d, want 2", u.Len())
	}
	auth := func(user, pass string) (Identity, bool, error) {
		return u.Authenticate(context.Background(), &Request{Credential: Credential{Scheme: SchemeBasic, Username: user, Password: pass}})
	}
	for range 2 { // the second round is answered from the cache
		id, ok, err := auth("bob", "correct horse")
		if err != nil || !ok || id.Subject != "bob" || id.Roles[0] != "writer" || id.Method != MethodBasic {
			t.Fatalf("good password: %+v, %v, %v", id, ok, err)
		}
		if _, ok, err := auth("bob", "hunter2"); ok || !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("old password: ok = %v, err = %v", ok, err)
		}
		if _, ok, err := auth("mallory", "x"); ok || !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("unknown user: ok = %v, err = %v", ok, err)
		}
	}
	// A reload drops the cache: the old cached success must not survive a
	// password change.
	if err := SetUser(path, "bob", "new", []string{"writer"}, bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := u.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := auth("bob", "correct horse"); ok {
		t.Fatal("a cached success survived a password change")
	}
	if _, ok, _ := auth("bob", "new"); !ok {
		t.Fatal("the new password fails")
	}
	// A broken file does not replace the loaded one.
	if err := os.WriteFile(path, []byte("bob:nothash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := u.Reload(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if _, ok, _ := auth("bob", "new"); !ok {
		t.Fatal("a failed reload dropped the users")
	}
}

func TestAuthorizer_DefaultPolicy(t *testing.T) {
	t.Parallel()
	a, err := NewAuthorizer("", "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		id       Identity
		obj, act string
		want     bool
	}{
		{Identity{Subject: "root"}, ObjectCluster, ActionAdmin, true},
		{Identity{Subject: "root"}, VolumeObject("x"), ActionAdmin, true},
		{Identity{Subject: "x", Roles: []string{"admin"}}, VolumeObject("x"), ActionAdmin, true},
		{Identity{Subject: "w", Roles: []string{"writer"}}, VolumeObject("x"), ActionWrite, true},
		{Identity{Subject: "w", Roles: []string{"writer"}}, VolumeObject("x"), ActionAdmin, false},
		{Identity{Subject: "w", Roles: []string{"writer"}}, ObjectCluster, ActionAdmin, false},
		{Identity{Subject: "r", Roles: []string{"reader"}}, VolumeObject("x"), ActionRead, true},
		{Identity{Subject: "r", Roles: []string{"reader"}}, VolumeObject("x"), ActionWrite, false},
		{Identity{Subject: "r", Roles: []string{"reader"}}, ObjectCluster, ActionRead, true},
		// A volume named "cluster" is not the cluster.
		{Identity{Subject: "r", Roles: []string{"reader"}}, VolumeObject("cluster"), ActionWrite, false},
		{Identity{Subject: Anonymous, Method: MethodAnonymous}, VolumeObject("x"), ActionRead, false},
		{Identity{Subject: "nobody"}, VolumeObject("x"), ActionRead, false},
	}
	for _, tt := range tests {
		for range 2 { // uncached, then cached
			d, err := a.Allow(tt.id, tt.obj, tt.act)
			if err != nil || d.Allowed != tt.want {
				t.Errorf("Allow(%+v, %s, %s) = %v, %v; want %v", tt.id, tt.obj, tt.act, d.Allowed, err, tt.want)
			}
		}
	}
}

func TestAuthorizer_ReloadAndValidation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.csv")
	write := func(s string) {
		t.Helper()
		if err := WriteFileAtomic(policy, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("p, alice, volumes/ct-*, read\n")
	a, err := NewAuthorizer("", policy)
	if err != nil {
		t.Fatal(err)
	}
	alice := Identity{Subject: "alice", Method: MethodCert}
	allow := func(obj string) bool {
		t.Helper()
		d, err := a.Allow(alice, obj, ActionRead)
		if err != nil {
			t.Fatal(err)
		}
		return d.Allowed
	}
	if !allow(VolumeObject("ct-1")) || allow(VolumeObject("mri-1")) {
		t.Fatal("prefix pattern misapplied")
	}
	gen := a.Generation()
	for name, bad := range map[string]string{
		"star_in_middle": "p, alice, volumes/*-x, read\n",
		"unknown_type":   "q, alice, x, read\n",
		"request_type":   "r, alice, volumes/ct-1, read\n",
		"matcher_type":   "m\n",
		"too_few_fields": "p, alice, x\n",
		"bad_csv":        "p, \"alice, x, read\n",
	} {
		write(bad)
		if err := a.Reload(); !errors.Is(err, ErrPolicy) {
			t.Errorf("%s: Reload err = %v, want ErrPolicy", name, err)
		}
	}
	if a.Generation() != gen || !allow(VolumeObject("ct-1")) {
		t.Fatal("a failed reload replaced the policy")
	}
	write("p, alice, volumes/mri-*, read\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if a.Generation() == gen || allow(VolumeObject("ct-1")) || !allow(VolumeObject("mri-1")) {
		t.Fatal("reload did not replace the policy or its cached decisions")
	}
}

func TestCertIdentity_ReservedNames(t *testing.T) {
	t.Parallel()
	p := testutil.NewPKI(t)
	for _, cn := range []string{"anonymous", "role:admin", "a b"} {
		c := p.Issue(t, &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if _, err := CertIdentity(c.Leaf); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("CN %q: err = %v, want ErrBadCredentials", cn, err)
		}
	}
	c := p.ClientCert(t, "svc", "spiffe://ldm/ingest")
	id, err := CertIdentity(c.Leaf)
	if err != nil || id.Subject != "svc" || len(id.Aliases) != 1 || id.Aliases[0] != "spiffe://ldm/ingest" {
		t.Fatalf("CertIdentity = %+v, %v", id, err)
	}
}

// TestUsers_UnknownUserCostsAsMuch checks that an unknown user is checked
// against a hash of the file's cost: bcrypt's time grows with the cost, so
// a dummy hash of another cost would tell from the answer's delay which
// names exist.
func TestUsers_UnknownUserCostsAsMuch(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "users")
	for _, cost := range []int{bcrypt.MinCost, bcrypt.MinCost + 1} {
		if err := SetUser(path, "carol", "pw", nil, cost); err != nil {
			t.Fatal(err)
		}
		u, err := LoadUsers(path)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bcrypt.Cost(u.state.Load().dummy); err != nil || got != cost {
			t.Fatalf("users of cost %d: unknown users are checked at cost %d, %v", cost, got, err)
		}
	}
}
