package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

func newImportCommand() *cobra.Command {
	cf := &clientFlags{}
	spec := &volumeSpec{}
	var name string
	var demo, quiet bool
	ff := &fileFlags{}
	cmd := &cobra.Command{
		Use:   "import [FILE] --name NAME --shape XxYxZ --dtype T",
		Short: "Import a volume file (NIfTI-1, NRRD or raw) or the demo phantom into a new volume",
		Long: `import reads a volume file: raw (voxels little-endian, x fastest, then y, then z;
give --shape and --dtype), NIfTI-1 or NRRD (shape, type, spacing, byte order and the
voxel-to-world transform come from the header; a file that cannot be read whole creates nothing), cuts it into bricks,
builds the levels of detail (each the mean of 2x2x2 voxels of the level below), and
sends the bricks with WriteTileStream.

  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16
  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16 --spacing 0.7,0.7,1 \
      --orientation LPS --space LPS --origin -180,-200,-350
                                    where the raw voxels sit: axis directions, world position of voxel 0
  ldm import brain.nii.gz           NIfTI-1 (.nii, .nii.gz, .hdr/.img): shape, type, spacing from the header
  ldm import scan.nhdr --name scan  NRRD (raw or gzip encoding, attached or detached header)
  ldm import fmri.nii --time 3      one time point of a 4D image
  ldm import --demo                 the 256^3 demo phantom as volume "demo"`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !demo && len(args) == 1 {
				if ok, err := ff.headered(args[0]); err != nil {
					return err
				} else if ok {
					return importFile(cmd, cf, spec, ff, args[0], name, quiet)
				}
			}
			var src io.ReaderAt
			var v *ldmv1.Volume
			switch {
			case demo && len(args) == 0:
				if name == "" {
					name = demoVolume
				}
				v = apiconv.MetaToAPI(pyramid.PhantomMeta(name))
				src = pyramid.Phantom()
			case !demo && len(args) == 1:
				if name == "" {
					return usageError{errors.New("--name is required: the name of the new volume")}
				}
				if spec.shape == "" {
					return usageError{errors.New("--shape is required: the size of the raw volume in voxels, XxYxZ")}
				}
				var err error
				if v, err = spec.volume(name); err != nil {
					return err
				}
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				want := int64(v.Shape.X) * int64(v.Shape.Y) * int64(v.Shape.Z) * int64(storage.DataType(v.DataType).Size())
				if st.Size() != want {
					return usageError{fmt.Errorf("%s has %d bytes but --shape %s --dtype %s needs %d: check the shape and type", args[0], st.Size(), spec.shape, spec.dtype, want)}
				}
				src = f
			default:
				return usageError{errors.New("give either a FILE or --demo (see 'ldm import --help')")}
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				return importVolume(cmd.Context(), c, v, src, cmd.ErrOrStderr(), quiet)
			})
		},
	}
	cf.register(cmd.Flags())
	spec.register(cmd, false)
	ff.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "name of the new volume (default \"demo\" with --demo)")
	cmd.Flags().BoolVar(&demo, "demo", false, "import the synthetic 256^3 demo phantom instead of a file")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

// importVolume imports src as the new volume v with the client package,
// showing a progress bar on w (unless quiet) and a summary line. When the
// import fails after creating the volume, the volume is deleted and the
// error says so, so that the same command can be run again.
func importVolume(ctx context.Context, c *clients, v *ldmv1.Volume, src io.ReaderAt, w io.Writer, quiet bool) error {
	err := runImport(ctx, c, v, src, w, quiet)
	ie, msg := explainImport(c, err)
	if ie == nil || !ie.Created {
		return msg
	}
	if ie.DeleteErr != nil {
		return fmt.Errorf("%w\n(removing the incomplete volume %q failed: %v; delete it with 'ldm volume delete %s' before importing again)", msg, ie.Volume, ie.DeleteErr, ie.Volume)
	}
	return fmt.Errorf("%w\n(the incomplete volume %q was removed; fix the problem and run the import again)", msg, ie.Volume)
}

// runImport runs client.Importer.Import with a progress bar on w (unless
// quiet) as its Progress callback, and prints a summary line on success.
func runImport(ctx context.Context, c *clients, v *ldmv1.Volume, src io.ReaderAt, w io.Writer, quiet bool) error {
	out := w
	if quiet {
		out = io.Discard
	}
	var bar *progressbar.ProgressBar
	var shown int64
	progress := func(p client.Progress) {
		if bar == nil {
			bar = progressbar.NewOptions64(p.Bytes,
				progressbar.OptionSetWriter(out),
				progressbar.OptionSetDescription("import "+p.Volume),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
				progressbar.OptionFullWidth(),
			)
		}
		// The bar shows bytes the server has stored.
		_ = bar.Add64(p.BytesDone - shown)
		shown = p.BytesDone
	}
	im := client.Importer{Tiles: c.tiles, Volumes: c.volumes}
	st, err := im.Import(ctx, src, v, client.ImportOptions{Progress: progress, CleanupTimeout: shutdownTimeout})
	if err != nil {
		if bar != nil {
			fmt.Fprintln(out) // end the progress bar's line
		}
		return err
	}
	_ = bar.Finish()
	fmt.Fprintf(w, "imported %s: %d bricks, %d levels, %.1f MB in %s (%.0f MB/s)\n", st.Volume.GetName(), st.Bricks, st.Levels,
		float64(st.Bytes)/1e6, st.Elapsed.Round(time.Millisecond), float64(st.Bytes)/1e6/st.Elapsed.Seconds())
	return nil
}

// explainImport turns an import error into a message for a user: RPC
// errors get their hints (and an unreachable server its exit code), bricks
// over the server's limit the flags that change that. It also returns the
// *client.ImportError, if err has one, for what happened to the volume,
// before the message.
func explainImport(c *clients, err error) (*client.ImportError, error) {
	var ie *client.ImportError
	if !errors.As(err, &ie) {
		return nil, err
	}
	if !ie.Created {
		return ie, c.rpcError("create volume "+ie.Volume, ie.Err)
	}
	if errors.Is(err, client.ErrBrickTooLarge) {
		return ie, fmt.Errorf("import %s: %w\n(bricks of %dx%dx%d voxels are %d bytes, above the server's limit: choose a smaller --brick, or raise --max-tile-bytes of ldm serve)",
			ie.Volume, ie.Err, ie.BrickShape.X, ie.BrickShape.Y, ie.BrickShape.Z, ie.BrickBytes)
	}
	return ie, c.rpcError("import "+ie.Volume, ie.Err)
}
