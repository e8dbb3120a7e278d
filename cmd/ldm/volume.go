package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/volfile"
)

func newVolumeCommand() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Create, inspect, list and delete volumes",
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newVolumeCreateCommand(cf), newVolumeGetCommand(cf), newVolumeListCommand(cf), newVolumeDeleteCommand(cf),
		newVolumeRecompressCommand(cf))
	return cmd
}

// printJSON prints a message as indented protojson. protojson varies its
// whitespace on purpose; json.Indent makes the output stable.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// parseShape parses "XxYxZ" (or "X,Y,Z").
func parseShape(s string) (*ldmv1.Shape, error) {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == 'x' || r == ',' })
	if len(parts) != 3 {
		return nil, fmt.Errorf("shape %q: want XxYxZ, for example 256x256x128", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("shape %q: %q is not a positive integer", s, p)
		}
		v[i] = uint32(n)
	}
	return &ldmv1.Shape{X: v[0], Y: v[1], Z: v[2]}, nil
}

// volumeSpec are the flags that describe a new volume.
type volumeSpec struct {
	shape, dtype, brick, spacing string
	lods                         uint32
	labels                       map[string]string
	// Where the voxels sit in the world (raw volumes and volume create).
	origin, orientation, space string
}

func (v *volumeSpec) register(cmd *cobra.Command, shapeRequired bool) {
	fs := cmd.Flags()
	fs.StringVar(&v.shape, "shape", "", "size in voxels, XxYxZ (for example 512x512x300)")
	fs.StringVar(&v.dtype, "dtype", "uint8", "voxel type: uint8, uint16, int16, uint32 or float32")
	fs.StringVar(&v.brick, "brick", "64x64x64", "brick shape in voxels, XxYxZ")
	fs.Uint32Var(&v.lods, "lods", 0, "levels of detail (0: until the volume fits one brick)")
	fs.StringVar(&v.spacing, "spacing", "", "voxel spacing x,y,z (for example 0.5,0.5,1.2)")
	fs.StringToStringVar(&v.labels, "label", nil, "labels key=value (repeatable)")
	fs.StringVar(&v.orientation, "orientation", "", "which way the voxel axes x, y, z point in the patient: three letters, one of R/L, A/P, S/I each (for example RAS, LPS, LPI); stored as a transform in --space")
	fs.StringVar(&v.origin, "origin", "", "world position in mm of the centre of voxel (0,0,0), x,y,z in --space (default 0,0,0)")
	fs.StringVar(&v.space, "space", "", "world space of --origin and of the stored transform: RAS or LPS (default RAS when --orientation is given)")
	if shapeRequired {
		_ = cmd.MarkFlagRequired("shape")
	}
}

// volume builds the API volume from the flags.
func (v *volumeSpec) volume(name string) (*ldmv1.Volume, error) {
	shape, err := parseShape(v.shape)
	if err != nil {
		return nil, usageError{fmt.Errorf("--shape: %w", err)}
	}
	brick, err := parseShape(v.brick)
	if err != nil {
		return nil, usageError{fmt.Errorf("--brick: %w", err)}
	}
	dt, err := storage.ParseDataType(v.dtype)
	if err != nil {
		return nil, usageError{fmt.Errorf("--dtype: %w", err)}
	}
	out := &ldmv1.Volume{Name: name, Shape: shape, DataType: ldmv1.DataType(dt), BrickShape: brick, LodCount: v.lods, Labels: v.labels}
	if out.LodCount == 0 {
		out.LodCount = pyramid.LevelsToFit(apiconv.ShapeFromAPI(shape), apiconv.ShapeFromAPI(brick))
	}
	if v.spacing != "" {
		for _, p := range strings.Split(v.spacing, ",") {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || !(f > 0) || math.IsInf(f, 0) {
				return nil, usageError{fmt.Errorf("--spacing %q: want three positive numbers x,y,z", v.spacing)}
			}
			out.Spacing = append(out.Spacing, f)
		}
		if len(out.Spacing) != 3 {
			return nil, usageError{fmt.Errorf("--spacing %q: want three positive numbers x,y,z", v.spacing)}
		}
	}
	if err := v.transform(out); err != nil {
		return nil, err
	}
	return out, nil
}

