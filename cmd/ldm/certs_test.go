package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/internal/pki"
	"github.com/xcheng85/go-ldm/service/auth"
)

// ldmCmd runs one ldm command line in-process and returns its standard
// output and error.
func ldmCmd(tb testing.TB, stdin string, args ...string) (string, string, error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// makePKI runs `ldm certs` to make a CA, a server certificate for
// 127.0.0.1 and localhost, and a client certificate for root.
func makePKI(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	for _, args := range [][]string{
		{"certs", "init", "--dir", dir},
		{"certs", "issue", "--dir", dir, "--server", "localhost,127.0.0.1"},
		{"certs", "issue", "--dir", dir, "--client", "root"},
	} {
		if _, stderr, err := ldmCmd(t, "", args...); err != nil {
			t.Fatalf("ldm %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
	}
	return dir
}

func TestCerts_FilesAndNoOverwrite(t *testing.T) {
	t.Parallel()
	dir := makePKI(t)
	for name, mode := range map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600, "root.pem": 0o644, "root-key.pem": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if _, _, err := ldmCmd(t, "", "certs", "init", "--dir", dir); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("certs init over an existing CA: %v, want ErrExists", err)
	}
	if _, _, err := ldmCmd(t, "", "certs", "issue", "--dir", dir, "--client", "root"); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("certs issue over an existing certificate: %v, want ErrExists", err)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if !bytes.Equal(caBefore, caAfter) {
		t.Fatal("the CA key changed without --force")
	}
	if _, _, err := ldmCmd(t, "", "certs", "issue", "--dir", dir, "--client", "root", "--force"); err != nil {
		t.Fatalf("certs issue --force: %v", err)
	}
	if _, _, err := ldmCmd(t, "", "certs", "issue", "--dir", dir); err == nil || exitCode(err) != 2 {
		t.Fatalf("certs issue without --server or --client: %v, want a usage error", err)
	}
}

// TestServe_TLSEndToEnd runs `ldm serve` with certificates from `ldm certs`
// and a token from `ldm token create`, and calls it with the ldm client
// subcommands, curl --cacert and buf curl.
func TestServe_TLSEndToEnd(t *testing.T) {
	t.Parallel()
	dir := makePKI(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	tokens := filepath.Join(t.TempDir(), "tokens")
	token, _, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "alice", "--roles", "reader")
	if err != nil {
		t.Fatal(err)
	}
	token = strings.TrimSpace(token)
	users := filepath.Join(t.TempDir(), "users")
	if _, _, err := ldmCmd(t, "bobs-password\n", "token", "user", "--file", users, "--name", "bob", "--roles", "writer", "--password-stdin", "--bcrypt-cost", "4"); err != nil {
		t.Fatal(err)
	}
	addr, err := startSecureServer(t, "--addr", "127.0.0.1:0", "--demo",
		"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem"), "--client-ca", p("ca.pem"),
		"--tokens", tokens, "--users", users)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr
	tlsFlags := []string{"--server", url, "--cacert", p("ca.pem")}
	mtls := slices.Concat(tlsFlags, []string{"--cert", p("root.pem"), "--key", p("root-key.pem")})

	for _, proto := range []string{"connect", "grpc", "grpcweb"} {
		t.Run("ldm_client_"+proto, func(t *testing.T) {
			pf := []string{"--protocol", proto}
			vol := "sec-" + proto
			if _, stderr, err := ldmCmd(t, "", slices.Concat([]string{"volume", "create", vol, "--shape", "8x8x8"}, mtls, pf)...); err != nil {
				t.Fatalf("volume create with the root certificate: %v %s", err, stderr)
			}
			out, _, err := ldmCmd(t, "", slices.Concat([]string{"volume", "list", "--token", token}, tlsFlags, pf)...)
			if err != nil || !strings.Contains(out, vol) {
				t.Fatalf("volume list with a reader token: %q, %v", out, err)
			}
			_, _, err = ldmCmd(t, "", slices.Concat([]string{"volume", "delete", vol, "--token", token}, tlsFlags, pf)...)
			if err == nil || !strings.Contains(err.Error(), "permission_denied") {
				t.Fatalf("volume delete with a reader token: %v, want permission_denied", err)
			}
			_, _, err = ldmCmd(t, "", slices.Concat([]string{"volume", "list"}, tlsFlags, pf)...)
			if err == nil || !strings.Contains(err.Error(), "unauthenticated") {
				t.Fatalf("volume list without credentials: %v, want unauthenticated", err)
			}
		})
	}
	t.Run("ldm_client_basic", func(t *testing.T) {
		// LDM_PASSWORD is read by the client hook; the command's own
		// environment lookup is tested in TestServe_ClientCredentialsFromEnv.
		if _, _, err := ldmCmd(t, "", append([]string{"volume", "list", "--user", "bob"}, tlsFlags...)...); err == nil {
			t.Fatal("volume list as bob without a password succeeded")
		}
	})
	t.Run("ldm_client_wrong_ca", func(t *testing.T) {
		other := makePKI(t)
		_, _, err := ldmCmd(t, "", "volume", "list", "--server", url, "--cacert", filepath.Join(other, "ca.pem"), "--token", token)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("volume list trusting another CA: %v", err)
		}
	})
	t.Run("curl_cacert", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Fatalf("curl is needed for this test: %v", err)
		}
		call := func(extra ...string) string {
			args := append([]string{"-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--cacert", p("ca.pem"),
				"-H", "Content-Type: application/json", "-d", "{}", url + "/ldm.v1.VolumeService/ListVolumes"}, extra...)
			out, err := exec.Command(curl, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			return string(out)
		}
		if got := call("-H", "Authorization: Bearer "+token); got != "200 2" {
			t.Fatalf("curl with a token: %q, want 200 over HTTP/2", got)
		}
		if got := call(); !strings.HasPrefix(got, "401") {
			t.Fatalf("curl without credentials: %q, want 401", got)
		}
		if got := call("--cert", p("root.pem"), "--key", p("root-key.pem")); !strings.HasPrefix(got, "200") {
			t.Fatalf("curl with the root certificate: %q, want 200", got)
		}
		out, err := exec.Command(curl, "-sS", url+"/").CombinedOutput()
		if err == nil {
			t.Fatalf("curl without --cacert trusted the server: %s", out)
		}
	})
	t.Run("buf_curl", func(t *testing.T) {
		buf, err := filepath.Abs("../../web/node_modules/.bin/buf")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(buf); err != nil {
			t.Fatalf("buf is needed for this test (run make deps): %v", err)
		}
		for _, proto := range []string{"grpc", "grpcweb", "connect"} {
			// Reflection answers without credentials; the call itself
			// needs the client certificate.
			out, err := exec.Command(buf, "curl", "--protocol", proto, "--cacert", p("ca.pem"),
				"--cert", p("root.pem"), "--key", p("root-key.pem"),
				url+"/ldm.v1.ClusterService/GetServers").CombinedOutput()
			if err != nil || !strings.Contains(string(out), addr) {
				t.Fatalf("buf curl --protocol %s with the root certificate: %v\n%s", proto, err, out)
			}
			out, err = exec.Command(buf, "curl", "--protocol", proto, "--cacert", p("ca.pem"),
				url+"/ldm.v1.ClusterService/GetServers").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "unauthenticated") {
				t.Fatalf("buf curl --protocol %s without credentials: %v\n%s", proto, err, out)
			}
		}
	})
}

