package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"time"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/internal/coalesce"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/web"
)

// Server is one assembled go-ldm server: the tile store, an optional
// cluster node, authentication, the ldm.v1 service and the HTTP server on
// one listener. Build it with New, then call Serve once; Close releases a
// server that will not serve. Addr and URL are safe for concurrent use.
type Server struct {
	log      *slog.Logger
	listener net.Listener
	url      string
	dataDir  string
	timeout  time.Duration
	tls      bool

	store storage.LDM   // opened by New, closed last; nil when Config.Tiles is served
	tiles service.Tiles // what the service serves: store, node or Config.Tiles
	node  *cluster.Node // nil when the server runs alone
	svc   *service.Server
	http  *http.Server

	tel    *telemetry // metrics and tracing
	health *health    // readiness: /readyz and grpc.health.v1

	// closers release what New built, in reverse order, after the HTTP
	// server has stopped (the store is closed after them).
	closers []func() error
}

// Run builds a server from cfg and serves until ctx ends: New, then Serve.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// New builds a server from cfg, in this order: validate cfg, open the
// store, listen, set up TLS and authentication, start the cluster node,
// build the service, create the demo volume, mount the handlers. Nothing
// is served until Serve. On error everything opened so far is closed, and
// errors of cfg itself wrap ErrInvalidConfig. ctx bounds the set-up (the
// demo volume's writes); it does not bound the server's life.
func New(ctx context.Context, cfg Config) (s *Server, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s = &Server{log: log, dataDir: cfg.DataDir, timeout: cfg.ShutdownTimeout}
	if s.dataDir == "" {
		s.dataDir = DefaultDataDir
	}
	if s.timeout == 0 {
		s.timeout = DefaultShutdownTimeout
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.release())
			s = nil
		}
	}()

	if cfg.Limits.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.Limits.MemoryLimit)
	}

	// 0. Metrics and tracing (see telemetry.go): logs carry the trace id.
	if s.tel, err = newTelemetry(cfg); err != nil {
		return s, err
	}
	s.closers = append(s.closers, s.tel.close)
	if s.tel.otel != nil {
		log = slog.New(traceHandler{log.Handler()})
		s.log = log
	}

	// 1. The store.
	if cfg.Tiles != nil {
		s.tiles = cfg.Tiles
	} else {
		// Through a local: a nil *storage.Store in the interface field
		// would not be nil to release.
		var store *storage.Store
		if store, err = openStore(s.dataDir, cfg, log, s.tel.storeObserver()); err != nil {
			return s, err
		}
		s.store, s.tiles = store, store
	}

	// 2. The listener.
	if s.listener, err = listen(cfg); err != nil {
		return s, err
	}
	advertise := s.listener.Addr().String()

	// 3. TLS and authentication.
	var tlsConfig *tls.Config
	if cfg.TLS.CertFile != "" {
		t := cfg.TLS
		tlsConfig, err = auth.ServerTLS{
			CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile, RequireClientCert: t.RequireClientCert,
			ReloadInterval: t.ReloadInterval, Logger: log,
		}.Config()
		if err != nil {
			return s, err
		}
		if err := addPeerCA(cfg, tlsConfig); err != nil {
			return s, err
		}
	}
	var interceptors []connect.Interceptor
	var middleware []func(http.Handler) http.Handler // the first innermost
	var authenticate func(*http.Request) (context.Context, bool, error)
	var authorizeView func(*http.Request, string) (context.Context, error) // reads of the open-format views
	var shares service.ShareIssuer
	var authorizeMetrics func(*http.Request) error // nil: /metrics is open
	if cfg.authEnabled() {
		a, sh, err := newAuth(cfg, log)
		if err != nil {
			return s, err
		}
		s.closers = append(s.closers, a.Close)
		for _, ic := range a.Interceptors() {
			interceptors = append(interceptors, countDenials{inner: ic, t: s.tel})
		}
		middleware = append(middleware, a.Middleware)
		authenticate = func(r *http.Request) (context.Context, bool, error) {
			ctx, ok, err := a.AuthenticateHTTP(r)
			s.tel.deny(err)
			return ctx, ok, err
		}
		authorizeView = func(r *http.Request, volume string) (context.Context, error) {
			ctx, err := a.AuthorizeHTTP(r, auth.VolumeObject(volume), auth.ActionRead)
			s.tel.deny(err)
			return ctx, err
		}
		authorizeMetrics = metricsAuthorizer(a)
		if sh != nil {
			shares = shareIssuer{sh}
			// Outermost: a share token in the URL becomes the bearer
			// credentials of everything inside.
			middleware = append(middleware, auth.ShareMiddleware)
		}
	} else if tlsConfig != nil {
		// Client certificates still reach the handlers (cluster peers).
		middleware = append(middleware, auth.Middleware)
	}
	if err := checkExposure(cfg, s.listener.Addr(), tlsConfig != nil, log); err != nil {
		return s, err
	}

	// 4. The cluster node, which wraps the store.
	if cfg.Cluster.NodeID != "" {
		if s.node, advertise, err = startNode(cfg, s.dataDir, advertise, tlsConfig != nil, s.store, s.tel, log); err != nil {
			return s, err
		}
		s.closers = append(s.closers, s.node.Close)
		s.tiles = s.node
		if s.tel.reg != nil {
			s.closers = append(s.closers, registerNodeMetrics(s.tel.reg, s.node))
		}
	}
	s.health = newHealth(cfg.Telemetry, s.tiles, s.node, s.tel.registerer())
	interceptors = append(interceptors, watchEnder{s.health})
	if s.tel.reg != nil {
		s.tel.reg.MustRegister(newStoreSizeCollector(s.tiles))
	}
	if s.tel.otel != nil && cfg.Tiles == nil {
		s.tiles = traceWrites(s.tiles, s.tel.tracer)
	}

	// 5. The ldm.v1 service.
	s.svc, err = service.New(service.Config{
		Store:         s.tiles,
		Logger:        log,
		MaxTileBytes:  cfg.MaxTileBytes,
		AdvertiseAddr: advertise,
		Compress:      cfg.Compress,
		Interceptors:  interceptors,
		CORSOrigins:   cfg.CORSOrigins,

		Authenticate:            authenticate,
		MaxUnauthenticatedBytes: cfg.Limits.MaxUnauthenticatedBytes,
		MaxReadBytes:            cfg.Limits.MaxReadBytes,
		MaxIngestBytes:          cfg.Limits.MaxIngestBytes,
		MaxStreamIngestBytes:    cfg.Limits.MaxStreamIngestBytes,
		MaxRegionBytes:          cfg.Limits.MaxRegionBytes,
		Shares:                  shares,
		Telemetry:               s.tel.interceptors(),
		Health:                  s.health.checker,
	})
	if err != nil {
		return s, err
	}

	// 6. The demo volume.
	if cfg.Demo {
		if err := EnsureDemo(ctx, s.tiles, log); err != nil {
			return s, fmt.Errorf("create the demo volume: %w", err)
		}
	}

	// 7. The handlers: the API, the OME-Zarr and Neuroglancer views, the
	// cluster's node-to-node endpoints, the viewer.
	mux := http.NewServeMux()
	for _, p := range s.svc.Paths() {
		mux.Handle(p, s.svc.Handler())
	}
	views, err := s.svc.Views(service.ViewConfig{Authorize: authorizeView, CORSOrigins: cfg.CORSOrigins})
	if err != nil {
		return s, err
	}
	for _, p := range service.ViewPaths() {
		mux.Handle(p, views)
	}
	if s.node != nil {
		mux.Handle(cluster.HandlerPrefix, s.node.Handler())
	}
	mux.HandleFunc(LivezPath, s.health.livez)
	mux.HandleFunc(ReadyzPath, s.health.readyz)
	if s.tel.reg != nil {
		mux.Handle(MetricsPath, s.tel.metricsHandler(authorizeMetrics))
	} else {
		mux.HandleFunc(MetricsPath, func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "metrics are off on this server (ldm serve --metrics=false)", http.StatusNotFound)
		})
	}
	var h http.Handler = mux
	viewer := cfg.Viewer
	if viewer == nil {
		// A page opened with ?volume= carries the volume's metadata.
		viewer = web.HandlerWith(web.Options{Volume: viewerVolume(&h)})
	}
	mux.Handle("/", viewer)
	for _, m := range middleware {
		h = m(h)
	}
	s.http = service.NewHTTPServer(h, tlsConfig, log)
	s.tls = tlsConfig != nil
	scheme := "http"
	if s.tls {
		scheme = "https"
	}
	s.url = scheme + "://" + advertise
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.listener.Addr() }

