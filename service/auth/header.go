package auth

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Errors returned by the credential parsers and authenticators. The
// interceptor maps all of them to connect.CodeUnauthenticated.
var (
	// ErrMalformed: an Authorization header or a credentials file line that
	// does not parse.
	ErrMalformed = errors.New("malformed credentials")
	// ErrBadCredentials: well-formed credentials that do not match any
	// known token, user or certificate.
	ErrBadCredentials = errors.New("bad credentials")
	// ErrUnsupported: credentials of a scheme no configured authenticator
	// accepts.
	ErrUnsupported = errors.New("unsupported credentials")
)

// Scheme is the authentication scheme of an Authorization header.
type Scheme uint8

const (
	// SchemeNone means the request has no Authorization header.
	SchemeNone Scheme = iota
	// SchemeBearer is "Authorization: Bearer TOKEN" (RFC 6750).
	SchemeBearer
	// SchemeBasic is "Authorization: Basic base64(user:password)" (RFC 7617).
	SchemeBasic
)

// String returns the scheme's name as written in the header.
func (s Scheme) String() string {
	switch s {
	case SchemeBearer:
		return "Bearer"
	case SchemeBasic:
		return "Basic"
	default:
		return "none"
	}
}

// maxHeaderLen bounds the Authorization header value. Real tokens and
// passwords are far shorter; the bound keeps hashing and bcrypt input small
// (bcrypt only uses 72 bytes anyway).
const maxHeaderLen = 4096

// Credential is the parsed content of an Authorization header.
type Credential struct {
	Scheme   Scheme
	Token    string // SchemeBearer
	Username string // SchemeBasic
	Password string // SchemeBasic
}

// ParseAuthorization parses the value of an Authorization header. An empty
// value gives SchemeNone and no error. Scheme names are case-insensitive;
// the credentials must be a single token68 (RFC 9110) after one or more
// spaces. A Basic username must be non-empty and neither part may contain
// control characters. Every failure wraps ErrMalformed, or ErrUnsupported
// for a well-formed header of another scheme.
func ParseAuthorization(v string) (Credential, error) {
	if v == "" {
		return Credential{}, nil
	}
	if len(v) > maxHeaderLen {
		return Credential{}, fmt.Errorf("%w: authorization header longer than %d bytes", ErrMalformed, maxHeaderLen)
	}
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || scheme == "" {
		return Credential{}, fmt.Errorf("%w: authorization header needs a scheme and credentials", ErrMalformed)
	}
	param := strings.TrimLeft(rest, " ")
	if param == "" {
		return Credential{}, fmt.Errorf("%w: empty %s credentials", ErrMalformed, scheme)
	}
	if !isToken68(param) {
		return Credential{}, fmt.Errorf("%w: %s credentials contain characters outside token68", ErrMalformed, scheme)
	}
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return Credential{Scheme: SchemeBearer, Token: param}, nil
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(param)
		if err != nil {
			return Credential{}, fmt.Errorf("%w: Basic credentials are not base64: %v", ErrMalformed, err)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" {
			return Credential{}, fmt.Errorf("%w: Basic credentials need user:password", ErrMalformed)
		}
		if hasControl(user) || hasControl(pass) {
			return Credential{}, fmt.Errorf("%w: Basic credentials contain control characters", ErrMalformed)
		}
		return Credential{Scheme: SchemeBasic, Username: user, Password: pass}, nil
	default:
		if !isToken(scheme) {
			return Credential{}, fmt.Errorf("%w: invalid scheme name", ErrMalformed)
		}
		return Credential{}, fmt.Errorf("%w: scheme %q", ErrUnsupported, scheme)
	}
}

// isToken68 reports whether s matches token68 = 1*( ALPHA / DIGIT / "-" /
// "." / "_" / "~" / "+" / "/" ) *"=".
func isToken68(s string) bool {
	i := 0
	for i < len(s) && s[i] != '=' {
		c := s[i]
		if !(isAlnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			return false
		}
		i++
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (the grammar of scheme
// names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

// FormatBasic returns the Authorization header value for a username and
// password.
func FormatBasic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// FormatBearer returns the Authorization header value for a token.
func FormatBearer(token string) string { return "Bearer " + token }
