package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTokenCreate_TTL creates a token with --ttl 24h: the file records
// when it expires, and a server that reads the file accepts it now. A
// negative --ttl is a usage error.
func TestTokenCreate_TTL(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens")
	out, stderr, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "alice", "--roles", "reader", "--ttl", "24h")
	if err != nil {
		t.Fatalf("token create --ttl: %v %s", err, stderr)
	}
	token := strings.TrimSpace(out)
	b, err := os.ReadFile(tokens)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(b)[strings.LastIndex(strings.TrimSpace(string(b)), "\n")+1:])
	_, at, ok := strings.Cut(line, " expires=")
	if !ok {
		t.Fatalf("no expiry in the token line %q", line)
	}
	exp, err := time.Parse(time.RFC3339, at)
	if err != nil || exp.Before(time.Now().Add(23*time.Hour)) || exp.After(time.Now().Add(25*time.Hour)) {
		t.Fatalf("expiry %q (%v), want about 24h from now", at, err)
	}
	if !strings.Contains(stderr, "expires at "+at) {
		t.Fatalf("stderr does not say when it expires: %q", stderr)
	}

	addr, err := startSecureServer(t, "--addr", "127.0.0.1:0", "--tokens", tokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := ldmCmd(t, "", "volume", "list", "--server", "http://"+addr, "--token", token); err != nil {
		t.Fatalf("volume list with a token that expires tomorrow: %v %s", err, stderr)
	}

	if _, _, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "bob", "--ttl", "-1h"); err == nil || !strings.Contains(err.Error(), "--ttl") {
		t.Fatalf("negative --ttl: %v", err)
	}
}
