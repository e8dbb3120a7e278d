package auth_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/internal/testutil"
	"github.com/xcheng85/go-ldm/service/auth"
)

// TestTokens_Expiry serves a token file that holds a token without expiry
// (as files written before expiry existed), one that expires tomorrow and
// one that expired an hour ago: the first two work, the third is
// Unauthenticated with a message that says it expired.
func TestTokens_Expiry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "tokens")
	tokens := map[string]string{}
	for _, name := range []string{"forever", "tomorrow", "expired"} {
		tok, err := auth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = tok
	}
	if err := auth.AppendToken(file, tokens["forever"], "alice", []string{"reader"}); err != nil {
		t.Fatal(err)
	}
	if err := auth.AppendTokenExpiring(file, tokens["tomorrow"], "carol", []string{"reader"}, time.Now().Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := auth.AppendTokenExpiring(file, tokens["expired"], "dave", nil, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), " expires="); n != 2 {
		t.Fatalf("token file has %d expiry fields, want 2:\n%s", n, b)
	}
	s := startAuthServer(t, file, "", auth.BasicLimit{}, -1)
	ctx := context.Background()
	for _, name := range []string{"forever", "tomorrow"} {
		if _, err := s.list(ctx, auth.FormatBearer(tokens[name])); err != nil {
			t.Errorf("token %s: %v", name, err)
		}
	}
	_, err = s.list(ctx, auth.FormatBearer(tokens["expired"]))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeUnauthenticated || !strings.Contains(ce.Message(), "expired") {
		t.Fatalf("expired token: %v, want unauthenticated saying it expired", err)
	}
	// An unknown token says nothing of the kind.
	_, err = s.list(ctx, auth.FormatBearer("ldm_unknown"))
	if connect.CodeOf(err) != connect.CodeUnauthenticated || strings.Contains(err.Error(), "expired") {
		t.Fatalf("unknown token: %v", err)
	}
}

// TestParseTokens_ExpiryField reads the expiry field after the subject or
// the roles, refuses one that is not an RFC 3339 time, and keeps reading
// lines without one.
func TestParseTokens_ExpiryField(t *testing.T) {
	t.Parallel()
	h := auth.HashToken("ldm_a")
	h2 := auth.HashToken("ldm_b")
	h3 := auth.HashToken("ldm_c")
	good := h + " alice reader,writer expires=2030-01-02T15:04:05Z\n" + h2 + " bob expires=2030-01-02T15:04:05+02:00\n" + h3 + " carol reader\n"
	m, err := auth.ParseTokens([]byte(good))
	if err != nil || len(m) != 3 {
		t.Fatalf("ParseTokens: %v, %v", m, err)
	}
	for _, bad := range []string{
		h + " alice expires=tomorrow\n",
		h + " alice reader expires=2030-01-02\n",
		h + " alice reader writer expires=2030-01-02T15:04:05Z\n",
		h + " expires=2030-01-02T15:04:05Z\n",
	} {
		if _, err := auth.ParseTokens([]byte(bad)); !errors.Is(err, auth.ErrMalformed) {
			t.Errorf("ParseTokens(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

// TestAuth_CredentialFilesReloadWithExpiry rewrites the files of a running
// server: a token line rewritten with an expiry in the past stops working,
// a new token with a future expiry starts working, and a user's new
// password replaces the old one, without a restart.
func TestAuth_CredentialFilesReloadWithExpiry(t *testing.T) {
	t.Parallel()
	tokensFile, usersFile, token := writeCredentials(t)
	s := startAuthServer(t, tokensFile, usersFile, auth.BasicLimit{}, time.Millisecond)
	ctx := context.Background()
	if _, err := s.list(ctx, auth.FormatBearer(token)); err != nil {
		t.Fatalf("token before the rewrite: %v", err)
	}
	fresh, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	// The same token hash, now with an expiry an hour ago, and a new token.
	content := auth.HashToken(token) + " alice reader expires=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "\n" +
		auth.HashToken(fresh) + " erin reader expires=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + "\n"
	if err := auth.WriteFileAtomic(tokensFile, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := auth.SetUser(usersFile, "bob", "new-password", []string{"reader"}, 4); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the rewritten files to be in force", func() bool {
		_, oldTok := s.list(ctx, auth.FormatBearer(token))
		_, newTok := s.list(ctx, auth.FormatBearer(fresh))
		_, oldPw := s.list(ctx, auth.FormatBasic("bob", "right"))
		_, newPw := s.list(ctx, auth.FormatBasic("bob", "new-password"))
		return oldTok != nil && strings.Contains(oldTok.Error(), "expired") && newTok == nil && oldPw != nil && newPw == nil
	})
}
