package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"connectrpc.com/connect"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

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
give --shape and --dtype), NIfTI-1 or NRRD (shape, type, spacing and byte order come from
the header; a file that cannot be read whole creates nothing), cuts it into bricks,
builds the levels of detail (each the mean of 2x2x2 voxels of the level below), and
sends the bricks with WriteTileStream.

  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16
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
				m := pyramid.PhantomMeta(name)
				v = &ldmv1.Volume{
					Name: m.Name, DataType: ldmv1.DataType(m.DataType), LodCount: m.LODCount, Spacing: m.Spacing, Labels: m.Labels,
					Shape:      &ldmv1.Shape{X: m.Shape.X, Y: m.Shape.Y, Z: m.Shape.Z},
					BrickShape: &ldmv1.Shape{X: m.BrickShape.X, Y: m.BrickShape.Y, Z: m.BrickShape.Z},
				}
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
				return importNew(cmd.Context(), c, v, src, cmd.ErrOrStderr(), quiet)
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

// createError is a failure of importVolume to create the volume: nothing
// was written.
type createError struct{ err error }

func (e createError) Error() string { return e.err.Error() }
func (e createError) Unwrap() error { return e.err }

// importNew runs importVolume and, when the volume was created but the
// import failed (or was interrupted), deletes the incomplete volume so that
// the same command can be run again.
func importNew(ctx context.Context, c *clients, v *ldmv1.Volume, src io.ReaderAt, w io.Writer, quiet bool) error {
	err := importVolume(ctx, c, v, src, w, quiet)
	var ce createError
	if err == nil || errors.As(err, &ce) {
		return err
	}
	name := v.GetName()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	_, derr := c.volumes.DeleteVolume(dctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: name}))
	if derr != nil && connect.CodeOf(derr) != connect.CodeNotFound {
		return fmt.Errorf("%w\n(removing the incomplete volume %q failed: %v; delete it with 'ldm volume delete %s' before importing again)", err, name, derr, name)
	}
	return fmt.Errorf("%w\n(the incomplete volume %q was removed; fix the problem and run the import again)", err, name)
}

// importVolume creates v on the server and sends the bricks of src with
// WriteTileStream, showing progress on w.
func importVolume(ctx context.Context, c *clients, v *ldmv1.Volume, src io.ReaderAt, w io.Writer, quiet bool) error {
	res, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v}))
	if err != nil {
		return createError{c.rpcError("create volume "+v.GetName(), err)}
	}
	created := res.Msg.GetVolume()
	meta := storage.VolumeMeta{
		Name:       created.GetName(),
		Shape:      storage.Shape{X: created.GetShape().GetX(), Y: created.GetShape().GetY(), Z: created.GetShape().GetZ()},
		DataType:   storage.DataType(created.GetDataType()),
		BrickShape: storage.Shape{X: created.GetBrickShape().GetX(), Y: created.GetBrickShape().GetY(), Z: created.GetBrickShape().GetZ()},
		LODCount:   created.GetLodCount(),
	}
	if err := meta.Normalize(); err != nil {
		return err
	}
	count := pyramid.BrickCount(meta)
	brickBytes := int64(meta.BrickShape.X) * int64(meta.BrickShape.Y) * int64(meta.BrickShape.Z) * int64(meta.DataType.Size())
	total := int64(count) * brickBytes
	out := w
	if quiet {
		out = io.Discard
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(out),
		progressbar.OptionSetDescription("import "+meta.Name),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
		progressbar.OptionFullWidth(),
	)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := c.tiles.WriteTileStream(ctx)
	// Acknowledgements arrive while bricks are sent; each one advances the
	// bar, so it shows bytes the server has stored.
	acked := make(chan error, 1)
	go func() {
		n := 0
		for n < count {
			if _, err := stream.Receive(); err != nil {
				acked <- fmt.Errorf("after %d of %d bricks: %w", n, count, err)
				return
			}
			n++
			_ = bar.Add64(brickBytes)
		}
		acked <- nil
	}()
	first := true
	start := time.Now()
	sendErr := pyramid.Cut(src, meta, func(b pyramid.Brick) error {
		req := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: b.Value, Key: &ldmv1.BrickKey{Lod: b.Key.LOD, X: b.Key.X, Y: b.Key.Y, Z: b.Key.Z}}}
		if first {
			req.Volume = meta.Name
			first = false
		}
		return stream.Send(req)
	})
	if errors.Is(sendErr, io.EOF) {
		sendErr = nil // the server ended the stream; Receive has its error
	}
	if sendErr == nil {
		sendErr = stream.CloseRequest()
	}
	var recvErr error
	select {
	case recvErr = <-acked:
	case <-ctx.Done():
		recvErr = ctx.Err()
	}
	_ = stream.CloseResponse()
	if err := errors.Join(recvErr, sendErr); err != nil {
		if !quiet {
			fmt.Fprintln(out) // end the progress bar's line
		}
		if connect.CodeOf(err) == connect.CodeResourceExhausted {
			return fmt.Errorf("import %s: %w\n(bricks of %dx%dx%d voxels are %d bytes, above the server's limit: choose a smaller --brick, or raise --max-tile-bytes of ldm serve)",
				meta.Name, err, meta.BrickShape.X, meta.BrickShape.Y, meta.BrickShape.Z, brickBytes)
		}
		return c.rpcError("import "+meta.Name, err)
	}
	_ = bar.Finish()
	elapsed := time.Since(start)
	fmt.Fprintf(w, "imported %s: %d bricks, %d levels, %.1f MB in %s (%.0f MB/s)\n", meta.Name, count, meta.LODCount,
		float64(total)/1e6, elapsed.Round(time.Millisecond), float64(total)/1e6/elapsed.Seconds())
	return nil
}
