package main

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/server"
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
	shareKey          string
	shareRevocations  string
	shareMaxTTL       time.Duration
}

func (f *securityFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of the server; enables TLS (HTTP/2 by ALPN, TLS 1.2+)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&f.clientCA, "client-ca", "", "PEM CA bundle: client certificates it signed are verified and their common name (and URI/DNS SANs) is the identity")
	fs.BoolVar(&f.requireClientCert, "require-client-cert", false, "fail the TLS handshake without a verified client certificate (needs --client-ca)")
	fs.StringVar(&f.tokens, "tokens", "", "bearer token file (made with 'ldm token create')")
	fs.StringVar(&f.users, "users", "", "Basic users file with bcrypt hashes (made with 'ldm token user')")
	fs.StringVar(&f.authzModel, "authz-model", "", "Casbin model file replacing the embedded one")
	fs.StringVar(&f.authzPolicy, "authz-policy", "", "Casbin policy file replacing the embedded one (reloaded when it changes)")
	fs.DurationVar(&f.reload, "auth-reload", auth.DefaultReloadInterval, "how often token, users and policy files, and the --tls-cert/--tls-key pair, are checked for changes (0 disables)")
	fs.StringSliceVar(&f.public, "auth-public", auth.DefaultPublic, "procedure prefixes that answer without credentials when authentication is on (health and reflection by default; \"\" requires credentials everywhere)")
	fs.StringVar(&f.shareKey, "share-key", "", "key file that signs share links (ldm share); created with 32 random bytes, mode 0600, if missing; enables authentication")
	fs.StringVar(&f.shareRevocations, "share-revocations", "", "file of revoked share ids, written by 'ldm share revoke' and reloaded when it changes (default: the --share-key file + .revoked)")
	fs.DurationVar(&f.shareMaxTTL, "share-max-ttl", auth.DefaultMaxShareTTL, "longest life of a share link")
	fs.BoolVar(&f.insecure, "insecure", false, "allow a non-loopback --addr without TLS and authentication")
}

// apply sets the TLS and authentication fields of cfg from the flags.
func (f *securityFlags) apply(cfg *server.Config) {
	reload := f.reload
	if reload == 0 {
		reload = -1 // the flag's 0 disables reloading
	}
	cfg.TLS = server.TLSConfig{CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.clientCA, RequireClientCert: f.requireClientCert, ReloadInterval: reload}
	cfg.Auth = server.AuthConfig{
		TokensFile:     f.tokens,
		UsersFile:      f.users,
		ModelFile:      f.authzModel,
		PolicyFile:     f.authzPolicy,
		ReloadInterval: reload,
		Public:         append([]string{}, f.public...), // non-nil: empty means nothing is public

		ShareKeyFile:         f.shareKey,
		ShareRevocationsFile: f.shareRevocations,
		MaxShareTTL:          f.shareMaxTTL,
	}
	cfg.Insecure = f.insecure
}
