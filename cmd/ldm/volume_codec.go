package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/apiconv"
	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// parseCodecFlag parses --codec (raw, zstd or zstd:LEVEL) into the API's
// codec and level.
func parseCodecFlag(s string) (ldmv1.Codec, int32, error) {
	c, err := storage.ParseCodec(s)
	if err != nil {
		return 0, 0, usageError{fmt.Errorf("--codec: %w", err)}
	}
	return apiconv.CodecToAPI(c.Kind), int32(c.Level), nil
}

// codecName is the CLI's name of a volume's or tile's codec.
func codecName(c ldmv1.Codec, level int32) string {
	switch c {
	case ldmv1.Codec_CODEC_ZSTD:
		if level == 0 {
			return "zstd"
		}
		return fmt.Sprintf("zstd:%d", level)
	case ldmv1.Codec_CODEC_RAW, ldmv1.Codec_CODEC_UNSPECIFIED:
		return "raw"
	}
	return c.String()
}

// defaultCodec is the codec of the volumes the CLI creates (volume create,
// import, volume recompress) when --codec is not given: zstd at level 1.
// Compressing is what an import into a zstd volume spends its CPU on;
// level 1 imports the noisy phantom 1.3-1.5x faster than level 3 for 95%
// of its ratio (3.09x against 3.24x), and gives real scans the same ratio
// (8.3x and 12.2x); see docs/serving.md, "The default codec". The API's
// own default (Volume.codec unset) stays raw, for clients that predate
// Tile.codec.
const defaultCodec = "zstd:1"

const codecFlagHelp = "how bricks are stored and served: raw, or zstd[:LEVEL] (levels 1-22; zstd alone is level 3), compressed once when written"

func newVolumeRecompressCommand(cf *clientFlags) *cobra.Command {
	var codec string
	cmd := &cobra.Command{
		Use:   "recompress SRC DST --codec zstd[:LEVEL]|raw",
		Short: "Write a new volume from an existing one, brick by brick, in another codec",
		Long: "Creates DST with SRC's metadata and the codec of --codec, then copies the latest tile of every brick of every level\n" +
			"of SRC, decoded and encoded again on this machine. SRC is not changed; delete it (and rename by creating\n" +
			"again) once DST is checked. Progress goes to stderr.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, level, err := parseCodecFlag(codec)
			if err != nil {
				return err
			}
			src, dst := args[0], args[1]
			return cf.with(cmd.Context(), func(c *clients) error {
				ctx := cmd.Context()
				gv, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: src}))
				if err != nil {
					return c.rpcError("get volume "+src, err)
				}
				in := gv.Msg.GetVolume()
				out := &ldmv1.Volume{Name: dst, Shape: in.GetShape(), DataType: in.GetDataType(), BrickShape: in.GetBrickShape(),
					LodCount: in.GetLodCount(), Spacing: in.GetSpacing(), Labels: in.GetLabels(), Transform: in.GetTransform(),
					Space: in.GetSpace(), Codec: kind, CodecLevel: level}
				if kind == ldmv1.Codec_CODEC_RAW {
					out.CodecLevel = 0
				}
				cr, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: out}))
				if err != nil {
					return c.rpcError("create volume "+dst, err)
				}
				out = cr.Msg.GetVolume()
				n, bytesIn, bytesOut, err := recompress(cmd, c, in, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "recompressed %s (%s) into %s (%s): %d bricks, %d bytes stored before, %d after (%.2fx)\n",
					src, codecName(in.GetCodec(), in.GetCodecLevel()), dst, codecName(out.GetCodec(), out.GetCodecLevel()),
					n, bytesIn, bytesOut, float64(bytesIn)/float64(max(bytesOut, 1)))
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&codec, "codec", defaultCodec, codecFlagHelp)
	return cmd
}

// recompress streams every brick of in and writes it to out in out's
// codec, printing progress to stderr at most once a second.
func recompress(cmd *cobra.Command, c *clients, in, out *ldmv1.Volume) (n int, bytesIn, bytesOut int64, err error) {
	ctx := cmd.Context()
	sb, err := c.volumes.StreamBricks(ctx, connect.NewRequest(&ldmv1.StreamBricksRequest{Volume: in.GetName()}))
	if err != nil {
		return 0, 0, 0, c.rpcError("stream bricks of "+in.GetName(), err)
	}
	defer sb.Close()
	ws := c.tiles.WriteTileStream(ctx)
	acks := make(chan error, 1)
	sent := 0
	last := time.Now()
	for sb.Receive() {
		t := sb.Msg().GetTile()
		if t == nil {
			continue
		}
		vox, err := client.BrickVoxels(in, t)
		if err != nil {
			return n, bytesIn, bytesOut, fmt.Errorf("read %s: %w", in.GetName(), err)
		}
		nt := &ldmv1.Tile{Key: t.GetKey(), Value: vox}
		if out.GetCodec() == ldmv1.Codec_CODEC_ZSTD {
			client.CompressTile(nt, int(out.GetCodecLevel()))
		}
		if err := ws.Send(&ldmv1.WriteTileStreamRequest{Volume: out.GetName(), Tile: nt}); err != nil {
			break // the receive below reports why
		}
		sent++
		n++
		bytesIn += int64(len(t.GetValue()))
		bytesOut += int64(len(nt.GetValue()))
		if time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(cmd.ErrOrStderr(), "recompress: %d/%d bricks\n", n, sb.Msg().GetTotal())
		}
	}
	if err := sb.Err(); err != nil {
		return n, bytesIn, bytesOut, c.rpcError("stream bricks of "+in.GetName(), err)
	}
	go func() {
		for range sent {
			if _, err := ws.Receive(); err != nil {
				acks <- err
				return
			}
		}
		acks <- nil
	}()
	if err := ws.CloseRequest(); err != nil && !errors.Is(err, io.EOF) {
		return n, bytesIn, bytesOut, c.rpcError("write "+out.GetName(), err)
	}
	if err := <-acks; err != nil {
		return n, bytesIn, bytesOut, c.rpcError("write "+out.GetName(), err)
	}
	return n, bytesIn, bytesOut, ws.CloseResponse()
}

// brickVoxels returns the voxels of brick tile t of volume: its bytes, or
// for a zstd tile the decoded frame (the volume's brick shape is looked
// up).
func brickVoxels(cmd *cobra.Command, c *clients, volume string, t *ldmv1.Tile) ([]byte, error) {
	if t.GetCodec() != ldmv1.Codec_CODEC_ZSTD {
		return t.GetValue(), nil
	}
	gv, err := c.volumes.GetVolume(cmd.Context(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: volume}))
	if err != nil {
		return nil, c.rpcError("get volume "+volume, err)
	}
	return client.BrickVoxels(gv.Msg.GetVolume(), t)
}
