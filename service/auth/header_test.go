package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseAuthorization_Cases(t *testing.T) {
	t.Parallel()
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		in   string
		want Credential
		err  error
	}{
		{"empty", "", Credential{}, nil},
		{"bearer", "Bearer ldm_abc-DEF_123", Credential{Scheme: SchemeBearer, Token: "ldm_abc-DEF_123"}, nil},
		{"bearer_lowercase_scheme", "bearer tok", Credential{Scheme: SchemeBearer, Token: "tok"}, nil},
		{"bearer_two_spaces", "Bearer  tok", Credential{Scheme: SchemeBearer, Token: "tok"}, nil},
		{"bearer_padding", "Bearer abc==", Credential{Scheme: SchemeBearer, Token: "abc=="}, nil},
		{"basic", "Basic " + b64("bob:s3cret:x"), Credential{Scheme: SchemeBasic, Username: "bob", Password: "s3cret:x"}, nil},
		{"basic_empty_password", "Basic " + b64("bob:"), Credential{Scheme: SchemeBasic, Username: "bob"}, nil},
		{"no_credentials", "Bearer", Credential{}, ErrMalformed},
		{"only_spaces", "Bearer   ", Credential{}, ErrMalformed},
		{"no_scheme", " tok", Credential{}, ErrMalformed},
		{"bearer_inner_space", "Bearer a b", Credential{}, ErrMalformed},
		{"bearer_padding_middle", "Bearer a=b", Credential{}, ErrMalformed},
		{"bearer_control", "Bearer a\x00b", Credential{}, ErrMalformed},
		{"basic_not_base64", "Basic !!!", Credential{}, ErrMalformed},
		{"basic_bad_base64", "Basic abc", Credential{}, ErrMalformed},
		{"basic_no_colon", "Basic " + b64("bob"), Credential{}, ErrMalformed},
		{"basic_empty_user", "Basic " + b64(":pw"), Credential{}, ErrMalformed},
		{"basic_control", "Basic " + b64("bob:p\nw"), Credential{}, ErrMalformed},
		{"other_scheme", "Digest abc", Credential{}, ErrUnsupported},
		{"bad_scheme", "B@d abc", Credential{}, ErrMalformed},
		{"too_long", "Bearer " + strings.Repeat("a", maxHeaderLen), Credential{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.in)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("ParseAuthorization(%q) error = %v, want %v", tt.in, err, tt.err)
			}
			if got != tt.want {
				t.Fatalf("ParseAuthorization(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseAuthorization_RoundTrip(t *testing.T) {
	t.Parallel()
	c, err := ParseAuthorization(FormatBasic("alice", "pa:ss word"))
	if err != nil || c.Username != "alice" || c.Password != "pa:ss word" {
		t.Fatalf("basic round trip = %+v, %v", c, err)
	}
	c, err = ParseAuthorization(FormatBearer("ldm_x"))
	if err != nil || c.Token != "ldm_x" {
		t.Fatalf("bearer round trip = %+v, %v", c, err)
	}
}

// FuzzParseAuthorization checks that the parser never panics, that every
// error wraps one of its sentinels, and that what it accepts is consistent:
// a Bearer token is token68, a Basic credential formats back to a header
// that parses to the same value.
func FuzzParseAuthorization(f *testing.F) {
	for _, s := range []string{
		"", "Bearer ldm_abc", "bearer x==", "Basic " + base64.StdEncoding.EncodeToString([]byte("u:p")),
		"Basic ", "Digest a", "Bearer a b", "Basic @@@", "\x00", "Bearer \xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := ParseAuthorization(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			if c != (Credential{}) {
				t.Fatalf("error with non-zero credential %+v", c)
			}
			return
		}
		switch c.Scheme {
		case SchemeNone:
			if in != "" {
				t.Fatalf("SchemeNone for non-empty %q", in)
			}
		case SchemeBearer:
			if !isToken68(c.Token) || c.Username != "" || c.Password != "" {
				t.Fatalf("bad bearer credential %+v from %q", c, in)
			}
			c2, err := ParseAuthorization(FormatBearer(c.Token))
			if err != nil || c2 != c {
				t.Fatalf("bearer %q does not round-trip: %+v, %v", c.Token, c2, err)
			}
		case SchemeBasic:
			if c.Username == "" || strings.Contains(c.Username, ":") || hasControl(c.Username) || hasControl(c.Password) {
				t.Fatalf("bad basic credential %+v from %q", c, in)
			}
			c2, err := ParseAuthorization(FormatBasic(c.Username, c.Password))
			if err != nil || c2 != c {
				t.Fatalf("basic %+v does not round-trip: %+v, %v", c, c2, err)
			}
		default:
			t.Fatalf("unknown scheme %d", c.Scheme)
		}
	})
}
