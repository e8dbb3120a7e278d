package auth

// Token file format (text, UTF-8, one token per line):
//
//	# comment
//	sha256:<64 lowercase hex digits> <subject> [<role>[,<role>...]] [expires=<RFC 3339 time>]
//
// Fields are separated by spaces or tabs. A line with an expires field
// stops authenticating at that time (ErrExpired); a line without one never
// expires, as in files written before expiry existed. The hash is SHA-256 of the whole
// token string as presented in "Authorization: Bearer <token>"; the token
// itself is never stored. Tokens made by NewToken carry 256 random bits, so
// a fast hash is enough to make a stolen file useless. Several tokens may
// name the same subject. The file should be mode 0600.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// TokenPrefix starts every token made by NewToken, so that tokens are easy
// to recognize in logs and secret scanners.
const TokenPrefix = "ldm_"

const tokenHashPrefix = "sha256:"

// tokenExpiresPrefix starts the optional expiry field of a token line.
const tokenExpiresPrefix = "expires="

// ErrExpired is wrapped by the error of a token whose expiry has passed.
// The interceptor maps it to connect.CodeUnauthenticated with a message
// that says the token expired.
var ErrExpired = errors.New("expired credentials")

// tokenEntry is one line of a token file.
type tokenEntry struct {
	id      Identity
	expires time.Time // zero: never
}

// Tokens authenticates bearer tokens against a token file. It is safe for
// concurrent use; Reload swaps the whole table atomically.
type Tokens struct {
	path  string
	table atomic.Pointer[map[[sha256.Size]byte]tokenEntry]
	now   func() time.Time
}

// LoadTokens reads a token file. Every error wraps ErrMalformed or comes
// from the file system.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path, now: time.Now}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Path returns the file the tokens were read from.
func (t *Tokens) Path() string { return t.path }

// Reload reads the file again and replaces the table. On error the old
// table stays.
func (t *Tokens) Reload() error {
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("auth: read token file: %w", err)
	}
	m, err := parseTokenFile(b)
	if err != nil {
		return fmt.Errorf("auth: %s: %w", t.path, err)
	}
	t.table.Store(&m)
	return nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(*t.table.Load()) }

// Authenticate implements Authenticator for SchemeBearer. A token past
// its expiry fails with an error wrapping ErrExpired.
func (t *Tokens) Authenticate(_ context.Context, r *Request) (Identity, bool, error) {
	if r.Credential.Scheme != SchemeBearer {
		return Identity{}, false, nil
	}
	e, ok := (*t.table.Load())[sha256.Sum256([]byte(r.Credential.Token))]
	if !ok {
		return Identity{}, false, fmt.Errorf("%w: unknown bearer token", ErrBadCredentials)
	}
	if !e.expires.IsZero() && !t.now().Before(e.expires) {
		return Identity{}, false, fmt.Errorf("%w: the token of %s expired at %s", ErrExpired, e.id.Subject, e.expires.UTC().Format(time.RFC3339))
	}
	return e.id, true, nil
}

// ParseTokens parses the content of a token file and returns the identity
// of each token hash, expired or not (Tokens enforces the expiry).
func ParseTokens(b []byte) (map[[sha256.Size]byte]Identity, error) {
	m, err := parseTokenFile(b)
	if err != nil {
		return nil, err
	}
	ids := make(map[[sha256.Size]byte]Identity, len(m))
	for k, e := range m {
		ids[k] = e.id
	}
	return ids, nil
}

