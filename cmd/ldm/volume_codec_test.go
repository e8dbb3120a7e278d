package main

import (
	"strings"
	"testing"
)

// TestCLI_volume_codec creates a zstd volume, writes a raw brick to it
// (the server compresses it), reads the voxels back, and recompresses the
// demo volume into a zstd one whose bricks read the same.
func TestCLI_volume_codec(t *testing.T) {
	t.Parallel()
	base := startTestServer(t, "--demo")
	ldm := func(stdin string, args ...string) (string, string) {
		t.Helper()
		args = append(args, "--server", base)
		out, errOut, err := ldmCmd(t, stdin, args...)
		if err != nil {
			t.Fatalf("ldm %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return out, errOut
	}
	if out, _ := ldm("", "volume", "create", "z", "--shape", "16x16x16", "--brick", "16x16x16", "--codec", "zstd:7"); !strings.Contains(out, `"codec": "CODEC_ZSTD"`) || !strings.Contains(out, `"codecLevel": 7`) {
		t.Fatalf("volume create --codec zstd:7 printed %s", out)
	}
	if out, _ := ldm("", "volume", "get", "z"); !strings.Contains(out, `"codec": "CODEC_ZSTD"`) {
		t.Fatalf("volume get printed %s", out)
	}
	if out, _ := ldm("", "volume", "list"); !strings.Contains(out, "CODEC") || !strings.Contains(out, "zstd:7") {
		t.Fatalf("volume list printed %s", out)
	}
	if out, _ := ldm("", "volume", "get", "demo"); !strings.Contains(out, `"codec": "CODEC_RAW"`) {
		t.Fatalf("volume get of a raw volume printed %s", out)
	}
	brick := strings.Repeat("ldm!", 16*16*16/4)
	ldm(brick, "tile", "write", "z", "-", "--brick", "0,0,0,0")
	if out, _ := ldm("", "brick", "get", "z", "0,0,0,0"); out != brick {
		t.Fatalf("brick get of a zstd brick: %d bytes that differ from the %d written", len(out), len(brick))
	}
	if out, _ := ldm("", "tile", "read", "z", "0", "--info"); !strings.Contains(out, "codec=zstd") {
		t.Fatalf("tile read --info printed %q", out)
	}
	if out, errOut := ldm("", "tile", "read", "z", "0"); len(out) >= len(brick) || !strings.Contains(errOut, "zstd") {
		t.Fatalf("tile read of a zstd tile: %d bytes, stderr %q", len(out), errOut)
	}
	if _, _, err := ldmCmd(t, "", "volume", "create", "bad", "--shape", "8x8x8", "--codec", "zstd:99", "--server", base); err == nil || exitCode(err) != 2 {
		t.Fatalf("--codec zstd:99: %v (exit %d), want a usage error", err, exitCode(err))
	}

	_, errOut := ldm("", "volume", "recompress", "demo", "demo-z", "--codec", "zstd:3")
	if !strings.Contains(errOut, "recompressed demo (raw) into demo-z (zstd:3)") {
		t.Fatalf("recompress printed %q", errOut)
	}
	if out, _ := ldm("", "volume", "get", "demo-z"); !strings.Contains(out, `"codec": "CODEC_ZSTD"`) {
		t.Fatalf("volume get demo-z printed %s", out)
	}
	for _, key := range []string{"0,0,0,0", "0,1,1,1", "1,0,0,0"} {
		a, _ := ldm("", "brick", "get", "demo", key)
		b, _ := ldm("", "brick", "get", "demo-z", key)
		if a != b || len(a) == 0 {
			t.Fatalf("brick %s: demo-z has %d bytes that differ from demo's %d", key, len(b), len(a))
		}
	}
	// And back to raw.
	ldm("", "volume", "recompress", "demo-z", "demo-raw", "--codec", "raw")
	a, _ := ldm("", "brick", "get", "demo", "0,1,1,1")
	if b, _ := ldm("", "brick", "get", "demo-raw", "0,1,1,1"); a != b {
		t.Fatal("brick 0,1,1,1 differs after zstd and back to raw")
	}
}
