package main

import (
	"fmt"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/service/auth"
)

func newShareCommand() *cobra.Command {
	cf := &clientFlags{}
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "share VOLUME",
		Short: "Print a share link: a signed, expiring, read-only URL for one volume",
		Long: `share asks the server for a share token of VOLUME (it needs admin on the
volume, and a server started with --share-key) and prints links that carry it:

  viewer        the go-ldm viewer, token in ?share=
  zarr          an OME-Zarr (Zarr v2) base URL with the token as a path
                prefix (/share/TOKEN/zarr/VOLUME/): every chunk URL a Zarr
                client appends to it carries the token
  zarr3         the same for Zarr v3 (OME-NGFF 0.5)
  precomputed   the same for Neuroglancer (precomputed://...)

The token reads VOLUME and nothing else, until it expires (--ttl) or is
revoked with 'ldm share revoke ID' on the server's host.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				req := &ldmv1.CreateShareRequest{Volume: args[0]}
				if ttl != 0 {
					req.Ttl = durationpb.New(ttl)
				}
				res, err := c.volumes.CreateShare(cmd.Context(), connect.NewRequest(req))
				if err != nil {
					return c.rpcError("create share", err)
				}
				m := res.Msg
				w := cmd.OutOrStdout()
				base := c.baseURL
				fmt.Fprintf(w, "viewer:      %s/?share=%s&volume=%s\n", base, m.GetToken(), url.QueryEscape(m.GetVolume()))
				fmt.Fprintf(w, "zarr:        %s%s%s/zarr/%s/\n", base, auth.SharePathPrefix, m.GetToken(), m.GetVolume())
				fmt.Fprintf(w, "zarr3:       %s%s%s/zarr3/%s/\n", base, auth.SharePathPrefix, m.GetToken(), m.GetVolume())
				fmt.Fprintf(w, "precomputed: precomputed://%s%s%s/precomputed/%s\n", base, auth.SharePathPrefix, m.GetToken(), m.GetVolume())
				fmt.Fprintf(w, "token:       %s\n", m.GetToken())
				fmt.Fprintf(w, "id:          %s\n", m.GetId())
				fmt.Fprintf(w, "expires:     %s\n", m.GetExpireTime().AsTime().UTC().Format(time.RFC3339))
				return nil
			})
		},
	}
	cf.register(cmd.PersistentFlags())
	cmd.Flags().DurationVar(&ttl, "ttl", auth.DefaultShareTTL, "how long the link works (at most the server's --share-max-ttl)")
	cmd.AddCommand(newShareRevokeCommand())
	return cmd
}

func newShareRevokeCommand() *cobra.Command {
	var file, key string
	var expires string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a share link by its id (run on the server's host)",
		Long: `revoke adds the share id that 'ldm share' printed to the server's revocation
file (ldm serve --share-revocations, by default the --share-key file +
".revoked"). The server reloads the file when it changes (--auth-reload), so
the link stops working without a restart. In a cluster, give every node the
same file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := file
			if path == "" {
				if key == "" {
					return usageError{fmt.Errorf("give --share-revocations FILE (or --share-key FILE, whose revocation file is FILE.revoked), as ldm serve has them")}
				}
				path = key + ".revoked"
			}
			var exp time.Time
			if expires != "" {
				t, err := time.Parse(time.RFC3339, expires)
				if err != nil {
					return usageError{fmt.Errorf("--expires %q: want an RFC 3339 time, as ldm share printed it", expires)}
				}
				exp = t
			}
			if err := auth.RevokeShare(path, args[0], exp); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked share %s in %s (the server stops accepting it at its next reload)\n", args[0], path)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "share-revocations", "", "the server's revocation file")
	cmd.Flags().StringVar(&key, "share-key", "", "the server's share key file (its revocation file is FILE.revoked)")
	cmd.Flags().StringVar(&expires, "expires", "", "the share's expiry (optional; recorded so expired lines can be cleaned up)")
	return cmd
}