// parseTokenFile parses the content of a token file.
func parseTokenFile(b []byte) (map[[sha256.Size]byte]tokenEntry, error) {
	m := make(map[[sha256.Size]byte]tokenEntry)
	err := eachLine(b, func(n int, f []string) error {
		var expires time.Time
		if last := f[len(f)-1]; len(f) > 2 && strings.HasPrefix(last, tokenExpiresPrefix) {
			t, err := time.Parse(time.RFC3339, strings.TrimPrefix(last, tokenExpiresPrefix))
			if err != nil {
				return fmt.Errorf("%w: line %d: expires must be an RFC 3339 time such as 2030-01-02T15:04:05Z: %v", ErrMalformed, n, err)
			}
			expires, f = t, f[:len(f)-1]
		}
		if len(f) < 2 || len(f) > 3 {
			return fmt.Errorf("%w: line %d: want 'sha256:HEX SUBJECT [ROLES] [expires=TIME]'", ErrMalformed, n)
		}
		h, ok := strings.CutPrefix(f[0], tokenHashPrefix)
		if !ok || len(h) != 2*sha256.Size {
			return fmt.Errorf("%w: line %d: hash must be sha256: and 64 hex digits", ErrMalformed, n)
		}
		var sum [sha256.Size]byte
		if _, err := hex.Decode(sum[:], []byte(h)); err != nil {
			return fmt.Errorf("%w: line %d: hash: %v", ErrMalformed, n, err)
		}
		if _, dup := m[sum]; dup {
			return fmt.Errorf("%w: line %d: duplicate token hash", ErrMalformed, n)
		}
		id, err := fileIdentity(f[1], f[2:], MethodToken)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		m[sum] = tokenEntry{id: id, expires: expires}
		return nil
	})
	return m, err
}

// fileIdentity validates a subject and an optional comma-separated role
// list from a credentials file.
func fileIdentity(subject string, roles []string, method string) (Identity, error) {
	if err := ValidateSubject(subject); err != nil {
		return Identity{}, err
	}
	id := Identity{Subject: subject, Method: method}
	if len(roles) == 1 && roles[0] != "" {
		for _, r := range strings.Split(roles[0], ",") {
			if err := ValidateSubject(r); err != nil {
				return Identity{}, fmt.Errorf("role: %w", err)
			}
			id.Roles = append(id.Roles, r)
		}
	}
	return id, nil
}

// eachLine calls fn with the 1-based number and the whitespace-separated
// fields of every line that is not blank or a comment.
func eachLine(b []byte, fn func(n int, fields []string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(n, strings.Fields(line)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// NewToken returns a new random token: TokenPrefix followed by 256 random
// bits in unpadded base64url.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("auth: random token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashToken returns the token's hash as written in a token file.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return tokenHashPrefix + hex.EncodeToString(sum[:])
}

// validateNames checks a subject and its roles with ValidateSubject.
func validateNames(subject string, roles []string) error {
	if err := ValidateSubject(subject); err != nil {
		return err
	}
	for _, r := range roles {
		if err := ValidateSubject(r); err != nil {
			return fmt.Errorf("role: %w", err)
		}
	}
	return nil
}

// fileMu serializes the file helpers of this process (AppendToken,
// SetUser); separate processes editing one file are not coordinated.
var fileMu sync.Mutex

// AppendToken adds a token line for token, which never expires, to the
// token file at path, creating it if needed. See AppendTokenExpiring.
func AppendToken(path, token, subject string, roles []string) error {
	return AppendTokenExpiring(path, token, subject, roles, time.Time{})
}

// AppendTokenExpiring adds a token line for token to the token file at
// path, creating it if needed; a non-zero expires is written with the
// line (in UTC, to the second) and the token stops working then. The whole file is rewritten through a synced
// temporary file that is renamed into place (WriteFileAtomic, mode 0600),
// so a crash never leaves a torn last line that would stop the file from
// loading. It validates the subject and roles and refuses a token already
// in the file.
func AppendTokenExpiring(path, token, subject string, roles []string, expires time.Time) error {
	if err := validateNames(subject, roles); err != nil {
		return err
	}
	line := HashToken(token) + " " + subject
	if len(roles) > 0 {
		line += " " + strings.Join(roles, ",")
	}
	if !expires.IsZero() {
		line += " " + tokenExpiresPrefix + expires.UTC().Truncate(time.Second).Format(time.RFC3339)
	}
	line += "\n"
	fileMu.Lock()
	defer fileMu.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("auth: read token file: %w", err)
	}
	prefix := ""
	if len(old) > 0 && old[len(old)-1] != '\n' {
		prefix = "\n"
	}
	if len(old) == 0 {
		prefix = "# go-ldm tokens: sha256:HEX SUBJECT [ROLE,...] [expires=RFC3339]\n"
	}
	content := append(append(old, prefix...), line...)
	if _, err := ParseTokens(content); err != nil {
		return fmt.Errorf("auth: %s: %w", path, err)
	}
	return WriteFileAtomic(path, content, 0o600)
}
