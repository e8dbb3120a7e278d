package auth

// Users file format (text, UTF-8, one user per line, like htpasswd):
//
//	# comment
//	<name>:<bcrypt hash>[:<role>[,<role>...]]
//
// The hash is a bcrypt hash ($2a$, $2b$ or $2y$) as produced by
// golang.org/x/crypto/bcrypt or `htpasswd -B`. Names follow
// ValidateSubject. The file should be mode 0600.

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"
)

type user struct {
	hash []byte
	id   Identity
}

// usersState is one loaded users file and the verification cache that
// belongs to it; a reload starts a new cache.
type usersState struct {
	users map[string]user
	// dummy is a hash at the highest cost in the file, compared against
	// for unknown users so that their answer takes as long as a known
	// user's wrong password (bcrypt's time grows with the cost, so a hash
	// of another cost would tell which names exist).
	dummy []byte
	mu    sync.Mutex
	cache map[[sha256.Size]byte]bool
}

// maxBasicCache bounds the verification cache; when full it starts over.
const maxBasicCache = 4096

// Users authenticates Basic credentials against a users file of bcrypt
// hashes. bcrypt is slow on purpose, so the result of a check is cached
// under an HMAC of the username and password with a per-process random
// key: a repeated request costs one HMAC, not one bcrypt. The cache holds
// no passwords and is dropped when the file is reloaded. Checks that are
// not cached run bcrypt within a BasicLimit: a bounded number at once, and
// a bounded rate of failures per client IP address and per username;
// beyond it a check is refused (ErrRateLimited) without running bcrypt.
// Users is safe for concurrent use.
type Users struct {
	path  string
	key   [32]byte
	state atomic.Pointer[usersState]
	limit *limiter
}

// LoadUsers reads a users file, with the default BasicLimit.
func LoadUsers(path string) (*Users, error) { return LoadUsersLimit(path, BasicLimit{}) }

// LoadUsersLimit reads a users file; bcrypt checks run within limit.
func LoadUsersLimit(path string, limit BasicLimit) (*Users, error) {
	u := &Users{path: path, limit: newLimiter(limit)}
	if _, err := rand.Read(u.key[:]); err != nil {
		return nil, fmt.Errorf("auth: random key: %w", err)
	}
	if err := u.Reload(); err != nil {
		return nil, err
	}
	return u, nil
}

// Path returns the file the users were read from.
func (u *Users) Path() string { return u.path }

// Reload reads the file again. On error the old users stay.
func (u *Users) Reload() error {
	b, err := os.ReadFile(u.path)
	if err != nil {
		return fmt.Errorf("auth: read users file: %w", err)
	}
	m, err := parseUsers(b)
	if err != nil {
		return fmt.Errorf("auth: %s: %w", u.path, err)
	}
	cost := bcrypt.DefaultCost
	if len(m) > 0 {
		cost = bcrypt.MinCost
		for _, r := range m {
			c, _ := bcrypt.Cost(r.hash) // parseUsers checked it
			cost = max(cost, c)
		}
	}
	d, err := bcrypt.GenerateFromPassword(u.key[:16], cost)
	if err != nil {
		return fmt.Errorf("auth: dummy hash: %w", err)
	}
	u.state.Store(&usersState{users: m, dummy: d, cache: make(map[[sha256.Size]byte]bool)})
	return nil
}

// Len returns the number of users.
func (u *Users) Len() int { return len(u.state.Load().users) }

// BasicStats are counters of a Users' bcrypt checks.
type BasicStats struct {
	Checks int64 // bcrypt checks run
	Peak   int64 // the most that ran at once
}

// Stats returns the counters of bcrypt checks since LoadUsers.
func (u *Users) Stats() BasicStats {
	return BasicStats{Checks: u.limit.runs.Load(), Peak: u.limit.peak.Load()}
}

