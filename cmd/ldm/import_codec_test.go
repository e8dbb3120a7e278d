package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/storage"
)

// sameVolumeVoxels checks that volume got is in codec, every brick of it
// in that codec, and that its bricks decode (client.BrickVoxels) to the
// voxels of the raw volume want, brick for brick.
func sameVolumeVoxels(t *testing.T, c *clients, got, want string, codec ldmv1.Codec, level int32) {
	t.Helper()
	ctx := context.Background()
	gv, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: got}))
	if err != nil {
		t.Fatal(err)
	}
	v := gv.Msg.GetVolume()
	if v.GetCodec() != codec || v.GetCodecLevel() != level {
		t.Fatalf("volume %s: codec %v level %d, want %v level %d", got, v.GetCodec(), v.GetCodecLevel(), codec, level)
	}
	lb, err := c.volumes.ListBricks(ctx, connect.NewRequest(&ldmv1.ListBricksRequest{Volume: want}))
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	n := 0
	for lb.Receive() {
		for _, k := range lb.Msg().GetKeys() {
			g, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: got, Key: k}))
			if err != nil {
				t.Fatalf("brick %v of %s: %v", k, got, err)
			}
			w, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: want, Key: k}))
			if err != nil {
				t.Fatal(err)
			}
			tile := g.Msg.GetTile()
			if tile.GetCodec() != codec {
				t.Fatalf("brick %v of %s has codec %v, want %v", k, got, tile.GetCodec(), codec)
			}
			if codec == ldmv1.Codec_CODEC_ZSTD && !bytes.HasPrefix(tile.GetValue(), zstdcodec.Magic[:]) {
				t.Fatalf("brick %v of %s is not a zstd frame", k, got)
			}
			vox, err := client.BrickVoxels(v, tile)
			if err != nil {
				t.Fatal(err)
			}
			if w.Msg.GetTile().GetCodec() != ldmv1.Codec_CODEC_RAW || !bytes.Equal(vox, w.Msg.GetTile().GetValue()) {
				t.Fatalf("brick %v of %s differs from %s's", k, got, want)
			}
			n++
		}
	}
	if err := lb.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatalf("%s lists no bricks", want)
	}
}

