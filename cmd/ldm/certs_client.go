package main

import (
	"errors"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/service/auth"
)

// clientSecurityFlags are the TLS and credential flags of every client
// subcommand.
type clientSecurityFlags struct {
	cacert, cert, key string
	certKey           string
	token             string
	user              string
}

func (f *clientSecurityFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.cacert, "cacert", "", "PEM CA bundle that verifies the server (default: the system roots)")
	fs.StringVar(&f.cert, "cert", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&f.key, "key", "", "PEM key of --cert")
	fs.StringVar(&f.certKey, "cert-key", "", "same as --key")
	fs.StringVar(&f.token, "token", "", "bearer token (also LDM_TOKEN)")
	fs.StringVar(&f.user, "user", "", "Basic user name; the password comes from LDM_PASSWORD")
}

// configure adds TLS and credentials from the flags to c.
func (f *clientSecurityFlags) configure(c *clientSetup) error {
	if f.certKey != "" {
		if f.key != "" && f.key != f.certKey {
			return usageError{errors.New("--key and --cert-key differ")}
		}
		f.key = f.certKey
	}
	https := strings.HasPrefix(c.BaseURL, "https://")
	if !https && (f.cacert != "" || f.cert != "" || f.key != "") {
		return usageError{errors.New("--cacert, --cert and --key need an https:// --server")}
	}
	if https {
		cfg, err := auth.ClientTLS{CAFile: f.cacert, CertFile: f.cert, KeyFile: f.key}.Config()
		if err != nil {
			return usageError{err}
		}
		c.TLSConfig = cfg
	}
	if f.token != "" && f.user != "" {
		return usageError{errors.New("give --token or --user, not both")}
	}
	creds := auth.Credentials{Token: f.token}
	if f.user != "" {
		creds.Username, creds.Password = f.user, os.Getenv("LDM_PASSWORD")
	}
	if creds != (auth.Credentials{}) {
		c.Options = append(c.Options, connect.WithInterceptors(creds.Interceptor()))
		c.Authorization = creds.Header()
	}
	return nil
}
