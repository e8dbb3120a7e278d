package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/client"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/pyramid"
)

// TestCLI_every_client_command runs each client subcommand in-process
// against a real `ldm serve --demo`, with each protocol.
func TestCLI_every_client_command(t *testing.T) {
	t.Parallel()
	base := startTestServer(t, "--demo")
	for _, proto := range []string{"connect", "grpc", "grpcweb"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			ldm := func(stdin string, args ...string) string {
				t.Helper()
				args = append(args, "--server", base, "--protocol", proto)
				out, errOut, err := ldmCmd(t, stdin, args...)
				if err != nil {
					t.Fatalf("ldm %s: %v\n%s", strings.Join(args, " "), err, errOut)
				}
				return out
			}
			name := "cli-" + proto
			// Raw: the tiles written below are a few bytes, not bricks.
			if out := ldm("", "volume", "create", name, "--shape", "128x64x64", "--dtype", "uint16", "--label", "k=v", "--codec", "raw"); !strings.Contains(out, `"lodCount": 2`) {
				t.Fatalf("volume create printed %s", out)
			}
			if out := ldm("", "volume", "get", name); !strings.Contains(out, `"DATA_TYPE_UINT16"`) || !strings.Contains(out, `"k": "v"`) {
				t.Fatalf("volume get printed %s", out)
			}
			if out := ldm("", "volume", "list"); !strings.Contains(out, name) || !strings.Contains(out, "demo") {
				t.Fatalf("volume list printed %s", out)
			}
			if out := ldm("first tile", "tile", "write", name, "-", "--brick", "0,1,0,0"); strings.TrimSpace(out) != "0" {
				t.Fatalf("tile write printed %q, want offset 0", out)
			}
			file := filepath.Join(t.TempDir(), "tile.bin")
			if err := os.WriteFile(file, []byte("second tile"), 0o644); err != nil {
				t.Fatal(err)
			}
			if out := ldm("", "tile", "write", name, file); strings.TrimSpace(out) != "1" {
				t.Fatalf("tile write printed %q, want offset 1", out)
			}
			if out := ldm("", "tile", "read", name, "1"); out != "second tile" {
				t.Fatalf("tile read printed %q", out)
			}
			if out := ldm("", "tile", "read", name, "0", "--info"); !strings.Contains(out, "offset=0 bytes=10") || !strings.Contains(out, "key=0,1,0,0") {
				t.Fatalf("tile read --info printed %q", out)
			}
			if out := ldm("", "tile", "stream", name); strings.Count(out, "\n") != 2 || !strings.Contains(out, "offset=1 bytes=11") {
				t.Fatalf("tile stream printed %q", out)
			}
			if out := ldm("", "brick", "get", name, "0,1,0,0"); out != "first tile" {
				t.Fatalf("brick get printed %q", out)
			}
			// The demo volume's LOD 0 brick (1,1,1) holds voxels 64..127.
			brick := ldm("", "brick", "get", "demo", "0,1,1,1")
			if len(brick) != 64*64*64 || brick[((80-64)*64+(80-64))*64+(80-64)] != pyramid.PhantomCube {
				t.Fatalf("demo brick (1,1,1): %d bytes, voxel (80,80,80) = %d", len(brick), brick[((80-64)*64+(80-64))*64+(80-64)])
			}
			ldm("", "import", "--demo", "--name", "phantom-"+proto, "-q")
			if out := ldm("", "volume", "get", "phantom-"+proto); !strings.Contains(out, `"nextOffset": "73"`) {
				t.Fatalf("after import --demo: %s", out)
			}
			ldm("", "volume", "delete", name)
			if _, errOut, err := ldmCmd(t, "", "volume", "get", name, "--server", base, "--protocol", proto); connect.CodeOf(err) != connect.CodeNotFound || exitCode(err) != 1 {
				t.Fatalf("get of a deleted volume: %v (exit %d) %s", err, exitCode(err), errOut)
			}
		})
	}
}