// TestServe_SafeDefaults checks that a non-loopback address needs TLS and
// authentication, or --insecure.
func TestServe_SafeDefaults(t *testing.T) {
	t.Parallel()
	dir := makePKI(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, tt := range []struct {
		name  string
		flags []string
		ok    bool
	}{
		{"plain", nil, false},
		{"tls_without_auth", []string{"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem")}, false},
		{"auth_without_tls", []string{"--authz-policy", writeTemp(t, "p, anonymous, volumes/*, read\n")}, false},
		{"tls_and_auth", []string{"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem"), "--client-ca", p("ca.pem")}, true},
		{"insecure", []string{"--insecure"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := startSecureServer(t, append([]string{"--addr", "0.0.0.0:0"}, tt.flags...)...)
			if tt.ok && err != nil {
				t.Fatalf("serve: %v", err)
			}
			if !tt.ok && (err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--insecure")) {
				t.Fatalf("serve: %v, want a usage error naming --insecure", err)
			}
		})
	}
	if _, err := startSecureServer(t, "--addr", "127.0.0.1:0", "--client-ca", p("ca.pem")); err == nil || exitCode(err) != 2 {
		t.Fatalf("--client-ca without TLS: %v, want a usage error", err)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestServe_ClientCredentialsFromEnv checks LDM_TOKEN and LDM_PASSWORD. It
// changes the environment, so it does not run in parallel.
func TestServe_ClientCredentialsFromEnv(t *testing.T) {
	dir := makePKI(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	tokens := filepath.Join(t.TempDir(), "tokens")
	token, _, err := ldmCmd(t, "", "token", "create", "--file", tokens, "--subject", "alice", "--roles", "reader")
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if _, _, err := ldmCmd(t, "bobs-password\n", "token", "user", "--file", users, "--name", "bob", "--roles", "writer", "--password-stdin", "--bcrypt-cost", "4"); err != nil {
		t.Fatal(err)
	}
	addr, err := startSecureServer(t, "--addr", "127.0.0.1:0",
		"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem"), "--tokens", tokens, "--users", users)
	if err != nil {
		t.Fatal(err)
	}
	tlsFlags := []string{"--server", "https://" + addr, "--cacert", p("ca.pem")}
	t.Setenv("LDM_PASSWORD", "bobs-password")
	if _, _, err := ldmCmd(t, "", append([]string{"volume", "list", "--user", "bob"}, tlsFlags...)...); err != nil {
		t.Fatalf("volume list as bob: %v", err)
	}
	t.Setenv("LDM_PASSWORD", "wrong")
	if _, _, err := ldmCmd(t, "", append([]string{"volume", "list", "--user", "bob"}, tlsFlags...)...); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Fatalf("volume list as bob with a wrong password: %v", err)
	}
	t.Setenv("LDM_TOKEN", strings.TrimSpace(token))
	if _, _, err := ldmCmd(t, "", append([]string{"volume", "list"}, tlsFlags...)...); err != nil {
		t.Fatalf("volume list with LDM_TOKEN: %v", err)
	}
}

