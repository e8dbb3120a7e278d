package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/server"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// defaultMemoryLimit is the default of --memory-limit: room for the
// default read and ingest budgets, the copies connect-go makes of the
// messages in flight, and the rest of the server.
const defaultMemoryLimit = 768 << 20

// demoVolume is the name of the volume `ldm serve --demo` creates.
const demoVolume = server.DemoVolume

// shutdownTimeout bounds clean-up work a command does after its context
// ends (for example deleting a half-imported volume).
const shutdownTimeout = server.DefaultShutdownTimeout

// serveFlags are the flags of `ldm serve`. config maps them, and nothing
// else, to a server.Config.
type serveFlags struct {
	addr         string
	data         string
	maxTileBytes int
	sync         string
	demo         bool
	compress     bool
	corsOrigins  []string
	limits       server.Limits
	log          logFlags
	security     securityFlags
	cluster      clusterFlags
	telemetry    telemetryFlags
}

func newServeCommand() *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the ldm.v1 API (gRPC, gRPC-Web and Connect on one port)",
		Long: `serve runs a go-ldm server: the ldm.v1 API for gRPC, gRPC-Web and Connect
clients, grpc.health.v1 and server reflection on one HTTP port (HTTP/1.1, h2c,
and HTTP/2 over TLS when a certificate is configured), and the viewer at /.

  ldm serve --demo         a server with a demo volume at http://127.0.0.1:8080/

SIGINT or SIGTERM stops it gracefully: streams end, open calls finish, the
store is closed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(cmd.Flags(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			s, err := newServer(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return s.Serve(cmd.Context())
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// register adds the flags of `ldm serve` to fs.
func (f *serveFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "addr", server.DefaultAddr, "address to listen on (host:port)")
	fs.StringVar(&f.data, "data", server.DefaultDataDir, "directory of the tile store")
	fs.IntVar(&f.maxTileBytes, "max-tile-bytes", storage.DefaultMaxTileBytes, "largest tile accepted, in bytes (larger requests fail with ResourceExhausted)")
	fs.StringVar(&f.sync, "sync", storage.SyncBatch.String(), "when writes reach the disk before they are acknowledged: batch (group commit: concurrent writes share one fsync), always (one fsync per write) or none (left to the OS: fast, a machine crash loses recent writes)")
	fs.BoolVar(&f.demo, "demo", false, "create the demo volume \""+demoVolume+"\" if it is missing")
	fs.BoolVar(&f.compress, "compress", false, "gzip responses for clients that accept it (slow for voxel data)")
	fs.StringSliceVar(&f.corsOrigins, "cors-origin", nil, "origins (scheme://host[:port]) browsers may call from, reads and writes (repeatable; * for any; default: reads from any origin, writes from the server's own only)")
	fs.IntVar(&f.limits.MaxUnauthenticatedBytes, "max-unauthenticated-bytes", service.DefaultMaxUnauthenticatedBytes, "largest request message (after decompression) of a caller without valid credentials, when authentication is on")
	fs.Int64Var(&f.limits.MaxReadBytes, "max-read-bytes", service.DefaultMaxReadBytes, "tile bytes that reads in flight may hold across the server; more reads wait")
	fs.Int64Var(&f.limits.MaxIngestBytes, "max-ingest-bytes", service.DefaultMaxIngestBytes, "tile bytes that write streams may hold queued across the server; streams wait beyond it")
	fs.Int64Var(&f.limits.MaxStreamIngestBytes, "max-stream-ingest-bytes", service.DefaultMaxStreamIngestBytes, "tile bytes that one write stream may hold queued")
	fs.Int64Var(&f.limits.MaxRegionBytes, "max-region-bytes", service.DefaultMaxRegionBytes, "largest box one ReadRegion call (ldm region get) may read, in bytes; larger boxes fail with ResourceExhausted")
	fs.Int64Var(&f.limits.MemoryLimit, "memory-limit", defaultMemoryLimit, "soft limit of the server's Go heap, in bytes: garbage is collected harder near it (0 leaves it to GOMEMLIMIT, which also wins when set)")
	f.log.register(fs)
	f.security.register(fs)
	f.cluster.register(fs)
	f.telemetry.register(fs)
}

// config maps the parsed flags in fs to a server.Config, with the logger
// writing to logOut. Mistakes in single flags are usage errors here; the
// combinations are checked by server.New.
func (f *serveFlags) config(fs *pflag.FlagSet, logOut io.Writer) (server.Config, error) {
	logger, err := f.log.logger(logOut)
	if err != nil {
		return server.Config{}, err
	}
	if f.maxTileBytes <= 0 {
		return server.Config{}, usageError{fmt.Errorf("--max-tile-bytes %d: must be positive", f.maxTileBytes)}
	}
	sync, err := storage.ParseSyncPolicy(f.sync)
	if err != nil {
		return server.Config{}, usageError{fmt.Errorf("--sync: %w", err)}
	}
	if _, set := os.LookupEnv("GOMEMLIMIT"); set && !fs.Changed("memory-limit") {
		f.limits.MemoryLimit = 0 // the environment decides
	}
	cfg := server.Config{
		Addr:         f.addr,
		DataDir:      f.data,
		MaxTileBytes: f.maxTileBytes,
		Sync:         sync,
		Demo:         f.demo,
		Compress:     f.compress,
		CORSOrigins:  f.corsOrigins,
		Limits:       f.limits,
		Logger:       logger,
		Telemetry:    f.telemetry.config(),
	}
	f.security.apply(&cfg)
	if err := f.cluster.apply(fs, &cfg); err != nil {
		return server.Config{}, err
	}
	return cfg, nil
}

// newServer builds a server from cfg; an inconsistent configuration is a
// usage error.
func newServer(ctx context.Context, cfg server.Config) (*server.Server, error) {
	s, err := server.New(ctx, cfg)
	if errors.Is(err, server.ErrInvalidConfig) {
		return nil, usageError{err}
	}
	return s, err
}