// placed reports whether any of --orientation, --origin and --space is set.
func (v *volumeSpec) placed() bool {
	return v.orientation != "" || v.origin != "" || v.space != ""
}

// transform sets out's transform and space from --orientation, --origin and
// --space (and out's spacing); without them out is left as it is.
func (v *volumeSpec) transform(out *ldmv1.Volume) error {
	if !v.placed() {
		return nil
	}
	var origin [3]float64
	if v.origin != "" {
		parts := strings.Split(v.origin, ",")
		if len(parts) != 3 {
			return usageError{fmt.Errorf("--origin %q: want three numbers x,y,z in mm", v.origin)}
		}
		for i, p := range parts {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return usageError{fmt.Errorf("--origin %q: want three numbers x,y,z in mm", v.origin)}
			}
			origin[i] = f
		}
	}
	var space storage.Space
	switch strings.ToUpper(v.space) {
	case "":
	case "RAS":
		space = storage.SpaceRAS
	case "LPS":
		space = storage.SpaceLPS
	default:
		return usageError{fmt.Errorf("--space %q: want RAS or LPS", v.space)}
	}
	if space != "" && v.orientation == "" {
		return usageError{fmt.Errorf("--space %s: give --orientation too (which way the voxel axes point, e.g. RAS or LPS)", v.space)}
	}
	spacing := [3]float64{1, 1, 1}
	if len(out.Spacing) == 3 {
		copy(spacing[:], out.Spacing)
	}
	a, sp, err := volfile.OrientationAffine(v.orientation, space, spacing, origin)
	if err != nil {
		return usageError{fmt.Errorf("--orientation: %w", err)}
	}
	out.Transform = a[:]
	out.Space = apiconv.SpaceToAPI(sp)
	return nil
}

func newVolumeCreateCommand(cf *clientFlags) *cobra.Command {
	spec := &volumeSpec{}
	var codec string
	cmd := &cobra.Command{
		Use:   "create NAME --shape XxYxZ [--dtype T] [--codec raw|zstd[:LEVEL]]",
		Short: "Create an empty volume",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := spec.volume(args[0])
			if err != nil {
				return err
			}
			if v.Codec, v.CodecLevel, err = parseCodecFlag(codec); err != nil {
				return err
			}
			if v.Codec == ldmv1.Codec_CODEC_RAW {
				v.CodecLevel = 0
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.volumes.CreateVolume(cmd.Context(), connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: v}))
				if err != nil {
					return c.rpcError("create volume "+args[0], err)
				}
				return printJSON(cmd.OutOrStdout(), res.Msg.GetVolume())
			})
		},
	}
	spec.register(cmd, true)
	cmd.Flags().StringVar(&codec, "codec", defaultCodec, codecFlagHelp)
	return cmd
}

func newVolumeGetCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a volume's metadata as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.volumes.GetVolume(cmd.Context(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: args[0]}))
				if err != nil {
					return c.rpcError("get volume "+args[0], err)
				}
				return printJSON(cmd.OutOrStdout(), res.Msg.GetVolume())
			})
		},
	}
}

func newVolumeListCommand(cf *clientFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List volumes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.volumes.ListVolumes(cmd.Context(), connect.NewRequest(&ldmv1.ListVolumesRequest{}))
				if err != nil {
					return c.rpcError("list volumes", err)
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), res.Msg)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tSHAPE\tTYPE\tBRICK\tLODS\tTILES\tBYTES\tCODEC")
				for _, v := range res.Msg.GetVolumes() {
					s, b := v.GetShape(), v.GetBrickShape()
					fmt.Fprintf(w, "%s\t%dx%dx%d\t%s\t%dx%dx%d\t%d\t%d\t%d\t%s\n", v.GetName(), s.GetX(), s.GetY(), s.GetZ(),
						storage.DataType(v.GetDataType()), b.GetX(), b.GetY(), b.GetZ(), v.GetLodCount(), v.GetNextOffset(), v.GetSizeBytes(),
						codecName(v.GetCodec(), v.GetCodecLevel()))
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newVolumeDeleteCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a volume and all its tiles",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				if _, err := c.volumes.DeleteVolume(cmd.Context(), connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: args[0]})); err != nil {
					return c.rpcError("delete volume "+args[0], err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "deleted volume %s\n", args[0])
				return nil
			})
		},
	}
}