// URL is the server's base URL as clients reach it (the advertised address
// in a cluster), without a trailing slash.
func (s *Server) URL() string { return s.url }

// Serve serves until ctx ends or the listener fails, then shuts down:
// streams are drained, open calls get up to the shutdown timeout to
// finish, the cluster node and authentication stop and the store is
// closed. It returns nil after a clean shutdown. Call it once.
func (s *Server) Serve(ctx context.Context) (err error) {
	defer func() { err = errors.Join(err, s.release()) }()
	s.http.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	errc := make(chan error, 1)
	// Writes made while one is in the kernel go out in one system call
	// (net/http's HTTP/2 server writes each frame on its own).
	l := coalesce.Listener(s.listener)
	go func() {
		if s.tls {
			errc <- s.http.ServeTLS(l, "", "")
		} else {
			errc <- s.http.Serve(l)
		}
	}()
	s.log.Info("serving", "url", s.url+"/", "data", s.dataDir, "tls", s.tls)
	hctx, stopHealth := context.WithCancel(ctx)
	defer stopHealth()
	go s.health.run(hctx)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Not ready first, so probes and balancers turn away while the
	// leadership moves and the streams drain.
	s.health.stop()
	s.handOffLeadership(context.WithoutCancel(ctx))
	s.log.Info("shutting down: draining streams and waiting for open calls", "timeout", s.timeout)
	s.svc.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		s.log.Warn("open calls did not finish in time; closing their connections", "error", err)
		s.http.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	s.log.Info("stopped")
	return nil
}

