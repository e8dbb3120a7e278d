package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
)

func newTileCommand() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "tile",
		Short: "Write, read and stream the tiles of a volume's log",
	}
	cf.register(cmd.PersistentFlags())
	cmd.AddCommand(newTileWriteCommand(cf), newTileReadCommand(cf), newTileStreamCommand(cf))
	return cmd
}

// parseKey parses a brick key "lod,x,y,z".
func parseKey(s string) (*ldmv1.BrickKey, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return nil, fmt.Errorf("brick key %q: want lod,x,y,z", s)
	}
	var v [4]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("brick key %q: %q is not a non-negative integer", s, p)
		}
		v[i] = uint32(n)
	}
	return &ldmv1.BrickKey{Lod: v[0], X: v[1], Y: v[2], Z: v[3]}, nil
}

// readInput reads a file argument, "-" meaning standard input.
func readInput(cmd *cobra.Command, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(cmd.InOrStdin())
	}
	return os.ReadFile(name)
}

// writeOutput writes b to a file, "-" or "" meaning standard output.
func writeOutput(cmd *cobra.Command, name string, b []byte) error {
	if name == "" || name == "-" {
		_, err := cmd.OutOrStdout().Write(b)
		return err
	}
	return os.WriteFile(name, b, 0o644)
}

// describeTile is the one-line summary of a tile.
func describeTile(t *ldmv1.Tile) string {
	s := fmt.Sprintf("offset=%d bytes=%d crc32c=%08x codec=%s", t.GetOffset(), len(t.GetValue()), t.GetCrc32C(), codecName(t.GetCodec(), 0))
	if k := t.GetKey(); k != nil {
		s += fmt.Sprintf(" key=%d,%d,%d,%d", k.GetLod(), k.GetX(), k.GetY(), k.GetZ())
	}
	return s
}

func newTileWriteCommand(cf *clientFlags) *cobra.Command {
	var key, requestID string
	cmd := &cobra.Command{
		Use:   "write VOLUME FILE|-",
		Short: "Append a file (or standard input) as one tile and print its offset",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readInput(cmd, args[1])
			if err != nil {
				return err
			}
			tile := &ldmv1.Tile{Value: data}
			if key != "" {
				if tile.Key, err = parseKey(key); err != nil {
					return usageError{fmt.Errorf("--brick: %w", err)}
				}
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				id := requestID
				if id == "" {
					id = client.NewRequestID()
				}
				res, err := c.tiles.WriteTile(cmd.Context(), connect.NewRequest(&ldmv1.WriteTileRequest{Volume: args[0], Tile: tile, RequestId: id}))
				if err != nil {
					return c.rpcError("write tile to "+args[0], err)
				}
				fmt.Fprintln(cmd.OutOrStdout(), res.Msg.GetOffset())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&key, "brick", "", "brick key lod,x,y,z of the tile")
	cmd.Flags().StringVar(&requestID, "request-id", "", "id of this write (at most 64 bytes): running the command again with the same id stores the tile once and prints the original offset (default: a new random id)")
	return cmd
}

func newTileReadCommand(cf *clientFlags) *cobra.Command {
	var out string
	var info bool
	cmd := &cobra.Command{
		Use:   "read VOLUME OFFSET",
		Short: "Read the tile at an offset (its bytes to standard output or -o FILE)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			off, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil {
				return usageError{fmt.Errorf("offset %q: want a non-negative integer", args[1])}
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.tiles.ReadTile(cmd.Context(), connect.NewRequest(&ldmv1.ReadTileRequest{Volume: args[0], Offset: off}))
				if err != nil {
					return c.rpcError(fmt.Sprintf("read tile %s/%d", args[0], off), err)
				}
				if info {
					fmt.Fprintln(cmd.OutOrStdout(), describeTile(res.Msg.GetTile()))
					return nil
				}
				if res.Msg.GetTile().GetCodec() == ldmv1.Codec_CODEC_ZSTD {
					fmt.Fprintf(cmd.ErrOrStderr(), "tile %s/%d is stored zstd-compressed: writing the frame as stored (zstd -d decodes it; ldm brick get writes a brick's voxels)\n", args[0], off)
				}
				return writeOutput(cmd, out, res.Msg.GetTile().GetValue())
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the bytes to this file instead of standard output")
	cmd.Flags().BoolVar(&info, "info", false, "print offset, size, checksum and key instead of the bytes")
	return cmd
}

func newTileStreamCommand(cf *clientFlags) *cobra.Command {
	var from uint64
	var follow bool
	cmd := &cobra.Command{
		Use:   "stream VOLUME [--from OFFSET] [--follow]",
		Short: "Print one line per tile from an offset on; --follow keeps printing new tiles",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cf.with(cmd.Context(), func(c *clients) error {
				stream, err := c.tiles.ReadTileStream(cmd.Context(), connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: args[0], Offset: from, Follow: follow}))
				if err != nil {
					return c.rpcError("stream "+args[0], err)
				}
				defer stream.Close()
				for stream.Receive() {
					fmt.Fprintln(cmd.OutOrStdout(), describeTile(stream.Msg().GetTile()))
				}
				if err := stream.Err(); err != nil && !(errors.Is(err, cmd.Context().Err()) || connect.CodeOf(err) == connect.CodeCanceled) {
					return c.rpcError("stream "+args[0], err)
				}
				return nil
			})
		},
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "first offset")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep the stream open and print tiles as they are written")
	return cmd
}

func newBrickCommand() *cobra.Command {
	cf := &clientFlags{}
	cmd := &cobra.Command{
		Use:   "brick",
		Short: "Read the bricks of a volume",
	}
	cf.register(cmd.PersistentFlags())
	var out string
	var info bool
	get := &cobra.Command{
		Use:   "get VOLUME LOD,X,Y,Z",
		Short: "Read a brick's latest tile (its voxels to standard output or -o FILE)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := parseKey(args[1])
			if err != nil {
				return usageError{err}
			}
			return cf.with(cmd.Context(), func(c *clients) error {
				res, err := c.volumes.GetBrick(cmd.Context(), connect.NewRequest(&ldmv1.GetBrickRequest{Volume: args[0], Key: key}))
				if err != nil {
					return c.rpcError(fmt.Sprintf("get brick %s %s", args[0], args[1]), err)
				}
				if info {
					fmt.Fprintln(cmd.OutOrStdout(), describeTile(res.Msg.GetTile()))
					return nil
				}
				vox, err := brickVoxels(cmd, c, args[0], res.Msg.GetTile())
				if err != nil {
					return err
				}
				return writeOutput(cmd, out, vox)
			})
		},
	}
	get.Flags().StringVarP(&out, "output", "o", "", "write the voxels to this file instead of standard output")
	get.Flags().BoolVar(&info, "info", false, "print offset, size, checksum and key instead of the voxels")
	cmd.AddCommand(get)
	return cmd
}
