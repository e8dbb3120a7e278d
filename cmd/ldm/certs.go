package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/internal/pki"
)

// newCertsCommand is `ldm certs`: a small certificate authority for TLS
// and mutual TLS.
func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a CA and the server and client certificates for TLS and mutual TLS",
		Long: `certs makes the certificates a deployment needs, with no other tools:

  ldm certs init                                  a CA in ./pki (ca.pem, ca-key.pem)
  ldm certs issue --server localhost,127.0.0.1    ./pki/server.pem and server-key.pem
  ldm certs issue --client root                   ./pki/root.pem and root-key.pem

Then:

  ldm serve --addr :8443 --tls-cert pki/server.pem --tls-key pki/server-key.pem \
            --client-ca pki/ca.pem
  ldm volume list --server https://localhost:8443 --cacert pki/ca.pem \
            --cert pki/root.pem --key pki/root-key.pem

A client certificate's common name is the identity the server authorizes
("root" is the administrator in the default policy). Server certificates are
valid for client authentication too, so cluster nodes can present them to
each other. Keys are written with mode 0600; existing files are never
replaced without --force.`,
	}
	cmd.AddCommand(newCertsInitCommand(), newCertsIssueCommand())
	return cmd
}

func newCertsInitCommand() *cobra.Command {
	var (
		dir, cn string
		days    int
		force   bool
	)
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make a certificate authority (ca.pem, ca-key.pem)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if days <= 0 {
				return usageError{fmt.Errorf("--days %d: must be positive", days)}
			}
			ca, err := pki.InitCA(dir, cn, pki.Options{ValidFor: time.Duration(days) * 24 * time.Hour}, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (CA %q, valid until %s)\n",
				filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile), ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.DateOnly))
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "pki", "directory of the CA and certificates")
	fs.StringVar(&cn, "cn", "go-ldm CA", "common name of the CA")
	fs.IntVar(&days, "days", 3650, "validity in days")
	fs.BoolVar(&force, "force", false, "replace an existing CA (every certificate it issued stops working)")
	return cmd
}

func newCertsIssueCommand() *cobra.Command {
	var (
		dir, client, name string
		hosts, uris       []string
		days              int
		force             bool
	)
	cmd := &cobra.Command{
		Use:   "issue (--server HOST,IP... | --client NAME)",
		Short: "Issue a server or client certificate signed by the CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (len(hosts) == 0) == (client == "") {
				return usageError{fmt.Errorf("give exactly one of --server HOST,IP... and --client NAME")}
			}
			if days <= 0 {
				return usageError{fmt.Errorf("--days %d: must be positive", days)}
			}
			ca, err := pki.LoadCA(dir)
			if err != nil {
				return err
			}
			o := pki.Options{ValidFor: time.Duration(days) * 24 * time.Hour, URIs: uris}
			var certPEM, keyPEM []byte
			if client != "" {
				if name == "" {
					name = client
				}
				certPEM, keyPEM, err = ca.IssueClient(client, o)
			} else {
				if name == "" {
					name = "server"
				}
				certPEM, keyPEM, err = ca.IssueServer(hosts, o)
			}
			if err != nil {
				return err
			}
			certPath, keyPath, err := pki.WritePair(dir, name, certPEM, keyPEM, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", certPath, keyPath)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&dir, "dir", "pki", "directory of the CA and certificates")
	fs.StringSliceVar(&hosts, "server", nil, "issue a server certificate for these host names and IP addresses (comma-separated)")
	fs.StringVar(&client, "client", "", "issue a client certificate with this common name (the identity)")
	fs.StringVar(&name, "name", "", "base name of the files (default: \"server\", or the client name)")
	fs.StringSliceVar(&uris, "uri", nil, "URI SANs to add (for example spiffe://ldm/ingest); the server also accepts them as identities")
	fs.IntVar(&days, "days", 365, "validity in days (never past the CA's)")
	fs.BoolVar(&force, "force", false, "replace existing files")
	return cmd
}
