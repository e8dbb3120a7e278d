package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Anonymous is the subject of a request that carries no credentials.
const Anonymous = "anonymous"

// RolePrefix is prepended to the roles an identity carries (from the token
// or users file) to form the policy subject of the role: role "reader" is
// "role:reader" in the policy.
const RolePrefix = "role:"

// Methods by which an Identity was established.
const (
	MethodAnonymous = "anonymous"
	MethodToken     = "token"
	MethodBasic     = "basic"
	MethodCert      = "cert"
)

// Identity is an authenticated subject. It is a value: the interceptors put
// it in the context and never change it.
type Identity struct {
	// Subject is the primary name: the token's or user's subject, or a
	// certificate's common name (its first URI or DNS name if the CN is
	// empty).
	Subject string
	// Aliases are further names the subject is known by (a certificate's
	// URI and DNS SANs). The policy may grant to any of them.
	Aliases []string
	// Roles come from the token or users file, without RolePrefix.
	Roles []string
	// Method is one of the Method constants (or MethodShare).
	Method string
	// ShareVolume is set for a share token (Method MethodShare): the one
	// volume the identity may read. Such an identity may do nothing else,
	// whatever the policy says.
	ShareVolume string
}

// Anonymous reports whether the identity carries no credentials.
func (id Identity) Anonymous() bool { return id.Method == MethodAnonymous || id.Subject == "" }

// subjects returns the policy subjects of the identity: the subject, the
// aliases and the prefixed roles, in that order.
func (id Identity) subjects() []string {
	s := make([]string, 0, 1+len(id.Aliases)+len(id.Roles))
	if id.Subject == "" {
		s = append(s, Anonymous)
	} else {
		s = append(s, id.Subject)
	}
	s = append(s, id.Aliases...)
	for _, r := range id.Roles {
		s = append(s, RolePrefix+r)
	}
	return s
}

// ValidateSubject returns an error wrapping ErrMalformed unless name can be
// an authenticated subject, alias or role: non-empty, at most 256 bytes,
// printable, without spaces, commas or colons reserved by the file formats
// (a URI SAN may contain ':'; see validateAlias), not "anonymous" and not
// starting with RolePrefix. Reserving those two keeps a credential from
// impersonating the anonymous subject or a role.
func ValidateSubject(name string) error {
	if err := validateName(name); err != nil {
		return err
	}
	if strings.ContainsRune(name, ':') {
		return fmt.Errorf("%w: subject %q contains ':'", ErrMalformed, name)
	}
	return nil
}

func validateName(name string) error {
	switch {
	case name == "" || len(name) > 256:
		return fmt.Errorf("%w: subject must be 1 to 256 bytes", ErrMalformed)
	case name == Anonymous:
		return fmt.Errorf("%w: subject %q is reserved", ErrMalformed, name)
	case strings.HasPrefix(name, RolePrefix):
		return fmt.Errorf("%w: subject %q uses the reserved prefix %q", ErrMalformed, name, RolePrefix)
	case strings.ContainsAny(name, " ,\t#\"'"):
		return fmt.Errorf("%w: subject %q contains a space, comma, quote or '#'", ErrMalformed, name)
	case hasControl(name):
		return fmt.Errorf("%w: subject contains control characters", ErrMalformed)
	}
	return nil
}

type identityKey struct{}
type tlsKey struct{}
type peerKey struct{}