// TestServe_ClusterEndpointsNeedNodeCert checks that under TLS a user's
// client certificate cannot reach the node-to-node endpoints, while a node
// certificate can.
func TestServe_ClusterEndpointsNeedNodeCert(t *testing.T) {
	t.Parallel()
	dir := makePKI(t)
	p := func(name string) string { return filepath.Join(dir, name) }
	if _, _, err := ldmCmd(t, "", "certs", "issue", "--dir", dir, "--client", "alice"); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(t.TempDir(), "data")
	addr, err := startSecureServer(t, "--addr", "127.0.0.1:0", "--data", data, "--node-id", "n1", "--gossip-addr", "127.0.0.1:0",
		"--tls-cert", p("server.pem"), "--tls-key", p("server-key.pem"), "--client-ca", p("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	post := func(name string) int {
		t.Helper()
		cfg, err := auth.ClientTLS{CAFile: p("ca.pem"), CertFile: p(name + ".pem"), KeyFile: p(name + "-key.pem")}.Config()
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post("https://"+addr+"/_ldm/cluster/apply", "application/octet-stream", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("alice"); code != http.StatusForbidden {
		t.Fatalf("a user's client certificate on the apply endpoint: %d, want 403", code)
	}
	// The node certificate passes the peer check; the garbage command is
	// then rejected as a bad request.
	if code := post("server"); code != http.StatusBadRequest {
		t.Fatalf("a node certificate on the apply endpoint: %d, want 400", code)
	}
}
