package main

import (
	"strings"
	"testing"
)

// TestCLI_tile_write_request_id: `ldm tile write --request-id` run twice
// stores the tile once and prints the original offset both times; without
// the flag every run is a new write.
func TestCLI_tile_write_request_id(t *testing.T) {
	t.Parallel()
	base := startTestServer(t)
	ldm := func(stdin string, args ...string) string {
		t.Helper()
		args = append(args, "--server", base)
		out, errOut, err := ldmCmd(t, stdin, args...)
		if err != nil {
			t.Fatalf("ldm %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return strings.TrimSpace(out)
	}
	ldm("", "volume", "create", "retry", "--shape", "64x64x64", "--dtype", "uint8")
	for i := 0; i < 2; i++ {
		if out := ldm("payload", "tile", "write", "retry", "-", "--request-id", "cli-retry-1"); out != "0" {
			t.Fatalf("run %d of tile write --request-id printed %q, want offset 0", i+1, out)
		}
	}
	if out := ldm("payload", "tile", "write", "retry", "-"); out != "1" {
		t.Fatalf("tile write without --request-id printed %q, want offset 1", out)
	}
	if out := ldm("payload", "tile", "write", "retry", "-"); out != "2" {
		t.Fatalf("a second tile write without --request-id printed %q, want offset 2", out)
	}
}
