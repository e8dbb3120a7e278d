package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/xcheng85/go-ldm/storage"

	"github.com/xcheng85/go-ldm/service/auth"
)

// newAuth builds authentication (share tokens, tokens, Basic users, client
// certificates) and Casbin authorization from cfg. shares is nil unless
// cfg.Auth.ShareKeyFile is set.
func newAuth(cfg Config, log *slog.Logger) (a *auth.Auth, shares *auth.Shares, err error) {
	var authns []auth.Authenticator
	if cfg.Auth.ShareKeyFile != "" {
		key, err := auth.LoadShareKey(cfg.Auth.ShareKeyFile)
		if err != nil {
			return nil, nil, err
		}
		if shares, err = auth.NewShares(key, shareRevocations(cfg.Auth), cfg.Auth.MaxShareTTL); err != nil {
			return nil, nil, err
		}
		// First: the token file's authenticator refuses every bearer
		// token it does not know, share tokens included.
		authns = append(authns, shares)
	}
	if cfg.Auth.TokensFile != "" {
		t, err := auth.LoadTokens(cfg.Auth.TokensFile)
		if err != nil {
			return nil, nil, err
		}
		authns = append(authns, t)
	}
	if cfg.Auth.UsersFile != "" {
		u, err := auth.LoadUsersLimit(cfg.Auth.UsersFile, cfg.Auth.BasicLimit)
		if err != nil {
			return nil, nil, err
		}
		authns = append(authns, u)
	}
	if cfg.TLS.ClientCAFile != "" {
		authns = append(authns, auth.ClientCert{})
	}
	a, err = auth.New(auth.Config{
		Authenticators: authns,
		ModelFile:      cfg.Auth.ModelFile,
		PolicyFile:     cfg.Auth.PolicyFile,
		ReloadInterval: cfg.Auth.ReloadInterval,
		Public:         cfg.Auth.Public,
		Logger:         log,
	})
	return a, shares, err
}

// shareRevocations is the revocation file of share links.
func shareRevocations(c AuthConfig) string {
	if c.ShareRevocationsFile != "" {
		return c.ShareRevocationsFile
	}
	return c.ShareKeyFile + ".revoked"
}

// shareIssuer adapts auth.Shares to service.ShareIssuer.
type shareIssuer struct{ s *auth.Shares }

func (x shareIssuer) IssueShare(volume string, ttl time.Duration) (string, string, time.Time, error) {
	sh, err := x.s.Issue(volume, ttl)
	if errors.Is(err, auth.ErrMalformed) {
		err = fmt.Errorf("%w: %v", storage.ErrInvalidArgument, err)
	}
	return sh.ID, sh.Token, sh.Expires, err
}

// checkExposure refuses to serve a non-loopback address without TLS and
// authentication, unless cfg.Insecure, which is logged as a warning.
func checkExposure(cfg Config, addr net.Addr, tls bool, log *slog.Logger) error {
	authn := cfg.authEnabled()
	switch {
	case isLoopback(addr):
		return nil
	case tls && authn:
		return nil
	case cfg.Insecure:
		log.Warn("serving on a non-loopback address without TLS and authentication (--insecure): anyone who reaches it can read and change every volume, and credentials travel in clear",
			"addr", addr.String(), "tls", tls, "auth", authn)
		return nil
	}
	missing := "TLS (--tls-cert, --tls-key)"
	if tls {
		missing = "authentication (--tokens, --users or --client-ca)"
	} else if authn {
		missing = "TLS (--tls-cert, --tls-key), so credentials would travel in clear"
	}
	return invalid("refusing to serve on %s without %s; use a loopback --addr, configure it, or pass --insecure", addr, missing)
}

// isLoopback reports whether a listener address is a loopback IP.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
