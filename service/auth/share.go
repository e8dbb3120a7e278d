package auth

// Share tokens (share links) are signed capabilities: each one lets its
// holder read one volume until it expires or is revoked, and nothing else.
//
// Token layout (text, safe in a URL path segment and a query value):
//
//	ldms_<base64url(payload)>.<base64url(mac)>
//
//	payload  version   1 byte  (shareVersion)
//	         id       12 bytes (random; names the share for revocation)
//	         expires   8 bytes (Unix seconds, big-endian)
//	         volume    the rest (the volume name, 1 to 64 bytes)
//	mac      HMAC-SHA256(key, shareMACLabel || payload), 32 bytes
//
// The key is a file of 32 random bytes (LoadShareKey creates it on first
// use, mode 0600). Anyone with the key can mint shares, so it is as secret
// as the token file; every node of a cluster must use the same key.
//
// Revocation file format (text, one share per line, reloaded like the
// token file):
//
//	# comment
//	<share id> [expires=<RFC 3339 time>]
//
// A revoked share stops authenticating at the next reload. The expires
// field is the share's own expiry (informational: lines of expired shares
// may be deleted).

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// ShareTokenPrefix starts every share token.
const ShareTokenPrefix = "ldms_"

// MethodShare is the Identity.Method of a share token.
const MethodShare = "share"

// ShareSubjectPrefix starts the subject of a share identity: "share:" and
// the share's id. The colon keeps every credentials file from naming it.
const ShareSubjectPrefix = "share:"

// ShareQueryParam is the query parameter that carries a share token, and
// SharePathPrefix the path prefix that does ("/share/TOKEN/zarr/...").
const (
	ShareQueryParam = "share"
	SharePathPrefix = "/share/"
)

// Share token widths and limits.
const (
	shareVersion    = 1
	shareIDLen      = 12
	shareExpiresLen = 8
	shareHeaderLen  = 1 + shareIDLen + shareExpiresLen
	shareMACLen     = sha256.Size
	shareKeyLen     = 32
	maxShareVolume  = 64
	shareMACLabel   = "ldm-share-v1\x00"
)

// DefaultShareTTL and DefaultMaxShareTTL bound the life of a share.
const (
	DefaultShareTTL    = 24 * time.Hour
	DefaultMaxShareTTL = 30 * 24 * time.Hour
)

// ErrRevoked is wrapped by the error of a share that was revoked.
var ErrRevoked = errors.New("revoked share")

// Share is one issued share token.
type Share struct {
	ID      string // 24 lowercase hex digits
	Token   string
	Volume  string
	Expires time.Time // to the second
}

// Shares issues and authenticates share tokens with one key and a
// revocation file. It is safe for concurrent use; Reload swaps the
// revocation list atomically.
type Shares struct {
	key         []byte
	revokedPath string
	revoked     atomic.Pointer[map[string]struct{}]
	maxTTL      time.Duration
	now         func() time.Time
}

// LoadShareKey reads the share key at path, creating it with 32 random
// bytes (mode 0600) if it does not exist. A key file of another size is
// refused.
func LoadShareKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := make([]byte, shareKeyLen)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("auth: share key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return LoadShareKey(path) // created meanwhile by another process
		}
		if err != nil {
			return nil, fmt.Errorf("auth: create share key: %w", err)
		}
		_, werr := f.Write(k)
		serr := f.Sync()
		if err := errors.Join(werr, serr, f.Close()); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("auth: write share key %s: %w", path, err)
		}
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: read share key: %w", err)
	}
	if len(b) != shareKeyLen {
		return nil, fmt.Errorf("%w: share key %s has %d bytes, want %d (delete it to make a new one; that invalidates every share)", ErrMalformed, path, len(b), shareKeyLen)
	}
	return b, nil
}