// TestCLI_import_raw_file imports a raw uint16 file and checks voxels of
// each level against the source.
func TestCLI_import_raw_file(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	const nx, ny, nz = 70, 40, 33 // not multiples of the brick: edge bricks are padded
	raw := make([]byte, nx*ny*nz*2)
	for i := range nx * ny * nz {
		raw[2*i] = byte(i)
		raw[2*i+1] = byte(i >> 8)
	}
	file := filepath.Join(t.TempDir(), "vol.raw")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := ldmCmd(t, "", "import", file, "--name", "raw", "--shape", "70x40x33", "--dtype", "uint16", "--brick", "32x32x16", "--server", base)
	if err != nil {
		t.Fatalf("import: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "imported raw:") {
		t.Fatalf("import printed %q", errOut)
	}
	c := testClients(t, base)
	ctx := context.Background()
	v, err := c.volumes.GetVolume(ctx, connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "raw"}))
	if err != nil {
		t.Fatal(err)
	}
	// 70x40x33 in 32x32x16 bricks: levels until one brick fits: 70->35->18.
	if got := v.Msg.GetVolume().GetLodCount(); got != 3 {
		t.Fatalf("lod_count %d, want 3", got)
	}
	b, err := c.volumes.GetBrick(ctx, connect.NewRequest(&ldmv1.GetBrickRequest{Volume: "raw", Key: &ldmv1.BrickKey{X: 2, Y: 1, Z: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	// Voxel (65, 33, 32) is at (1, 1, 0) in brick (2,1,2); the brick is
	// zstd, the default codec.
	i := (32*ny+33)*nx + 65
	off := ((0*32+1)*32 + 1) * 2
	got, err := client.BrickVoxels(v.Msg.GetVolume(), b.Msg.GetTile())
	if err != nil {
		t.Fatal(err)
	}
	if got[off] != byte(i) || got[off+1] != byte(i>>8) {
		t.Fatalf("voxel (65,33,32) = %d, want %d", int(got[off])|int(got[off+1])<<8, i&0xffff)
	}
	// A file of the wrong size is a usage error that names the sizes.
	_, _, err = ldmCmd(t, "", "import", file, "--name", "bad", "--shape", "70x40x34", "--dtype", "uint16", "--server", base)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "check the shape") {
		t.Fatalf("import of a file of the wrong size: %v (exit %d)", err, exitCode(err))
	}
}

// TestCLI_import_failure_removes_volume checks that an import the server
// refuses part way (bricks over --max-tile-bytes) removes the volume it
// created and says so, so the same command can run again.
func TestCLI_import_failure_removes_volume(t *testing.T) {
	t.Parallel()
	base := startTestServer(t, "--max-tile-bytes", "1000")
	file := filepath.Join(t.TempDir(), "vol.raw")
	if err := os.WriteFile(file, make([]byte, 40*40*40), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"import", file, "--name", "big", "--shape", "40x40x40", "--dtype", "uint8", "--brick", "32x32x32"},
		{"import", "--demo", "--name", "big"},
	} {
		_, errOut, err := ldmCmd(t, "", append(args, "--server", base)...)
		if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), `the incomplete volume "big" was removed`) || !strings.Contains(err.Error(), "choose a smaller --brick") {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		_, err = testClients(t, base).volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "big"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("%v: the volume of a failed import: %v, want NotFound", args, err)
		}
	}
}

// TestCLI_errors_tell_what_to_do checks exit codes and messages of common
// mistakes.
func TestCLI_errors_tell_what_to_do(t *testing.T) {
	t.Parallel()
	_, _, err := ldmCmd(t, "", "volume", "list", "--server", "http://127.0.0.1:1")
	if exitCode(err) != 3 || !strings.Contains(err.Error(), "is `ldm serve` running") {
		t.Fatalf("unreachable server: %v (exit %d)", err, exitCode(err))
	}
	_, _, err = ldmCmd(t, "", "volume", "list", "--protocol", "carrier-pigeon")
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "want connect, grpc or grpcweb") {
		t.Fatalf("bad protocol: %v (exit %d)", err, exitCode(err))
	}
	// An RPC error says what to do next.
	base := startTestServer(t)
	_, _, err = ldmCmd(t, "", "tile", "read", "nosuch", "0", "--server", base)
	if connect.CodeOf(err) != connect.CodeNotFound || exitCode(err) != 1 || !strings.Contains(err.Error(), "'ldm volume list'") {
		t.Fatalf("unknown volume: %v (exit %d)", err, exitCode(err))
	}
	_, _, err = ldmCmd(t, "", "volume", "create", "twice", "--shape", "8x8x8", "--dtype", "uint8", "--server", base)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ldmCmd(t, "", "volume", "create", "twice", "--shape", "8x8x8", "--dtype", "uint8", "--server", base)
	if connect.CodeOf(err) != connect.CodeAlreadyExists || !strings.Contains(err.Error(), "choose another name") {
		t.Fatalf("volume created twice: %v", err)
	}
	_, _, err = ldmCmd(t, "", "tile", "read", "twice", "5", "--server", base)
	if connect.CodeOf(err) != connect.CodeOutOfRange || !strings.Contains(err.Error(), "valid offsets are below it") {
		t.Fatalf("offset past the end: %v", err)
	}
	for _, sp := range []string{"NaN,1,1", "1,Inf,1", "1,1,0"} {
		_, _, err = ldmCmd(t, "", "volume", "create", "sp", "--shape", "8x8x8", "--spacing", sp, "--server", base)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), "three positive numbers") {
			t.Fatalf("--spacing %s: %v (exit %d)", sp, err, exitCode(err))
		}
	}
	_, _, err = ldmCmd(t, "", "volume", "list", "--no-such-flag")
	if exitCode(err) != 2 {
		t.Fatalf("unknown flag: %v (exit %d)", err, exitCode(err))
	}
	_, _, err = ldmCmd(t, "", "serve", "--sync", "sometimes", "--data", t.TempDir())
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "--sync") {
		t.Fatalf("bad --sync: %v (exit %d)", err, exitCode(err))
	}
}

