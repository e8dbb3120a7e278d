package server

import (
	"log/slog"
	"net"

	"github.com/xcheng85/go-ldm/service/auth"
)

// newAuth builds authentication (tokens, Basic users, client certificates)
// and Casbin authorization from cfg.
func newAuth(cfg Config, log *slog.Logger) (*auth.Auth, error) {
	var authns []auth.Authenticator
	if cfg.Auth.TokensFile != "" {
		t, err := auth.LoadTokens(cfg.Auth.TokensFile)
		if err != nil {
			return nil, err
		}
		authns = append(authns, t)
	}
	if cfg.Auth.UsersFile != "" {
		u, err := auth.LoadUsersLimit(cfg.Auth.UsersFile, cfg.Auth.BasicLimit)
		if err != nil {
			return nil, err
		}
		authns = append(authns, u)
	}
	if cfg.TLS.ClientCAFile != "" {
		authns = append(authns, auth.ClientCert{})
	}
	return auth.New(auth.Config{
		Authenticators: authns,
		ModelFile:      cfg.Auth.ModelFile,
		PolicyFile:     cfg.Auth.PolicyFile,
		ReloadInterval: cfg.Auth.ReloadInterval,
		Public:         cfg.Auth.Public,
		Logger:         log,
	})
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
