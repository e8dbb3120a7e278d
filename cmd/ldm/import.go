package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"time"

	"connectrpc.com/connect"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// importHeadroom is the memory an import may use above its pyramid
// builder's bound: bricks queued and in flight, HTTP/2 buffers, the runtime.
const importHeadroom = 64 << 20

func newImportCommand() *cobra.Command {
	cf := &clientFlags{}
	spec := &volumeSpec{}
	var name string
	var demo, quiet, resume bool
	var codecFlag string
	ff := &fileFlags{}
	cmd := &cobra.Command{
		Use:   "import [FILE] --name NAME --shape XxYxZ --dtype T",
		Short: "Import a volume file (NIfTI-1, NRRD or raw), the demo phantom or a procedural volume of any size into a new volume",
		Long: `import reads a volume file: raw (voxels little-endian, x fastest, then y, then z;
give --shape and --dtype), NIfTI-1 or NRRD (shape, type, spacing, byte order and the
voxel-to-world transform come from the header; a truncated or corrupt file leaves no volume), cuts it into bricks,
builds the levels of detail (each the mean of 2x2x2 voxels of the level below), and
sends the bricks with WriteTileStream. The file is read once, as a stream (gzip
included), with memory of about one row of bricks per level whatever its size.

An import that is interrupted (Ctrl-C, a lost connection) keeps the bricks stored so
far; the volume is incomplete (it holds fewer bricks than its levels need) until the
same command is run again with --resume, which sends only the missing bricks. Any
other failure (a truncated or corrupt file, a refused brick) removes the volume.

  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16
  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16 --spacing 0.7,0.7,1 \
      --orientation LPS --space LPS --origin -180,-200,-350
                                    where the raw voxels sit: axis directions, world position of voxel 0
  ldm import brain.nii.gz           NIfTI-1 (.nii, .nii.gz, .hdr/.img): shape, type, spacing from the header
  ldm import scan.nhdr --name scan  NRRD (raw or gzip encoding, attached or detached header)
  ldm import fmri.nii --time 3      one time point of a 4D image
  ldm import --demo                 the 256^3 demo phantom as volume "demo"
  ldm import --demo --shape 4096x4096x2560 big
                                    a procedural phantom of any shape and --dtype, generated
                                    slab by slab (40 GiB here, no source file)
  ldm import ct.raw --name ct --shape 512x512x300 --dtype int16 --resume
                                    complete an interrupted import
  ldm import brain.nii.gz --codec raw
                                    store the bricks as they are (the default is zstd:1: bricks
                                    compressed here, on every core, before they are sent;
                                    zstd:LEVEL for levels 1-22)`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			codec := importCodec{given: cmd.Flags().Changed("codec")}
			var err error
			if codec.kind, codec.level, err = parseCodecFlag(codecFlag); err != nil {
				return err
			}
			if !demo && len(args) == 1 {
				if ok, err := ff.headered(args[0]); err != nil {
					return err
				} else if ok {
					return importFile(cmd, cf, spec, ff, args[0], name, quiet, resume, codec)
				}
			}
			var src io.Reader
			var v *ldmv1.Volume
			switch {
			case demo && spec.shape != "":
				if len(args) == 1 {
					if name != "" && name != args[0] {
						return usageError{fmt.Errorf("the volume is named twice (%q and --name %q): give one", args[0], name)}
					}
					name = args[0]
				}
				if name == "" {
					return usageError{errors.New("name the procedural volume: ldm import --demo --shape XxYxZ NAME")}
				}
				var err error
				if v, err = spec.volume(name); err != nil {
					return err
				}
				p, err := pyramid.NewProcedural(apiconv.ShapeFromAPI(v.Shape), storage.DataType(v.DataType))
				if err != nil {
					return usageError{fmt.Errorf("--shape %s: %w", spec.shape, err)}
				}
				if v.Labels == nil {
					v.Labels = map[string]string{}
				}
				if _, ok := v.Labels["source"]; !ok {
					v.Labels["source"] = "go-ldm procedural phantom"
				}
				src = p.Reader()
			case demo && len(args) == 0:
				if name == "" {
					name = demoVolume
				}
				v = apiconv.MetaToAPI(pyramid.PhantomMeta(name))
				src = io.NewSectionReader(pyramid.Phantom(), 0, pyramid.PhantomSize*pyramid.PhantomSize*pyramid.PhantomSize)
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
			codec.apply(v)
			return cf.with(cmd.Context(), func(c *clients) error {
				if resume {
					existing, err := c.volumes.GetVolume(cmd.Context(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: v.GetName()}))
					if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
						return c.rpcError("import "+v.GetName(), err)
					}
					if err == nil {
						if err := codec.checkResume(existing.Msg.GetVolume()); err != nil {
							return err
						}
					}
				}
				return importStream(cmd.Context(), c, v, src, cmd.ErrOrStderr(), quiet, resume)
			})
		},
	}
	cf.register(cmd.Flags())
	spec.register(cmd, false)
	ff.register(cmd)
	cmd.Flags().StringVar(&name, "name", "", "name of the new volume (default \"demo\" with --demo)")
	cmd.Flags().BoolVar(&demo, "demo", false, "import the synthetic 256^3 demo phantom instead of a file; with --shape (and --dtype), a procedural phantom of that size, named by NAME")
	cmd.Flags().BoolVar(&resume, "resume", false, "complete an interrupted import of the same source: send only the bricks the volume lacks")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().StringVar(&codecFlag, "codec", defaultCodec, codecFlagHelp+" (zstd bricks are compressed by this command, on every core; with --resume the volume keeps its codec, and a --codec that differs from it is an error)")
	return cmd
}

