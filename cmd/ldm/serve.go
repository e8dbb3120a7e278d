package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/web"
)

// shutdownTimeout bounds how long `ldm serve` waits for open calls after
// SIGINT or SIGTERM.
const shutdownTimeout = 30 * time.Second

// serveFlags are the flags of `ldm serve`.
type serveFlags struct {
	addr         string
	data         string
	maxTileBytes int
	sync         string
	demo         bool
	compress     bool
	corsOrigins  []string
	log          logFlags
	flagSet      *pflag.FlagSet
}

// serveEnv is what `ldm serve` builds, step by step, and what serve hooks
// read and change. The steps, in order:
//
//  1. flags are parsed, the logger is built, the store is opened (Store)
//     and the listener bound (Listener, AdvertiseAddr);
//  2. every hook's Setup runs: it may replace Tiles (a cluster node wraps
//     Store), add Interceptors (authentication, authorization), set
//     TLSConfig, change AdvertiseAddr, and register cleanups;
//  3. the service is built from Tiles and Interceptors (Service);
//  4. with --demo, the demo volume is created through Tiles if missing;
//  5. every hook's Mount runs: it may mount handlers on Mux (for example
//     a Raft endpoint) or set Root (the viewer, served at "/");
//  6. the server serves Mux on Listener (TLS when TLSConfig is set) until
//     the context ends; then streams are drained, open calls finish,
//     cleanups run in reverse order and Store is closed.
type serveEnv struct {
	Logger        *slog.Logger
	Flags         *serveFlags
	Store         storage.LDM
	Tiles         service.Tiles
	Listener      net.Listener
	AdvertiseAddr string
	Interceptors  []connect.Interceptor
	TLSConfig     *tls.Config
	Service       *service.Server
	Mux           *http.ServeMux
	Root          http.Handler
	// FlagSet holds the flags of this `ldm serve` command. Hooks whose
	// Flags bind per-command state find it by this key (several commands
	// may run in one process, as in tests).
	FlagSet *pflag.FlagSet
	// Middleware wraps the whole handler (Mux) of the server, the first
	// element innermost. The TLS hook adds the one that puts the verified
	// client certificate into the request context.
	Middleware []func(http.Handler) http.Handler

	cleanups []func(context.Context) error
}

// OnShutdown registers f to run at shutdown, after the HTTP server has
// stopped and before the store is closed. Cleanups run in reverse order of
// registration.
func (e *serveEnv) OnShutdown(f func(context.Context) error) { e.cleanups = append(e.cleanups, f) }

// serveHook extends `ldm serve`. Other files of this package register
// hooks from init with registerServeHook; hooks run in registration order
// (file name order within the package). Any field may be nil.
type serveHook struct {
	// Name identifies the hook in errors.
	Name string
	// Flags registers the hook's flags on `ldm serve`.
	Flags func(fs *pflag.FlagSet)
	// Setup runs before the service is built (step 2 of serveEnv).
	Setup func(ctx context.Context, env *serveEnv) error
	// Mount runs after the service is built (step 5 of serveEnv).
	Mount func(ctx context.Context, env *serveEnv) error
}

var serveHooks []*serveHook

// The viewer (package web's embedded bundle) is served at "/".
func init() {
	registerServeHook(&serveHook{Name: "viewer", Mount: func(_ context.Context, env *serveEnv) error {
		env.Root = web.Handler()
		return nil
	}})
}

// registerServeHook adds a hook to `ldm serve`; call it from init.
func registerServeHook(h *serveHook) { serveHooks = append(serveHooks, h) }

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
			return serve(cmd.Context(), f, cmd.ErrOrStderr())
		},
	}
	fs := cmd.Flags()
	f.flagSet = fs
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on (host:port)")
	fs.StringVar(&f.data, "data", "./ldm-data", "directory of the tile store")
	fs.IntVar(&f.maxTileBytes, "max-tile-bytes", storage.DefaultMaxTileBytes, "largest tile accepted, in bytes (larger requests fail with ResourceExhausted)")
	fs.StringVar(&f.sync, "sync", storage.SyncBatch.String(), "when writes reach the disk before they are acknowledged: batch (group commit: concurrent writes share one fsync), always (one fsync per write) or none (left to the OS: fast, a machine crash loses recent writes)")
	fs.BoolVar(&f.demo, "demo", false, "create the demo volume \""+demoVolume+"\" if it is missing")
	fs.BoolVar(&f.compress, "compress", false, "gzip responses for clients that accept it (slow for voxel data)")
	fs.StringSliceVar(&f.corsOrigins, "cors-origin", nil, "origins browsers may call from (repeatable; default any)")
	f.log.register(fs)
	for _, h := range serveHooks {
		if h.Flags != nil {
			h.Flags(fs)
		}
	}
	return cmd
}

