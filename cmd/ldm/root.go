package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// envPrefix is the prefix of environment variables that set flags: the
// flag --max-tile-bytes is also LDM_MAX_TILE_BYTES.
const envPrefix = "LDM_"

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ldm",
		Short: "Store and serve large volumetric datasets as tiles",
		Long: `ldm stores large volumetric datasets (CT, MRI, microscopy, seismic) as tiles in
an append-only tile store and serves them over one HTTP/2 port to gRPC,
gRPC-Web and Connect clients.

Start a server with a demo volume:   ldm serve --demo
List its volumes:                    ldm volume list

Every flag can also be set in the environment: --max-tile-bytes is
LDM_MAX_TILE_BYTES.`,
		Version:       version(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnv(cmd)
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, cmd.CommandPath())}
	})
	root.AddCommand(newServeCommand())
	root.AddCommand(newVolumeCommand())
	root.AddCommand(newTileCommand())
	root.AddCommand(newBrickCommand())
	root.AddCommand(newImportCommand())
	root.AddCommand(newClusterCommand())
	root.AddCommand(newCertsCommand())
	root.AddCommand(newTokenCommand())
	root.AddCommand(newShareCommand())
	root.AddCommand(newRegionCommand())
	root.AddCommand(newExportCommand())
	return root
}

// flagsFromEnv sets every flag of cmd that was not given on the command
// line from its LDM_* environment variable, if set.
func flagsFromEnv(cmd *cobra.Command) error {
	var firstErr error
	apply := func(f *pflag.Flag) {
		if f.Changed || firstErr != nil {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := cmd.Flags().Set(f.Name, v); err != nil {
				firstErr = usageError{fmt.Errorf("environment %s=%q: %w", name, v, err)}
			}
		}
	}
	cmd.Flags().VisitAll(apply)
	return firstErr
}

// version returns the module version and VCS revision the binary was built
// from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := info.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += " " + rev + modified
	}
	return v + " " + info.GoVersion
}

// logFlags are the logging flags of `ldm serve` and other long-running
// commands.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "auto", "log format: text (colored, for a terminal), json, or auto (text on a terminal, json otherwise)")
}

// logger builds the process logger writing to w.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", l.level)}
	}
	format := l.format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text, json or auto", l.format)}
}