// importCodec is the codec --codec gives the volume an import creates.
type importCodec struct {
	kind  ldmv1.Codec
	level int32
	given bool // --codec was on the command line
}

// effectiveCodec names a codec with the level a volume gets for it (a zstd
// level 0 is the server's default, storage.DefaultZstdLevel).
func effectiveCodec(kind ldmv1.Codec, level int32) string {
	if kind == ldmv1.Codec_CODEC_ZSTD && level == 0 {
		level = storage.DefaultZstdLevel
	}
	return codecName(kind, level)
}

// checkResume refuses to resume the existing volume v with a --codec that
// differs from v's codec (a resumed volume keeps its own). Without --codec
// the volume's codec is used.
func (c importCodec) checkResume(v *ldmv1.Volume) error {
	if !c.given {
		return nil
	}
	want, have := effectiveCodec(c.kind, c.level), effectiveCodec(v.GetCodec(), v.GetCodecLevel())
	if want == have {
		return nil
	}
	return usageError{fmt.Errorf("--codec %s: volume %q is stored in %s, and --resume completes it in its own codec: leave --codec out (or give --codec %s) to resume it, or import into a new volume (another --name) to store it in %s",
		want, v.GetName(), have, have, want)}
}

// apply sets the codec of v (raw volumes have no level).
func (c importCodec) apply(v *ldmv1.Volume) {
	v.Codec, v.CodecLevel = c.kind, c.level
	if c.kind != ldmv1.Codec_CODEC_ZSTD {
		v.CodecLevel = 0
	}
}

// importVolume imports the voxels src holds (read once, front to back) as
// the new volume v; see importStream.
func importVolume(ctx context.Context, c *clients, v *ldmv1.Volume, src io.ReaderAt, w io.Writer, quiet bool) error {
	n := int64(v.GetShape().GetX()) * int64(v.GetShape().GetY()) * int64(v.GetShape().GetZ()) * int64(storage.DataType(v.GetDataType()).Size())
	return importStream(ctx, c, v, io.NewSectionReader(src, 0, n), w, quiet, false)
}

// importStream imports src as the new volume v with the client package
// (or completes it, with resume), showing a progress bar on w (unless
// quiet) and a summary line. When the import fails after creating the
// volume, the volume is deleted and the error says so, so that the same
// command can be run again; an interrupted import keeps it for --resume.
func importStream(ctx context.Context, c *clients, v *ldmv1.Volume, src io.Reader, w io.Writer, quiet, resume bool) error {
	// The import holds its pyramid builder's planes (MemoryBound) and the
	// bricks in flight; a soft memory limit just above that keeps the
	// garbage collector from letting the heap grow to twice the live data.
	if os.Getenv("GOMEMLIMIT") == "" {
		if b, err := pyramid.NewBuilder(apiconv.MetaFromAPI(v), pyramid.BuildOptions{}); err == nil {
			defer debug.SetMemoryLimit(debug.SetMemoryLimit(b.MemoryBound() + importHeadroom))
		}
	}
	err := runImport(ctx, c, v, src, w, quiet, resume)
	ie, msg := explainImport(c, err)
	if ie == nil || !ie.Created && !ie.Resumed {
		return msg
	}
	if ie.Kept {
		return fmt.Errorf("%w\n(the incomplete volume %q keeps the bricks stored so far: run the same command with --resume to complete it, or delete it with 'ldm volume delete %s')", msg, ie.Volume, ie.Volume)
	}
	if ie.DeleteErr != nil {
		return fmt.Errorf("%w\n(removing the incomplete volume %q failed: %v; delete it with 'ldm volume delete %s' before importing again)", msg, ie.Volume, ie.DeleteErr, ie.Volume)
	}
	return fmt.Errorf("%w\n(the incomplete volume %q was removed; fix the problem and run the import again)", msg, ie.Volume)
}