// serve runs `ldm serve` until ctx ends.
func serve(ctx context.Context, f *serveFlags, logOut io.Writer) error {
	logger, err := f.log.logger(logOut)
	if err != nil {
		return err
	}
	if f.maxTileBytes <= 0 {
		return usageError{fmt.Errorf("--max-tile-bytes %d: must be positive", f.maxTileBytes)}
	}
	store, err := openStore(f, logger)
	if err != nil {
		return err
	}
	env := &serveEnv{Logger: logger, Flags: f, Store: store, Tiles: store, Mux: http.NewServeMux(), Root: placeholderHandler(), FlagSet: f.flagSet}
	err = serveEnvRun(ctx, env)
	if cerr := store.Close(); cerr != nil && !errors.Is(cerr, storage.ErrClosed) {
		err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
	}
	return err
}

// openStore opens the tile store in --data.
func openStore(f *serveFlags, logger *slog.Logger) (storage.LDM, error) {
	policy, err := storage.ParseSyncPolicy(f.sync)
	if err != nil {
		return nil, usageError{fmt.Errorf("--sync: %w", err)}
	}
	store, err := storage.Open(f.data, storage.Config{MaxTileBytes: f.maxTileBytes, Sync: policy, Logger: logger})
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%w\n(another ldm serve uses %s: stop it, or give this one its own --data)", err, f.data)
	}
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", f.data, err)
	}
	return store, nil
}

// serveEnvRun runs steps 1 (listener) to 6 of serveEnv.
func serveEnvRun(ctx context.Context, env *serveEnv) (err error) {
	f, logger := env.Flags, env.Logger
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		for _, c := range slices.Backward(env.cleanups) {
			err = errors.Join(err, c(sctx))
		}
	}()
	l, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another server running there? choose another with --addr)", f.addr, err)
	}
	defer l.Close()
	env.Listener = l
	env.AdvertiseAddr = l.Addr().String()

	for _, h := range serveHooks {
		if h.Setup != nil {
			if err := h.Setup(ctx, env); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
	svc, err := service.New(service.Config{
		Store:         env.Tiles,
		Logger:        logger,
		MaxTileBytes:  f.maxTileBytes,
		AdvertiseAddr: env.AdvertiseAddr,
		Compress:      f.compress,
		Interceptors:  env.Interceptors,
		CORSOrigins:   f.corsOrigins,
	})
	if err != nil {
		return err
	}
	env.Service = svc
	for _, p := range svc.Paths() {
		env.Mux.Handle(p, svc.Handler())
	}
	if f.demo {
		if err := ensureDemo(ctx, env.Tiles, logger); err != nil {
			return fmt.Errorf("create the demo volume: %w", err)
		}
	}
	for _, h := range serveHooks {
		if h.Mount != nil {
			if err := h.Mount(ctx, env); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	}
	env.Mux.Handle("/", env.Root)

	srv := service.NewHTTPServer(wrapHandler(env.Mux, env.Middleware), env.TLSConfig, logger)
	srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	scheme := "http"
	errc := make(chan error, 1)
	go func() {
		if env.TLSConfig != nil {
			errc <- srv.ServeTLS(l, "", "")
		} else {
			errc <- srv.Serve(l)
		}
	}()
	if env.TLSConfig != nil {
		scheme = "https"
	}
	logger.Info("serving", "url", scheme+"://"+env.AdvertiseAddr+"/", "data", f.data, "tls", env.TLSConfig != nil)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: draining streams and waiting for open calls", "timeout", shutdownTimeout)
	svc.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("open calls did not finish in time; closing their connections", "error", err)
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}