// Close releases a server that New built but that will not Serve: it
// closes the listener, stops the node and authentication and closes the
// store. Serve does the same itself when it returns.
func (s *Server) Close() error { return s.release() }

// release closes, once, everything New opened: the listener, then the
// closers in reverse order, then the store.
func (s *Server) release() error {
	var err error
	if s.listener != nil {
		if cerr := s.listener.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	for _, c := range slices.Backward(s.closers) {
		err = errors.Join(err, c())
	}
	s.closers = nil
	if s.store != nil {
		if cerr := s.store.Close(); cerr != nil && !errors.Is(cerr, storage.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
	}
	return err
}

// openStore opens the tile store in dir.
func openStore(dir string, cfg Config, log *slog.Logger, obs storage.Observer) (*storage.Store, error) {
	store, err := storage.Open(dir, storage.Config{MaxTileBytes: cfg.MaxTileBytes, Sync: cfg.Sync, Logger: log, Observer: obs})
	if errors.Is(err, storage.ErrLocked) {
		return nil, fmt.Errorf("%w\n(another ldm serve uses %s: stop it, or give this one its own --data)", err, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open the store in %s: %w", dir, err)
	}
	return store, nil
}

// listen returns cfg.Listener or a new listener on cfg.Addr.
func listen(cfg Config) (net.Listener, error) {
	if cfg.Listener != nil {
		return cfg.Listener, nil
	}
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another server running there? choose another with --addr)", addr, err)
	}
	return l, nil
}