// TestServe_env_sets_flags checks that LDM_* variables set flags: a tile
// over LDM_MAX_TILE_BYTES is refused.
func TestServe_env_sets_flags(t *testing.T) {
	t.Setenv("LDM_MAX_TILE_BYTES", "1000")
	base := startTestServer(t)
	c := testClients(t, base)
	ctx := context.Background()
	if _, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&ldmv1.CreateVolumeRequest{Volume: &ldmv1.Volume{
		Name: "small", Shape: &ldmv1.Shape{X: 8, Y: 8, Z: 8}, DataType: ldmv1.DataType_DATA_TYPE_UINT8,
	}})); err != nil {
		t.Fatal(err)
	}
	_, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "small", Tile: &ldmv1.Tile{Value: make([]byte, 1001)}}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("tile over LDM_MAX_TILE_BYTES: %v", err)
	}
}

// TestServe_graceful_shutdown cancels a running `ldm serve` with a follow
// stream open: the stream ends cleanly, Serve returns nil, and the data is
// there after a restart on the same directory (the demo is not created
// twice).
func TestServe_graceful_shutdown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := serveConfig(t, "--addr", "127.0.0.1:0", "--data", dir, "--demo", "--log-level", "error", "--log-format", "json")
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ldm serve: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	base := s.URL()
	c := testClients(t, base)
	follow, err := c.tiles.ReadTileStream(context.Background(), connect.NewRequest(&ldmv1.ReadTileStreamRequest{Volume: "demo", Offset: 73, Follow: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	cancel()
	if follow.Receive() {
		t.Fatal("a tile arrived on shutdown")
	}
	if err := follow.Err(); err != nil {
		t.Fatalf("follow stream on shutdown: %v, want a clean end", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ldm serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ldm serve did not stop")
	}

	base = startTestServerIn(t, dir, "--demo")
	v, err := testClients(t, base).volumes.GetVolume(context.Background(), connect.NewRequest(&ldmv1.GetVolumeRequest{Name: "demo"}))
	if err != nil || v.Msg.GetVolume().GetNextOffset() != 73 {
		t.Fatalf("demo after restart: %v %v", v, err)
	}
}

// startTestServerIn is startTestServer on a given data directory.
func startTestServerIn(tb testing.TB, dir string, flags ...string) string {
	tb.Helper()
	return startTestServer(tb, append([]string{"--data", dir}, flags...)...)
}

// bufPath returns the buf CLI installed by `make deps`.
func bufPath(tb testing.TB) string {
	tb.Helper()
	p, err := filepath.Abs(repoPath("web/node_modules/.bin/buf"))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("buf is not installed at %s: run `make deps` (npm ci in web/) first: %v", p, err)
	}
	return p
}

// TestBufCurl_through_reflection runs `buf curl` against a running
// `ldm serve --demo` with each protocol; buf learns the schema from server
// reflection (no proto files).
func TestBufCurl_through_reflection(t *testing.T) {
	t.Parallel()
	buf := bufPath(t)
	base := startTestServer(t, "--demo")
	for _, proto := range []string{"grpc", "grpcweb", "connect"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			curl := func(method, data string) string {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, buf, "curl", "--protocol", proto, "--http2-prior-knowledge", "-d", data, base+"/"+method)
				cmd.Dir = t.TempDir() // no buf.yaml: the schema must come from reflection
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					var ee *exec.ExitError
					if errors.As(err, &ee) {
						t.Fatalf("buf curl %s: %v\n%s%s", method, err, stdout.String(), stderr.String())
					}
					t.Fatal(err)
				}
				return stdout.String()
			}
			if out := curl("ldm.v1.VolumeService/ListVolumes", "{}"); !strings.Contains(out, `"name": "demo"`) {
				t.Fatalf("ListVolumes: %s", out)
			}
			if out := curl("ldm.v1.VolumeService/GetBrick", `{"volume":"demo","key":{"lod":2}}`); !strings.Contains(out, `"lod": 2`) || !strings.Contains(out, `"crc32c"`) {
				t.Fatalf("GetBrick: %.300s", out)
			}
			if out := curl("ldm.v1.TileService/ReadTileStream", `{"volume":"demo","offset":71}`); strings.Count(out, `"tile"`) != 2 {
				t.Fatalf("ReadTileStream from 71: %d tiles", strings.Count(out, `"tile"`))
			}
			if out := curl("ldm.v1.ClusterService/GetServers", "{}"); !strings.Contains(out, `"isLeader": true`) {
				t.Fatalf("GetServers: %s", out)
			}
			if out := curl("grpc.health.v1.Health/Check", "{}"); !strings.Contains(out, "SERVING") {
				t.Fatalf("health: %s", out)
			}
		})
	}
}
