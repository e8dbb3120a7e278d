package auth

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestShares(t *testing.T) (*Shares, string) {
	t.Helper()
	dir := t.TempDir()
	key, err := LoadShareKey(filepath.Join(dir, "share.key"))
	if err != nil {
		t.Fatal(err)
	}
	revoked := filepath.Join(dir, "revoked")
	s, err := NewShares(key, revoked, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s, revoked
}

func bearerRequest(token string) *Request {
	return &Request{Credential: Credential{Scheme: SchemeBearer, Token: token}}
}

func TestLoadShareKey_File(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k")
	k1, err := LoadShareKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != shareKeyLen {
		t.Fatalf("key file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), shareKeyLen)
	}
	k2, err := LoadShareKey(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second load: %v, same key %v", err, bytes.Equal(k1, k2))
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadShareKey(path); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short key: %v, want ErrMalformed", err)
	}
}

func TestShares_Authenticate(t *testing.T) {
	t.Parallel()
	s, revoked := newTestShares(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return now }
	sh, err := s.Issue("ct-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sh.Token, ShareTokenPrefix) || !isToken68(sh.Token) || len(sh.ID) != 24 || !sh.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("share %+v", sh)
	}

	t.Run("valid_token_reads_its_volume_only", func(t *testing.T) {
		id, ok, err := s.Authenticate(context.Background(), bearerRequest(sh.Token))
		if err != nil || !ok {
			t.Fatalf("Authenticate: %v %v", ok, err)
		}
		if id.Method != MethodShare || id.Subject != ShareSubjectPrefix+sh.ID || id.ShareVolume != "ct-1" {
			t.Fatalf("identity %+v", id)
		}
		for _, c := range []struct {
			obj, act string
			want     bool
		}{
			{VolumeObject("ct-1"), ActionRead, true},
			{VolumeObject("ct-10"), ActionRead, false},
			{VolumeObject("ct-1"), ActionWrite, false},
			{VolumeObject("ct-1"), ActionAdmin, false},
			{ObjectCluster, ActionRead, false},
		} {
			// A policy that lets everyone do everything does not widen a share.
			az, err := NewAuthorizer("", writeFile(t, "p, anonymous, *, *\np, "+id.Subject+", *, *\n"))
			if err != nil {
				t.Fatal(err)
			}
			d, err := az.Allow(id, c.obj, c.act)
			if err != nil || d.Allowed != c.want {
				t.Errorf("Allow(%s, %s) = %v, %v; want %v", c.obj, c.act, d.Allowed, err, c.want)
			}
		}
	})
	t.Run("other_credentials_are_not_its_kind", func(t *testing.T) {
		for _, r := range []*Request{{}, bearerRequest("ldm_abc"), {Credential: Credential{Scheme: SchemeBasic, Username: "u"}}} {
			if _, ok, err := s.Authenticate(context.Background(), r); ok || err != nil {
				t.Errorf("%+v: ok %v err %v", r.Credential, ok, err)
			}
		}
	})
	t.Run("tampered_token_is_refused", func(t *testing.T) {
		_, payload, mac, err := ParseShareToken(sh.Token)
		if err != nil {
			t.Fatal(err)
		}
		other := append(append([]byte(nil), payload[:shareHeaderLen]...), "ct-2"...)
		forged := ShareTokenPrefix + base64.RawURLEncoding.EncodeToString(other) + "." + base64.RawURLEncoding.EncodeToString(mac)
		if _, _, err := s.Authenticate(context.Background(), bearerRequest(forged)); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("forged volume: %v, want ErrBadCredentials", err)
		}
		s2, _ := newTestShares(t)
		if _, err := s2.Verify(sh.Token); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("another key: %v, want ErrBadCredentials", err)
		}
		for _, bad := range []string{ShareTokenPrefix, ShareTokenPrefix + "x.y", ShareTokenPrefix + "AAAA", sh.Token + "A", strings.Replace(sh.Token, ".", "", 1)} {
			if _, _, err := s.Authenticate(context.Background(), bearerRequest(bad)); err == nil {
				t.Errorf("%q authenticated", bad)
			}
		}
	})
	t.Run("expired_token_is_refused", func(t *testing.T) {
		defer func() { s.now = func() time.Time { return now } }()
		s.now = func() time.Time { return sh.Expires.Add(-time.Nanosecond) }
		if _, _, err := s.Authenticate(context.Background(), bearerRequest(sh.Token)); err != nil {
			t.Fatalf("just before expiry: %v", err)
		}
		s.now = func() time.Time { return sh.Expires }
		if _, _, err := s.Authenticate(context.Background(), bearerRequest(sh.Token)); !errors.Is(err, ErrExpired) {
			t.Fatalf("at expiry: %v, want ErrExpired", err)
		}
	})
	t.Run("revoked_token_is_refused_after_reload", func(t *testing.T) {
		other, err := s.Issue("ct-1", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := RevokeShare(revoked, sh.ID, sh.Expires); err != nil {
			t.Fatal(err)
		}
		if err := RevokeShare(revoked, sh.ID, time.Time{}); err != nil {
			t.Fatalf("revoking twice: %v", err)
		}
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Authenticate(context.Background(), bearerRequest(sh.Token)); !errors.Is(err, ErrRevoked) {
			t.Fatalf("revoked: %v, want ErrRevoked", err)
		}
		if _, ok, err := s.Authenticate(context.Background(), bearerRequest(other.Token)); !ok || err != nil {
			t.Fatalf("another share of the volume: %v %v", ok, err)
		}
		if err := RevokeShare(revoked, "not-an-id", time.Time{}); !errors.Is(err, ErrMalformed) {
			t.Fatalf("bad id: %v", err)
		}
	})
	t.Run("issue_checks_ttl_and_volume", func(t *testing.T) {
		for _, ttl := range []time.Duration{-time.Hour, time.Millisecond, DefaultMaxShareTTL + time.Second} {
			if _, err := s.Issue("ct-1", ttl); !errors.Is(err, ErrMalformed) {
				t.Errorf("ttl %v: %v", ttl, err)
			}
		}
		if _, err := s.Issue("", time.Hour); !errors.Is(err, ErrMalformed) {
			t.Errorf("empty volume: %v", err)
		}
		d, err := s.Issue("ct-1", 0)
		if err != nil || !d.Expires.Equal(now.Add(DefaultShareTTL)) {
			t.Errorf("default ttl: %v %v", d.Expires, err)
		}
	})
}

func TestShares_Reload_bad_file_keeps_list(t *testing.T) {
	t.Parallel()
	s, revoked := newTestShares(t)
	sh, err := s.Issue("v", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := RevokeShare(revoked, sh.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(revoked, []byte("zz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad file: %v", err)
	}
	if _, err := s.Verify(sh.Token); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after a bad reload: %v, want still revoked", err)
	}
}

func TestShareMiddleware_Forms(t *testing.T) {
	t.Parallel()
	var got struct{ path, authz, query string }
	h := ShareMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.path, got.authz, got.query = r.URL.Path, r.Header.Get("Authorization"), r.URL.RawQuery
	}))
	tok := ShareTokenPrefix + "abc.def"
	for _, c := range []struct {
		name, target, header string
		code                 int
		path, authz          string
	}{
		{"path_form", "/share/" + tok + "/zarr/ct/0/.zarray", "", 200, "/zarr/ct/0/.zarray", "Bearer " + tok},
		{"path_form_root", "/share/" + tok + "/", "", 200, "/", "Bearer " + tok},
		{"query_form", "/zarr/ct/.zattrs?share=" + tok, "", 200, "/zarr/ct/.zattrs", "Bearer " + tok},
		{"both_forms_agree", "/share/" + tok + "/x?share=" + tok, "", 200, "/x", "Bearer " + tok},
		{"both_forms_differ", "/share/" + tok + "/x?share=" + tok + "x", "", 400, "", ""},
		{"header_and_share", "/x?share=" + tok, "Bearer ldm_x", 400, "", ""},
		{"not_a_share_path", "/share/ldm_x/zarr", "", 404, "", ""},
		{"nothing", "/zarr/ct/.zattrs", "Bearer ldm_x", 200, "/zarr/ct/.zattrs", "Bearer ldm_x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got.path, got.authz = "", ""
			r := httptest.NewRequest(http.MethodGet, c.target, nil)
			if c.header != "" {
				r.Header.Set("Authorization", c.header)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != c.code || got.path != c.path || got.authz != c.authz {
				t.Fatalf("code %d path %q authz %q; want %d %q %q", w.Code, got.path, got.authz, c.code, c.path, c.authz)
			}
			if c.code != 200 && w.Header().Get("Access-Control-Allow-Origin") != "*" {
				t.Fatalf("a %d without CORS headers", c.code)
			}
		})
	}
}

func FuzzParseShareToken(f *testing.F) {
	dir := f.TempDir()
	key, err := LoadShareKey(filepath.Join(dir, "k"))
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewShares(key, filepath.Join(dir, "r"), 0)
	if err != nil {
		f.Fatal(err)
	}
	sh, err := s.Issue("ct", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sh.Token)
	f.Add(ShareTokenPrefix + ".")
	f.Add("ldms_AQ.AA")
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := s.Verify(tok)
		if err == nil && (tok != sh.Token || got.Volume != "ct") {
			t.Fatalf("%q verified as %+v", tok, got)
		}
	})
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
