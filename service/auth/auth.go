package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
)

// DefaultPublic lists the procedure prefixes that answer without
// credentials by default: gRPC health checking and server reflection.
var DefaultPublic = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// DefaultReloadInterval is how often credentials and policy files are
// checked for changes.
const DefaultReloadInterval = 2 * time.Second

// Log attribute keys.
const (
	logSubject   = "subject"
	logMethod    = "method"
	logProcedure = "procedure"
	logObject    = "object"
	logAction    = "action"
	logReason    = "reason"
	logFile      = "file"
)

// Config configures New. The zero value authenticates nobody (every caller
// is "anonymous") and authorizes with the embedded default policy, which
// grants the anonymous subject nothing.
type Config struct {
	// Authenticators are tried in order; the first that recognizes the
	// request's credentials decides. Credentials files among them (*Tokens,
	// *Users) are reloaded when they change.
	Authenticators []Authenticator
	// ModelFile and PolicyFile replace the embedded Casbin model and
	// policy. Both are reloaded when they change.
	ModelFile, PolicyFile string
	// Public lists procedure prefixes that skip authentication and
	// authorization. nil means DefaultPublic; an empty non-nil slice makes
	// every procedure need authorization.
	Public []string
	// ReloadInterval is how often files are checked for changes: 0 means
	// DefaultReloadInterval, a negative value disables reloading.
	ReloadInterval time.Duration
	// Logger receives denials (info) and reloads; nil means slog.Default().
	Logger *slog.Logger
}

// reloader is a credentials source backed by a file.
type reloader interface {
	Path() string
	Reload() error
}

