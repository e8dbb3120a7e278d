package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

func newRegionCommand() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "region",
		Short: "Read regions of a volume into files",
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newRegionGetCommand(cf))
	return cmd
}

func newRegionGetCommand(cf *clientFlags) *cobra.Command {
	var lod uint32
	var boxFlag, out string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "get VOLUME -o FILE",
		Short: "Read a box of one level into a NIfTI (.nii) or NRRD (.nrrd) file",
		Long: `get reads the voxels of a box (ReadRegion) into a file that other tools open:
NIfTI-1 for a .nii name, NRRD for .nrrd. The file carries the box's
voxel-to-world transform: the level's spacing and orientation, with the
origin at the box's first voxel, so the region lands where it lies in the
volume (NIfTI sform and qform in RAS; NRRD space, space directions and
space origin).

  ldm region get ct --lod 1 --box 0:128,0:128,40:60 -o slab.nrrd

--box is x0:x1,y0:y1,z0:z1 in voxels of the level (min inclusive, max
exclusive; past the level it is clipped); without it, the whole level.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{fmt.Errorf("give the output file with -o FILE.nii or -o FILE.nrrd")}
			}
			req := &ldmv1.ReadRegionRequest{Volume: args[0], Lod: lod}
			if boxFlag != "" {
				b, err := parseBox(boxFlag)
				if err != nil {
					return usageError{fmt.Errorf("--box: %w", err)}
				}
				req.Box = b
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				ex := client.Exporter{Volumes: c.volumes}
				if !quiet {
					ex.Progress = progressPrinter(cmd.ErrOrStderr(), "read")
				}
				reg, err := ex.ReadRegionFile(cmd.Context(), out, req)
				if err != nil {
					return c.rpcError("read region", err)
				}
				s := reg.Shape()
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %dx%dx%d %s voxels of %s level %d, box %d:%d,%d:%d,%d:%d\n",
					out, s.X, s.Y, s.Z, reg.DataType, args[0], reg.Lod, reg.Min[0], reg.Max[0], reg.Min[1], reg.Max[1], reg.Min[2], reg.Max[2])
				return nil
			})
		},
	}
	fs := cmd.Flags()
	fs.Uint32Var(&lod, "lod", 0, "level of detail (0 is full resolution)")
	fs.StringVar(&boxFlag, "box", "", "x0:x1,y0:y1,z0:z1 in voxels of the level (default: the whole level)")
	fs.StringVarP(&out, "output", "o", "", "output file: .nii (NIfTI-1) or .nrrd (NRRD)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "do not print progress")
	return cmd
}

// parseBox parses "x0:x1,y0:y1,z0:z1" (min inclusive, max exclusive, each
// a non-negative integer below 2^32, min below max).
func parseBox(s string) (*ldmv1.Region, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%q: want x0:x1,y0:y1,z0:z1, for example 0:128,0:128,40:60", s)
	}
	var lo, hi [3]uint32
	for i, p := range parts {
		a, b, ok := strings.Cut(strings.TrimSpace(p), ":")
		if !ok {
			return nil, fmt.Errorf("%q: axis %c needs min:max", s, "xyz"[i])
		}
		x0, err0 := strconv.ParseUint(strings.TrimSpace(a), 10, 32)
		x1, err1 := strconv.ParseUint(strings.TrimSpace(b), 10, 32)
		if err0 != nil || err1 != nil {
			return nil, fmt.Errorf("%q: axis %c: min and max must be whole numbers from 0 to %d", s, "xyz"[i], uint32(math.MaxUint32))
		}
		if x0 >= x1 {
			return nil, fmt.Errorf("%q: axis %c: min %d must be below max %d (max is exclusive)", s, "xyz"[i], x0, x1)
		}
		lo[i], hi[i] = uint32(x0), uint32(x1)
	}
	return &ldmv1.Region{
		Min: &ldmv1.Shape{X: lo[0], Y: lo[1], Z: lo[2]},
		Max: &ldmv1.Shape{X: hi[0], Y: hi[1], Z: hi[2]},
	}, nil
}

// progressPrinter returns a progress callback that rewrites one line on w
// at most ten times a second, and the last state at the end.
func progressPrinter(w io.Writer, verb string) func(client.Progress) {
	var last time.Time
	return func(p client.Progress) {
		end := p.BytesDone == p.Bytes && (p.Bricks == 0 || p.BricksDone == p.Bricks)
		if !end && time.Since(last) < 100*time.Millisecond {
			return
		}
		last = time.Now()
		rate := 0.0
		if s := p.Elapsed.Seconds(); s > 0 {
			rate = float64(p.BytesDone) / s / (1 << 20)
		}
		if p.Bricks > 0 {
			fmt.Fprintf(w, "\r%s %d/%d bricks, %.1f/%.1f MiB, %.0f MiB/s", verb, p.BricksDone, p.Bricks, float64(p.BytesDone)/(1<<20), float64(p.Bytes)/(1<<20), rate)
		} else {
			fmt.Fprintf(w, "\r%s %.1f/%.1f MiB, %.0f MiB/s", verb, float64(p.BytesDone)/(1<<20), float64(p.Bytes)/(1<<20), rate)
		}
		if end {
			fmt.Fprintln(w)
		}
	}
}
