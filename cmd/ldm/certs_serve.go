package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/service/auth"
)

// securityFlags are the TLS and authentication flags of `ldm serve`.
type securityFlags struct {
	tlsCert, tlsKey   string
	clientCA          string
	requireClientCert bool
	tokens, users     string
	authzModel        string
	authzPolicy       string
	reload            time.Duration
	public            []string
	insecure          bool
}

// serveSecurity maps the flag set of each `ldm serve` command to its
// securityFlags.
var serveSecurity sync.Map // *pflag.FlagSet -> *securityFlags

func init() {
	registerServeHook(&serveHook{
		Name: "security",
		Flags: func(fs *pflag.FlagSet) {
			f := &securityFlags{}
			f.register(fs)
			serveSecurity.Store(fs, f)
		},
		Setup: func(ctx context.Context, env *serveEnv) error {
			f, ok := serveSecurity.Load(env.FlagSet)
			if !ok {
				return errors.New("the security flags are not registered on this command")
			}
			return f.(*securityFlags).setup(ctx, env)
		},
	})
}

func (f *securityFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the server; enables TLS (HTTP/2 by ALPN, TLS 1.2+)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.clientCA, "client-ca", "", "PEM CA bundle: client certificates it signed are verified and their common name (and URI/DNS SANs) is the identity")
	fs.BoolVar(&f.requireClientCert, "require-client-cert", false, "fail the TLS handshake without a verified client certificate (needs --client-ca)")
	fs.StringVar(&f.tokens, "tokens", "", "bearer token file (see `ldm token create`)")
	fs.StringVar(&f.users, "users", "", "Basic users file with bcrypt hashes (see `ldm token user`)")
	fs.StringVar(&f.authzModel, "authz-model", "", "Casbin model file replacing the embedded one")
	fs.StringVar(&f.authzPolicy, "authz-policy", "", "Casbin policy file replacing the embedded one (reloaded when it changes)")
	fs.DurationVar(&f.reload, "auth-reload", auth.DefaultReloadInterval, "how often token, users and policy files are checked for changes (0 disables)")
	fs.StringSliceVar(&f.public, "auth-public", auth.DefaultPublic, "procedure prefixes that answer without credentials when authentication is on (health and reflection by default; \"\" requires credentials everywhere)")
	fs.BoolVar(&f.insecure, "insecure", false, "allow a non-loopback --addr without TLS and authentication")
}

// authEnabled reports whether any flag asks for authentication or
// authorization; without one the server authorizes nothing and answers
// everyone (which the loopback rule below confines).
func (f *securityFlags) authEnabled() bool {
	return f.tokens != "" || f.users != "" || f.clientCA != "" || f.authzModel != "" || f.authzPolicy != ""
}

func (f *securityFlags) setup(_ context.Context, env *serveEnv) error {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	if f.clientCA != "" && f.tlsCert == "" {
		return usageError{errors.New("--client-ca needs TLS (--tls-cert and --tls-key)")}
	}
	if f.requireClientCert && f.clientCA == "" {
		return usageError{errors.New("--require-client-cert needs --client-ca")}
	}
	if f.tlsCert != "" {
		cfg, err := auth.ServerTLS{CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.clientCA, RequireClientCert: f.requireClientCert}.Config()
		if err != nil {
			return err
		}
		env.TLSConfig = cfg
	}
	if f.authEnabled() {
		var authns []auth.Authenticator
		if f.tokens != "" {
			t, err := auth.LoadTokens(f.tokens)
			if err != nil {
				return err
			}
			authns = append(authns, t)
		}
		if f.users != "" {
			u, err := auth.LoadUsers(f.users)
			if err != nil {
				return err
			}
			authns = append(authns, u)
		}
		if f.clientCA != "" {
			authns = append(authns, auth.ClientCert{})
		}
		reload := f.reload
		if reload == 0 {
			reload = -1
		}
		a, err := auth.New(auth.Config{
			Authenticators: authns,
			ModelFile:      f.authzModel,
			PolicyFile:     f.authzPolicy,
			ReloadInterval: reload,
			Public:         append([]string{}, f.public...), // non-nil: empty means nothing is public
			Logger:         env.Logger,
		})
		if err != nil {
			return err
		}
		env.OnShutdown(func(context.Context) error { return a.Close() })
		env.Interceptors = append(env.Interceptors, a.Interceptors()...)
		env.Middleware = append(env.Middleware, a.Middleware)
	} else if env.TLSConfig != nil {
		env.Middleware = append(env.Middleware, auth.Middleware)
	}

	loopback := isLoopback(env.Listener.Addr())
	switch {
	case loopback:
	case env.TLSConfig != nil && f.authEnabled():
	case f.insecure:
		env.Logger.Warn("serving on a non-loopback address without TLS and authentication (--insecure): anyone who reaches it can read and change every volume, and credentials travel in clear",
			"addr", env.Listener.Addr().String(), "tls", env.TLSConfig != nil, "auth", f.authEnabled())
	default:
		missing := "TLS (--tls-cert, --tls-key)"
		if env.TLSConfig != nil {
			missing = "authentication (--tokens, --users or --client-ca)"
		} else if f.authEnabled() {
			missing = "TLS (--tls-cert, --tls-key), so credentials would travel in clear"
		}
		return usageError{fmt.Errorf("refusing to serve on %s without %s; use a loopback --addr, configure it, or pass --insecure", env.Listener.Addr(), missing)}
	}
	return nil
}

// isLoopback reports whether a listener address is a loopback IP.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// wrapHandler applies middleware to h, the first element innermost.
func wrapHandler(h http.Handler, mw []func(http.Handler) http.Handler) http.Handler {
	for _, m := range mw {
		h = m(h)
	}
	return h
}