// Auth is the authentication and authorization of one server. Create it
// with New, install Interceptors on every handler and Middleware around the
// mux, and Close it when the server stops.
type Auth struct {
	authns []Authenticator
	authz  *Authorizer
	public []string
	log    *slog.Logger

	stop    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

// New loads the policy and starts watching files for changes.
func New(cfg Config) (*Auth, error) {
	az, err := NewAuthorizer(cfg.ModelFile, cfg.PolicyFile)
	if err != nil {
		return nil, err
	}
	a := &Auth{
		authns: append([]Authenticator(nil), cfg.Authenticators...),
		authz:  az,
		public: cfg.Public,
		log:    cfg.Logger,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	if a.public == nil {
		a.public = DefaultPublic
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("component", "auth")
	for _, x := range a.authns {
		if x == nil {
			return nil, errors.New("auth: nil authenticator")
		}
	}

	var files []watched
	if cfg.ModelFile != "" || cfg.PolicyFile != "" {
		files = append(files, watched{paths: nonEmpty(cfg.ModelFile, cfg.PolicyFile), reload: az.Reload})
	}
	for _, x := range a.authns {
		if r, ok := x.(reloader); ok {
			files = append(files, watched{paths: []string{r.Path()}, reload: r.Reload})
		}
	}
	interval := cfg.ReloadInterval
	if interval == 0 {
		interval = DefaultReloadInterval
	}
	if interval < 0 || len(files) == 0 {
		close(a.done)
		return a, nil
	}
	for i := range files {
		files[i].sum, _ = files[i].digest()
		files[i].pending = files[i].sum
	}
	go a.watch(interval, files)
	return a, nil
}

// Authorizer returns the policy in use.
func (a *Auth) Authorizer() *Authorizer { return a.authz }

// Close stops watching files. It is safe to call more than once.
func (a *Auth) Close() error {
	a.closeMu.Do(func() { close(a.stop) })
	<-a.done
	return nil
}

// Interceptors returns the authentication and the authorization
// interceptor, in that order. Both wrap unary and streaming handlers and
// leave client calls alone.
func (a *Auth) Interceptors() []connect.Interceptor {
	return []connect.Interceptor{&authnInterceptor{a}, &authzInterceptor{a}}
}

func (a *Auth) isPublic(procedure string) bool {
	for _, p := range a.public {
		if strings.HasPrefix(procedure, p) {
			return true
		}
	}
	return false
}

// watched is a set of files with one reload function.
type watched struct {
	paths   []string
	reload  func() error
	sum     [sha256.Size]byte // the content last loaded (or tried)
	pending [sha256.Size]byte // a changed content seen once, not loaded yet
	empty   bool              // the last check found a file empty or missing
}

// digest hashes the files' contents (a missing file hashes as empty) and
// reports whether any of them is empty or missing.
func (w *watched) digest() (sum [sha256.Size]byte, empty bool) {
	h := sha256.New()
	for _, p := range w.paths {
		b, _ := os.ReadFile(p)
		empty = empty || len(b) == 0
		fmt.Fprintf(h, "%d\x00", len(b))
		h.Write(b)
	}
	h.Sum(sum[:0])
	return sum, empty
}

// watch polls the files and reloads those whose content changed. A
// changed content is loaded only when two checks in a row see it, so a file
// caught in the middle of being rewritten in place is normally not loaded,
// and an empty or missing file is never loaded: a rewrite in place
// truncates first, and on a busy machine the empty file can outlast two
// checks, while an empty token or policy file is valid and would revoke
// everything. (To revoke every token, leave a comment line in the file.) A
// failed reload keeps the old content in force and is retried when the
// file changes again.
func (a *Auth) watch(interval time.Duration, files []watched) {
	defer close(a.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		for i := range files {
			f := &files[i]
			s, empty := f.digest()
			if empty {
				if !f.empty {
					a.log.Warn("file is empty or missing; keeping the previous version", logFile, strings.Join(f.paths, ","))
				}
				f.empty = true
				f.pending = f.sum
				continue
			}
			f.empty = false
			if bytes.Equal(s[:], f.sum[:]) {
				f.pending = f.sum
				continue
			}
			if !bytes.Equal(s[:], f.pending[:]) {
				f.pending = s // changed: wait one more check for it to settle
				continue
			}
			f.sum = s
			if err := f.reload(); err != nil {
				a.log.Error("reload failed; keeping the previous version", logFile, strings.Join(f.paths, ","), "error", err)
				continue
			}
			a.log.Info("reloaded", logFile, strings.Join(f.paths, ","))
		}
	}
}

func nonEmpty(s ...string) []string {
	var out []string
	for _, x := range s {
		if x != "" {
			out = append(out, x)
		}
	}
	return out
}

// authenticate finds the identity of a call from its headers and the TLS
// state Middleware stored in ctx.
func (a *Auth) authenticate(ctx context.Context, procedure string, h map[string][]string) (Identity, error) {
	var authz string
	if v := h["Authorization"]; len(v) > 0 {
		authz = v[0]
		if len(v) > 1 {
			return a.unauthenticated(procedure, "", fmt.Errorf("%w: more than one Authorization header", ErrMalformed))
		}
	}
	cred, err := ParseAuthorization(authz)
	if err != nil {
		return a.unauthenticated(procedure, "", err)
	}
	req := &Request{Procedure: procedure, Header: h, TLS: TLSFrom(ctx), Peer: PeerFrom(ctx), Credential: cred}
	for _, x := range a.authns {
		id, ok, err := x.Authenticate(ctx, req)
		if err != nil {
			return a.unauthenticated(procedure, cred.Scheme.String(), err)
		}
		if ok {
			return id, nil
		}
	}
	if cred.Scheme != SchemeNone {
		return a.unauthenticated(procedure, cred.Scheme.String(), fmt.Errorf("%w: no authenticator accepts %s", ErrUnsupported, cred.Scheme))
	}
	return Identity{Subject: Anonymous, Method: MethodAnonymous}, nil
}

func (a *Auth) unauthenticated(procedure, method string, err error) (Identity, error) {
	a.log.Info("authentication failed", logProcedure, procedure, logMethod, method, logReason, err.Error())
	return Identity{}, authError(err)
}