// TestCLI_import_codec imports procedural volumes of every voxel type, a
// raw file and a NIfTI file with --codec zstd and checks them, voxel for
// voxel, against the same imports stored raw.
func TestCLI_import_codec(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	c := testClients(t, base)
	for _, dt := range []string{"uint8", "uint16", "int16", "uint32", "float32"} {
		t.Run(dt, func(t *testing.T) {
			t.Parallel()
			args := []string{"import", "--demo", "--shape", "41x33x29", "--dtype", dt, "--brick", "16x16x16", "--server", base}
			out, errOut, err := ldmCmd(t, "", append(args, "--codec", "raw", "r-"+dt)...)
			if err != nil || !strings.Contains(errOut, "imported r-"+dt+":") || strings.Contains(errOut, "sent (") {
				t.Fatalf("raw import: %v\n%s%s", err, out, errOut)
			}
			out, errOut, err = ldmCmd(t, "", append(args, "--codec", "zstd", "z-"+dt)...)
			if err != nil || !strings.Contains(errOut, "imported z-"+dt+":") || !strings.Contains(errOut, "zstd:3:") || !strings.Contains(errOut, "MB sent (") {
				t.Fatalf("zstd import: %v\n%s%s", err, out, errOut)
			}
			sameVolumeVoxels(t, c, "r-"+dt, "r-"+dt, ldmv1.Codec_CODEC_RAW, 0)
			sameVolumeVoxels(t, c, "z-"+dt, "r-"+dt, ldmv1.Codec_CODEC_ZSTD, 3)
			// Resuming the complete zstd volume (without --codec: it keeps
			// its own) sends nothing.
			out, errOut, err = ldmCmd(t, "", append(args, "--resume", "z-"+dt)...)
			if err != nil || !strings.Contains(errOut, "is complete already") {
				t.Fatalf("resume: %v\n%s%s", err, out, errOut)
			}
			// With another --codec (or level) it is a usage error naming
			// both codecs, and the volume stays as it is.
			for _, other := range []string{"raw", "zstd:1"} {
				_, _, err = ldmCmd(t, "", append(args, "--resume", "--codec", other, "z-"+dt)...)
				if exitCode(err) != 2 || !strings.Contains(err.Error(), "--codec "+other) || !strings.Contains(err.Error(), "stored in zstd:3") {
					t.Fatalf("resume with --codec %s: %v (exit %d), want a usage error naming %s and zstd:3", other, err, exitCode(err), other)
				}
			}
			out, errOut, err = ldmCmd(t, "", append(args, "--resume", "--codec", "zstd:3", "z-"+dt)...)
			if err != nil || !strings.Contains(errOut, "is complete already") {
				t.Fatalf("resume with the volume's own --codec: %v\n%s%s", err, out, errOut)
			}
			sameVolumeVoxels(t, c, "z-"+dt, "r-"+dt, ldmv1.Codec_CODEC_ZSTD, 3)
		})
	}
	t.Run("files", func(t *testing.T) {
		t.Parallel()
		shape := storage.Shape{X: 10, Y: 9, Z: 7}
		dir := t.TempDir()
		vox := encodeVoxels(storage.Uint16, binary.LittleEndian, shape, 1)
		raw := writeTestFile(t, filepath.Join(dir, "v.raw"), vox)
		nii := writeTestFile(t, filepath.Join(dir, "v.nii"), append(niftiBytes(binary.LittleEndian, 348, 512, []int16{10, 9, 7}, [3]float32{1, 1, 1}, false), vox...))
		for _, run := range [][]string{
			{"import", raw, "--name", "file-r", "--shape", "10x9x7", "--dtype", "uint16", "--brick", "8x8x8", "--codec", "raw"},
			{"import", raw, "--name", "file-z", "--shape", "10x9x7", "--dtype", "uint16", "--brick", "8x8x8", "--codec", "zstd:5"},
			{"import", nii, "--name", "nii-z", "--brick", "8x8x8", "--codec", "zstd:5"},
		} {
			if out, errOut, err := ldmCmd(t, "", append(run, "--server", base)...); err != nil {
				t.Fatalf("%v: %v\n%s%s", run, err, out, errOut)
			}
		}
		sameVolumeVoxels(t, c, "file-z", "file-r", ldmv1.Codec_CODEC_ZSTD, 5)
		sameVolumeVoxels(t, c, "nii-z", "file-r", ldmv1.Codec_CODEC_ZSTD, 5)
		// A file with a header goes through its own path: the same check.
		_, _, err := ldmCmd(t, "", "import", nii, "--name", "nii-z", "--brick", "8x8x8", "--resume", "--codec", "raw", "--server", base)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "--codec raw") || !strings.Contains(err.Error(), "stored in zstd:5") {
			t.Fatalf("resume nii-z with --codec raw: %v (exit %d), want a usage error naming raw and zstd:5", err, exitCode(err))
		}
		if out, errOut, err := ldmCmd(t, "", "import", nii, "--name", "nii-z", "--brick", "8x8x8", "--resume", "--server", base); err != nil || !strings.Contains(errOut, "complete already") {
			t.Fatalf("resume nii-z without --codec: %v\n%s%s", err, out, errOut)
		}
	})
	t.Run("default_is_zstd_1", func(t *testing.T) {
		t.Parallel()
		args := []string{"import", "--demo", "--shape", "41x33x29", "--dtype", "uint16", "--brick", "16x16x16", "--server", base}
		out, errOut, err := ldmCmd(t, "", append(args, "d-zstd")...)
		if err != nil || !strings.Contains(errOut, "zstd:1:") || !strings.Contains(errOut, "MB sent (") {
			t.Fatalf("import without --codec: %v\n%s%s", err, out, errOut)
		}
		if out, errOut, err := ldmCmd(t, "", append(args, "--codec", "raw", "d-raw")...); err != nil {
			t.Fatalf("import --codec raw: %v\n%s%s", err, out, errOut)
		}
		sameVolumeVoxels(t, c, "d-zstd", "d-raw", ldmv1.Codec_CODEC_ZSTD, 1)
		out, _, err = ldmCmd(t, "", "volume", "create", "d-empty", "--shape", "8x8x8", "--server", base)
		if err != nil || !strings.Contains(out, `"codec": "CODEC_ZSTD"`) || !strings.Contains(out, `"codecLevel": 1`) {
			t.Fatalf("volume create without --codec: %v\n%s", err, out)
		}
		out, _, err = ldmCmd(t, "", "volume", "create", "r-empty", "--shape", "8x8x8", "--codec", "raw", "--server", base)
		if err != nil || !strings.Contains(out, `"codec": "CODEC_RAW"`) {
			t.Fatalf("volume create --codec raw: %v\n%s", err, out)
		}
	})
	t.Run("bad_codec", func(t *testing.T) {
		t.Parallel()
		_, _, err := ldmCmd(t, "", "import", "--demo", "--shape", "20x20x20", "bad", "--codec", "zstd:99", "--server", base)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "--codec") {
			t.Fatalf("--codec zstd:99: %v (exit %d)", err, exitCode(err))
		}
		if _, err := c.volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "bad"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("a refused --codec created the volume: %v", err)
		}
	})
}
