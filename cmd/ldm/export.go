package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/client"
)

func newExportCommand() *cobra.Command {
	cf := &clientFlags{}
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "export VOLUME DIR --format zarr",
		Short: "Write a local OME-Zarr copy of a volume",
		Long: `export writes every level of detail of VOLUME into DIR (new or empty) as
OME-Zarr: Zarr v2 arrays with OME-NGFF 0.4 metadata (axes z, y, x; a scale
and translation per level), one chunk file per stored brick, as the server
streams them. zarr-python, napari, TensorStore and vizarr open the
directory; a directory without .zattrs is an export that did not finish.

  ldm export ct ./ct.zarr --format zarr

For one box of one level as NIfTI or NRRD, use 'ldm region get'.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "zarr" {
				return usageError{fmt.Errorf("--format %q: only zarr is supported (for NIfTI or NRRD files use 'ldm region get')", format)}
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				ex := client.Exporter{Volumes: c.volumes, View: &client.ZarrView{BaseURL: c.baseURL, HTTP: c.http, Authorization: c.authz}}
				if !quiet {
					ex.Progress = progressPrinter(cmd.ErrOrStderr(), "exported")
				}
				st, err := ex.ExportZarr(cmd.Context(), args[0], args[1])
				if err != nil {
					return c.rpcError("export", err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "exported %s to %s: %d chunks, %d levels, %.1f MB in %s\n",
					args[0], args[1], st.Bricks, max(st.Volume.GetLodCount(), 1), float64(st.Bytes)/1e6, st.Elapsed.Round(1e6))
				return nil
			})
		},
	}
	cf.register(cmd.PersistentFlags())
	cmd.Flags().StringVar(&format, "format", "zarr", "output format: zarr (OME-Zarr, Zarr v2 + OME-NGFF 0.4)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "do not print progress")
	return cmd
}
