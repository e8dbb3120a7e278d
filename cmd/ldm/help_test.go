package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelp_flag_value_names walks every command's flags and fails on a
// usage string that pflag would misread: a backquoted word in a usage
// string becomes the flag's value name in the help (`--tokens ldm token
// create` in place of `--tokens string`).
func TestHelp_flag_value_names(t *testing.T) {
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		check := func(f *pflag.Flag) {
			seen++
			if strings.Contains(f.Usage, "`") {
				t.Errorf("%s --%s: usage %q has a backquote, which pflag shows as the value name", c.CommandPath(), f.Name, f.Usage)
			}
			if name, _ := pflag.UnquoteUsage(f); strings.ContainsAny(name, " \t") {
				t.Errorf("%s --%s: value name %q is not one word", c.CommandPath(), f.Name, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := newRootCommand()
	root.InitDefaultHelpFlag()
	walk(root)
	if seen < 50 {
		t.Fatalf("only %d flags seen: the walk missed commands", seen)
	}
}