// Authenticate implements Authenticator for SchemeBasic. A check that is
// not cached is refused with a *RateLimitError, without running bcrypt,
// when the client (r.Peer) or the username has failed too often or too
// many checks are waiting (see BasicLimit).
func (u *Users) Authenticate(ctx context.Context, r *Request) (Identity, bool, error) {
	if r.Credential.Scheme != SchemeBasic {
		return Identity{}, false, nil
	}
	st := u.state.Load()
	name, pass := r.Credential.Username, r.Credential.Password
	mac := hmac.New(sha256.New, u.key[:])
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write([]byte(pass))
	var k [sha256.Size]byte
	mac.Sum(k[:0])

	rec, known := st.users[name]
	st.mu.Lock()
	ok, cached := st.cache[k]
	st.mu.Unlock()
	if !cached {
		// Unknown names get buckets too, so that being refused does not
		// tell which names exist.
		keys := []string{"ip:" + r.Peer, "user:" + name}
		if err := u.limit.take(keys...); err != nil {
			return Identity{}, false, err
		}
		err := u.limit.run(ctx, func() {
			if known {
				ok = bcrypt.CompareHashAndPassword(rec.hash, []byte(pass)) == nil
			} else {
				_ = bcrypt.CompareHashAndPassword(st.dummy, []byte(pass))
			}
		})
		if err != nil {
			u.limit.refund(keys...) // nothing was checked
			return Identity{}, false, err
		}
		if known && ok {
			u.limit.refund(keys...)
		}
		st.mu.Lock()
		if len(st.cache) >= maxBasicCache {
			clear(st.cache)
		}
		st.cache[k] = ok
		st.mu.Unlock()
	}
	if !known || !ok {
		return Identity{}, false, fmt.Errorf("%w: wrong username or password", ErrBadCredentials)
	}
	return rec.id, true, nil
}

func parseUsers(b []byte) (map[string]user, error) {
	m := make(map[string]user)
	err := eachLine(b, func(n int, f []string) error {
		if len(f) != 1 {
			return fmt.Errorf("%w: line %d: want NAME:BCRYPT[:ROLES] without spaces", ErrMalformed, n)
		}
		parts := strings.Split(f[0], ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("%w: line %d: want NAME:BCRYPT[:ROLES]", ErrMalformed, n)
		}
		if _, err := bcrypt.Cost([]byte(parts[1])); err != nil {
			return fmt.Errorf("%w: line %d: not a bcrypt hash: %v", ErrMalformed, n, err)
		}
		id, err := fileIdentity(parts[0], parts[2:], MethodBasic)
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := m[parts[0]]; dup {
			return fmt.Errorf("%w: line %d: duplicate user %q", ErrMalformed, n, parts[0])
		}
		m[parts[0]] = user{hash: []byte(parts[1]), id: id}
		return nil
	})
	return m, err
}

// SetUser adds or replaces a user in the users file at path with a bcrypt
// hash of password at the given cost (bcrypt.DefaultCost if 0). The file is
// rewritten through a temporary file, synced and renamed, with mode 0600;
// other lines are kept as they were.
func SetUser(path, name, password string, roles []string, cost int) error {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if password == "" {
		return fmt.Errorf("%w: empty password", ErrMalformed)
	}
	if len(password) > 72 {
		return fmt.Errorf("%w: password longer than 72 bytes (bcrypt's limit)", ErrMalformed)
	}
	if err := validateNames(name, roles); err != nil {
		return err
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return fmt.Errorf("auth: bcrypt: %w", err)
	}
	line := name + ":" + string(h)
	if len(roles) > 0 {
		line += ":" + strings.Join(roles, ",")
	}
	fileMu.Lock()
	defer fileMu.Unlock()
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("auth: read users file: %w", err)
	}
	var out []string
	replaced := false
	if len(old) == 0 {
		out = append(out, "# go-ldm users: NAME:BCRYPT[:ROLE,...]")
	}
	for _, l := range strings.SplitAfter(string(old), "\n") {
		if l == "" {
			continue
		}
		if strings.HasPrefix(strings.TrimSpace(l), name+":") {
			if !replaced {
				out = append(out, line)
				replaced = true
			}
			continue
		}
		out = append(out, strings.TrimRight(l, "\n"))
	}
	if !replaced {
		out = append(out, line)
	}
	content := []byte(strings.Join(out, "\n") + "\n")
	if _, err := parseUsers(content); err != nil {
		return fmt.Errorf("auth: %s: %w", path, err)
	}
	return WriteFileAtomic(path, content, 0o600)
}

// WriteFileAtomic writes b to path through a temporary file in the same
// directory: write, sync, rename, sync the directory. Readers see the old
// or the new content, never a mix.
func WriteFileAtomic(path string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("auth: create temporary file: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return fail(fmt.Errorf("auth: chmod: %w", err))
	}
	if _, err := f.Write(b); err != nil {
		return fail(fmt.Errorf("auth: write: %w", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("auth: sync: %w", err))
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("auth: close: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("auth: rename: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("auth: open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("auth: sync directory: %w", err)
	}
	return nil
}
