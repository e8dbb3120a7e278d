package main

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/server"
)

// TestServe_bootstrap_expect_flags: contradictory or incomplete
// --bootstrap-expect settings fail before anything starts, as usage errors
// (exit code 2) that say what to change.
func TestServe_bootstrap_expect_flags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"without_node_id", []string{"--bootstrap-expect", "3"}, "--bootstrap-expect needs --node-id"},
		{"negative", []string{"--node-id", "a", "--bootstrap-expect", "-1", "--join", "ldm-headless"}, "--bootstrap-expect -1"},
		{"with_bootstrap_true", []string{"--node-id", "a", "--bootstrap-expect", "3", "--bootstrap", "true", "--join", "ldm-headless"}, "drop --bootstrap"},
		{"with_bootstrap_false", []string{"--node-id", "a", "--bootstrap-expect", "3", "--bootstrap", "false", "--join", "ldm-headless"}, "contradict"},
		{"without_join", []string{"--node-id", "a", "--bootstrap-expect", "3"}, "needs --join"},
		{"not_a_number", []string{"--node-id", "a", "--bootstrap-expect", "three"}, "bootstrap-expect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(t.TempDir(), "data"), "--gossip-addr", "127.0.0.1:0"}, tc.args...)
			_, _, err := ldmCmd(t, "", args...)
			if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ldm %s: exit %d, %v; want exit 2 and %q", strings.Join(args, " "), exitCode(err), err, tc.want)
			}
			if strings.HasPrefix(tc.name, "with_") || tc.name == "without_join" || tc.name == "negative" {
				if !errors.Is(err, server.ErrInvalidConfig) {
					t.Fatalf("%v: not server.ErrInvalidConfig", err)
				}
			}
		})
	}
}