// NewShares returns shares signed with key (32 bytes, see LoadShareKey)
// and revoked by the file at revokedPath, which may not exist yet (then
// nothing is revoked) and is reloaded when it changes. maxTTL bounds the
// life of an issued share: zero means DefaultMaxShareTTL.
func NewShares(key []byte, revokedPath string, maxTTL time.Duration) (*Shares, error) {
	if len(key) != shareKeyLen {
		return nil, fmt.Errorf("%w: share key must be %d bytes", ErrMalformed, shareKeyLen)
	}
	if maxTTL <= 0 {
		maxTTL = DefaultMaxShareTTL
	}
	s := &Shares{key: append([]byte(nil), key...), revokedPath: revokedPath, maxTTL: maxTTL, now: time.Now}
	empty := map[string]struct{}{}
	s.revoked.Store(&empty)
	if revokedPath != "" {
		if err := s.Reload(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Path returns the revocation file.
func (s *Shares) Path() string { return s.revokedPath }

// Reload reads the revocation file again (a missing file revokes nothing).
// On error the old list stays.
func (s *Shares) Reload() error {
	b, err := os.ReadFile(s.revokedPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("auth: read share revocations: %w", err)
	}
	m, err := parseRevocations(b)
	if err != nil {
		return fmt.Errorf("auth: %s: %w", s.revokedPath, err)
	}
	s.revoked.Store(&m)
	return nil
}

// Issue makes a share token for volume valid for ttl (zero means
// DefaultShareTTL). It fails with ErrMalformed for a ttl that is negative
// or above the maximum, or a volume name that does not fit.
func (s *Shares) Issue(volume string, ttl time.Duration) (Share, error) {
	if ttl == 0 {
		ttl = DefaultShareTTL
	}
	if ttl < time.Second || ttl > s.maxTTL {
		return Share{}, fmt.Errorf("%w: ttl %v must be between 1s and %v", ErrMalformed, ttl, s.maxTTL)
	}
	if volume == "" || len(volume) > maxShareVolume || hasControl(volume) {
		return Share{}, fmt.Errorf("%w: volume name %q cannot be shared", ErrMalformed, volume)
	}
	payload := make([]byte, shareHeaderLen, shareHeaderLen+len(volume))
	payload[0] = shareVersion
	if _, err := rand.Read(payload[1 : 1+shareIDLen]); err != nil {
		return Share{}, fmt.Errorf("auth: share id: %w", err)
	}
	expires := s.now().Add(ttl).Truncate(time.Second)
	binary.BigEndian.PutUint64(payload[1+shareIDLen:], uint64(expires.Unix()))
	payload = append(payload, volume...)
	tok := ShareTokenPrefix + base64.RawURLEncoding.EncodeToString(payload) + "." +
		base64.RawURLEncoding.EncodeToString(s.mac(payload))
	return Share{ID: hex.EncodeToString(payload[1 : 1+shareIDLen]), Token: tok, Volume: volume, Expires: expires.UTC()}, nil
}

func (s *Shares) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(shareMACLabel))
	m.Write(payload)
	return m.Sum(nil)
}

// Verify checks a share token's signature, expiry and revocation and
// returns the share it names (without the token). Errors wrap
// ErrMalformed, ErrBadCredentials (a bad signature), ErrExpired or
// ErrRevoked.
func (s *Shares) Verify(token string) (Share, error) {
	sh, payload, mac, err := ParseShareToken(token)
	if err != nil {
		return Share{}, err
	}
	if !hmac.Equal(mac, s.mac(payload)) {
		return Share{}, fmt.Errorf("%w: share token signature does not match (made with another share key?)", ErrBadCredentials)
	}
	if !s.now().Before(sh.Expires) {
		return Share{}, fmt.Errorf("%w: share %s of volume %s expired at %s; ask for a new link", ErrExpired, sh.ID, sh.Volume, sh.Expires.Format(time.RFC3339))
	}
	if _, ok := (*s.revoked.Load())[sh.ID]; ok {
		return Share{}, fmt.Errorf("%w: share %s of volume %s was revoked; ask for a new link", ErrRevoked, sh.ID, sh.Volume)
	}
	return sh, nil
}

// ParseShareToken decodes a share token without checking its signature:
// the share it claims, the signed payload and the MAC. Errors wrap
// ErrMalformed.
func ParseShareToken(token string) (sh Share, payload, mac []byte, err error) {
	body, ok := strings.CutPrefix(token, ShareTokenPrefix)
	p, m, ok2 := strings.Cut(body, ".")
	if !ok || !ok2 || len(body) > 512 {
		return Share{}, nil, nil, fmt.Errorf("%w: not a share token", ErrMalformed)
	}
	payload, err1 := base64.RawURLEncoding.Strict().DecodeString(p)
	mac, err2 := base64.RawURLEncoding.Strict().DecodeString(m)
	if err1 != nil || err2 != nil || len(mac) != shareMACLen || len(payload) <= shareHeaderLen ||
		len(payload) > shareHeaderLen+maxShareVolume || payload[0] != shareVersion {
		return Share{}, nil, nil, fmt.Errorf("%w: share token does not decode", ErrMalformed)
	}
	exp := int64(binary.BigEndian.Uint64(payload[1+shareIDLen:]))
	sh = Share{
		ID:      hex.EncodeToString(payload[1 : 1+shareIDLen]),
		Volume:  string(payload[shareHeaderLen:]),
		Expires: time.Unix(exp, 0).UTC(),
	}
	return sh, payload, mac, nil
}

// Authenticate implements Authenticator for bearer tokens that start with
// ShareTokenPrefix; other requests are not its kind. The identity has
// Method MethodShare, Subject ShareSubjectPrefix+id and ShareVolume set:
// it may read that volume and do nothing else, whatever the policy says.
func (s *Shares) Authenticate(_ context.Context, r *Request) (Identity, bool, error) {
	if r.Credential.Scheme != SchemeBearer || !strings.HasPrefix(r.Credential.Token, ShareTokenPrefix) {
		return Identity{}, false, nil
	}
	sh, err := s.Verify(r.Credential.Token)
	if err != nil {
		return Identity{}, false, err
	}
	return Identity{Subject: ShareSubjectPrefix + sh.ID, Method: MethodShare, ShareVolume: sh.Volume}, true, nil
}

// shareDecision decides for a share identity: read of its one volume
// only. ok is false for other identities, which the policy decides.
func shareDecision(id Identity, obj, act string) (allowed, ok bool) {
	if id.Method != MethodShare {
		return false, false
	}
	return id.ShareVolume != "" && act == ActionRead && obj == VolumeObject(id.ShareVolume), true
}

// parseRevocations parses a revocation file.
func parseRevocations(b []byte) (map[string]struct{}, error) {
	m := make(map[string]struct{})
	err := eachLine(b, func(n int, f []string) error {
		if len(f) > 2 || (len(f) == 2 && !strings.HasPrefix(f[1], tokenExpiresPrefix)) {
			return fmt.Errorf("%w: line %d: want 'SHARE_ID [expires=TIME]'", ErrMalformed, n)
		}
		if !validShareID(f[0]) {
			return fmt.Errorf("%w: line %d: share id must be %d lowercase hex digits", ErrMalformed, n, 2*shareIDLen)
		}
		m[f[0]] = struct{}{}
		return nil
	})
	return m, err
}

func validShareID(id string) bool {
	if len(id) != 2*shareIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// RevokeShare adds a share id to the revocation file at path, creating it
// if needed (mode 0600, rewritten through WriteFileAtomic); a server
// watching the file stops accepting the share at its next reload. A
// non-zero expires is recorded with the line. Revoking an id twice is not
// an error.
func RevokeShare(path, id string, expires time.Time) error {
	if !validShareID(id) {
		return fmt.Errorf("%w: share id %q must be %d lowercase hex digits (as ldm share printed it)", ErrMalformed, id, 2*shareIDLen)
	}
	fileMu.Lock()
	defer fileMu.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("auth: read share revocations: %w", err)
	}
	m, err := parseRevocations(old)
	if err != nil {
		return fmt.Errorf("auth: %s: %w", path, err)
	}
	if _, ok := m[id]; ok {
		return nil
	}
	line := id
	if !expires.IsZero() {
		line += " " + tokenExpiresPrefix + expires.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	prefix := ""
	if len(old) > 0 && old[len(old)-1] != '\n' {
		prefix = "\n"
	}
	if len(old) == 0 {
		prefix = "# go-ldm revoked shares: SHARE_ID [expires=RFC3339]\n"
	}
	return WriteFileAtomic(path, append(append(old, prefix...), line+"\n"...), 0o600)
}

// ShareMiddleware returns next wrapped so that a share token in the URL
// becomes the request's bearer credentials, for clients that cannot send
// headers (third-party viewers, links):
//
//   - the path form /share/TOKEN/REST is served as /REST (a Zarr or
//     Neuroglancer client appends its chunk paths to the base URL, so
//     every request it makes carries the token);
//   - the query form ?share=TOKEN on any path (zarrita's FetchStore and
//     the go-ldm viewer keep the query string).
//
// A request that also carries an Authorization header, or a share token in
// both forms, is refused with 400: it is not clear which credentials
// count. A malformed path form is 404. These answers allow any origin
// (Access-Control-Allow-Origin: *), so browser clients can read them.
func ShareMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail := func(msg string, code int) {
			// Readable by the browser clients that use share links (no
			// credentials are involved in the answer).
			w.Header().Set("Access-Control-Allow-Origin", "*")
			http.Error(w, msg, code)
		}
		var token string
		if rest, ok := strings.CutPrefix(r.URL.Path, SharePathPrefix); ok {
			tok, tail, _ := strings.Cut(rest, "/")
			if !strings.HasPrefix(tok, ShareTokenPrefix) {
				fail("404 page not found: a share path is /share/TOKEN/... with a token from ldm share", http.StatusNotFound)
				return
			}
			token = tok
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/" + tail
			r2.URL.RawPath = ""
			r2.RequestURI = r2.URL.RequestURI()
			r = r2
		}
		if q := r.URL.Query().Get(ShareQueryParam); q != "" {
			if token != "" && q != token {
				fail("400 bad request: a share token both in the path and in the query", http.StatusBadRequest)
				return
			}
			token = q
		}
		if token != "" {
			if r.Header.Get("Authorization") != "" {
				fail("400 bad request: a share token and an Authorization header; send one of them", http.StatusBadRequest)
				return
			}
			r2 := r.Clone(r.Context()) // Clone copies the header
			r2.Header.Set("Authorization", FormatBearer(token))
			r = r2
		}
		next.ServeHTTP(w, r)
	})
}