// WithIdentity returns a copy of ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the identity the authentication interceptor put in
// ctx, and whether there was one.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Middleware returns next wrapped so that the request's TLS connection
// state (r.TLS) and the client's IP address are in the request context,
// where the ClientCert authenticator and the Basic rate limit find them.
// It never rejects a request, so other endpoints on the same server (Raft,
// static files) pass through unchanged.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := context.WithValue(r.Context(), peerKey{}, peerHost(r.RemoteAddr))
		if r.TLS != nil {
			ctx = context.WithValue(ctx, tlsKey{}, r.TLS)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// peerHost returns the IP address of a host:port remote address.
func peerHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// PeerFrom returns the client IP address Middleware stored in ctx, or "".
func PeerFrom(ctx context.Context) string {
	p, _ := ctx.Value(peerKey{}).(string)
	return p
}

// TLSFrom returns the TLS connection state Middleware stored in ctx, or nil.
func TLSFrom(ctx context.Context) *tls.ConnectionState {
	cs, _ := ctx.Value(tlsKey{}).(*tls.ConnectionState)
	return cs
}

// Request is what an Authenticator sees of a call.
type Request struct {
	Procedure  string
	Header     http.Header
	TLS        *tls.ConnectionState // nil without TLS or without Middleware
	Peer       string               // the client's IP address; "" without Middleware
	Credential Credential           // the parsed Authorization header
}

// Authenticator turns one kind of credentials into an Identity.
type Authenticator interface {
	// Authenticate returns (identity, true, nil) when the request carries
	// credentials of its kind and they are valid; (zero, false, nil) when
	// the request carries none of its kind; and an error wrapping
	// ErrBadCredentials or ErrMalformed when they are present but invalid.
	Authenticate(ctx context.Context, r *Request) (Identity, bool, error)
}

// ClientCert authenticates a request by its verified TLS client
// certificate: the leaf of the first verified chain. The server's
// tls.Config must verify client certificates (ClientCAs with
// VerifyClientCertIfGiven or RequireAndVerifyClientCert); unverified
// certificates are ignored. The subject is the certificate's common name
// (or its first URI or DNS SAN when the CN is empty); URI and DNS SANs
// become aliases.
type ClientCert struct{}

// Authenticate implements Authenticator.
func (ClientCert) Authenticate(_ context.Context, r *Request) (Identity, bool, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return Identity{}, false, nil
	}
	id, err := CertIdentity(r.TLS.VerifiedChains[0][0])
	if err != nil {
		return Identity{}, false, err
	}
	return id, true, nil
}

// CertIdentity returns the identity a verified certificate names. It fails
// with ErrBadCredentials when the certificate names nothing usable.
func CertIdentity(c *x509.Certificate) (Identity, error) {
	var names []string
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	for _, u := range c.URIs {
		names = append(names, u.String())
	}
	names = append(names, c.DNSNames...)
	if len(names) == 0 {
		return Identity{}, fmt.Errorf("%w: client certificate names no subject", ErrBadCredentials)
	}
	for _, n := range names {
		if err := validateName(n); err != nil {
			return Identity{}, fmt.Errorf("%w: client certificate: %v", ErrBadCredentials, err)
		}
	}
	return Identity{Subject: names[0], Aliases: names[1:], Method: MethodCert}, nil
}

// Middleware returns next wrapped with the package Middleware (the TLS
// state in the request context) and one more rule for an authenticating
// server: GET responses (Connect's cacheable unary reads) that say
// "Cache-Control: public" say "private" instead, and any other
// Cache-Control of a GET (for example "no-cache") gets "private" added
// unless it says "no-store", so a shared cache never hands a response
// fetched with one caller's credentials to another.
func (a *Auth) Middleware(next http.Handler) http.Handler {
	return Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w = &privateCache{ResponseWriter: w}
		}
		next.ServeHTTP(w, r)
	}))
}

// privateCache rewrites a public Cache-Control header to private before
// the header is sent.
type privateCache struct {
	http.ResponseWriter
	done bool
}

func (p *privateCache) fix() {
	if p.done {
		return
	}
	p.done = true
	h := p.ResponseWriter.Header()
	if cc := h.Get("Cache-Control"); cc != "" {
		parts := strings.Split(cc, ",")
		private := false
		for i, part := range parts {
			switch d := strings.ToLower(strings.TrimSpace(part)); d {
			case "public":
				parts[i] = "private"
				private = true
			case "private", "no-store":
				private = true
			}
		}
		if !private {
			parts = append(parts, " private")
		}
		h.Set("Cache-Control", strings.Join(parts, ","))
	}
}

func (p *privateCache) WriteHeader(code int) { p.fix(); p.ResponseWriter.WriteHeader(code) }

func (p *privateCache) Write(b []byte) (int, error) { p.fix(); return p.ResponseWriter.Write(b) }

// Flush implements http.Flusher.
func (p *privateCache) Flush() {
	p.fix()
	if f, ok := p.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (p *privateCache) Unwrap() http.ResponseWriter { return p.ResponseWriter }