// runImport runs client.Importer.Import with a progress bar on w (unless
// quiet) as its Progress callback, and prints a summary line on success.
func runImport(ctx context.Context, c *clients, v *ldmv1.Volume, src io.Reader, w io.Writer, quiet, resume bool) error {
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
				progressbar.OptionSetDescription(fmt.Sprintf("import %s: 0/%d bricks", p.Volume, p.Bricks)),
				progressbar.OptionShowElapsedTimeOnFinish(),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(out) }),
				progressbar.OptionFullWidth(),
			)
		}
		// The bar shows bricks and bytes (of voxels) the server has stored,
		// the rate and the time left; for compressed bricks, the bytes sent
		// and the ratio.
		if p.BricksDone%64 == 0 || p.BricksDone == p.Bricks {
			desc := fmt.Sprintf("import %s: %d/%d bricks", p.Volume, p.BricksDone, p.Bricks)
			if p.BytesSent != p.BytesDone {
				desc += fmt.Sprintf(", %s sent (%.2fx)", mb(p.BytesSent), float64(p.BytesDone)/float64(max(p.BytesSent, 1)))
			}
			bar.Describe(desc)
		}
		_ = bar.Add64(p.BytesDone - shown)
		shown = p.BytesDone
	}
	im := client.Importer{Tiles: c.tiles, Volumes: c.volumes}
	st, err := im.ImportReader(ctx, src, v, client.ImportOptions{Progress: progress, CleanupTimeout: shutdownTimeout, Resume: resume})
	if err != nil {
		if bar != nil {
			fmt.Fprintln(out) // end the progress bar's line
		}
		return err
	}
	_ = bar.Finish()
	if st.Bricks == 0 && st.Skipped > 0 {
		fmt.Fprintf(w, "%s is complete already: %d bricks, %d levels\n", st.Volume.GetName(), st.Skipped, st.Levels)
		return nil
	}
	resumed := ""
	if st.Skipped > 0 {
		resumed = fmt.Sprintf(" (resumed: %d bricks were stored already)", st.Skipped)
	}
	sent := ""
	if st.Volume.GetCodec() == ldmv1.Codec_CODEC_ZSTD {
		sent = fmt.Sprintf(", %s: %s sent (%.2fx)", codecName(st.Volume.GetCodec(), st.Volume.GetCodecLevel()), mb(st.BytesSent),
			float64(st.Bytes)/float64(max(st.BytesSent, 1)))
	}
	fmt.Fprintf(w, "imported %s: %d bricks, %d levels, %.1f MB in %s (%.0f MB/s)%s%s\n", st.Volume.GetName(), st.Bricks, st.Levels,
		float64(st.Bytes)/1e6, st.Elapsed.Round(time.Millisecond), float64(st.Bytes)/1e6/st.Elapsed.Seconds(), sent, resumed)
	return nil
}

// mb formats a byte count in MB.
func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

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
	if !ie.Created && !ie.Resumed {
		if errors.Is(ie.Err, storage.ErrInvalidArgument) {
			return ie, usageError{fmt.Errorf("import %s: %w", ie.Volume, ie.Err)}
		}
		if connect.CodeOf(ie.Err) == connect.CodeAlreadyExists {
			return ie, fmt.Errorf("import %s: volume %q already exists (if an earlier import of it was interrupted, run the same command with --resume; otherwise delete it with 'ldm volume delete %s' or choose another --name)", ie.Volume, ie.Volume, ie.Volume)
		}
		return ie, c.rpcError("create volume "+ie.Volume, ie.Err)
	}
	if errors.Is(err, client.ErrBrickTooLarge) {
		return ie, fmt.Errorf("import %s: %w\n(bricks of %dx%dx%d voxels are %d bytes, above the server's limit: choose a smaller --brick, or raise --max-tile-bytes of ldm serve)",
			ie.Volume, ie.Err, ie.BrickShape.X, ie.BrickShape.Y, ie.BrickShape.Z, ie.BrickBytes)
	}
	return ie, c.rpcError("import "+ie.Volume, ie.Err)
}
