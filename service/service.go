package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
)

// messageOverhead is the room left above MaxTileBytes for the rest of a
// message (volume name, key, offsets, protobuf tags).
const messageOverhead = 64 << 10

// compressMinBytes is the smallest message compressed when Config.Compress
// is set.
const compressMinBytes = 1 << 10

// Config configures a Server. The zero value is valid except for Store,
// which is required. A Config must not be changed after New.
type Config struct {
	// Store is the data behind the handlers. Required.
	Store Tiles
	// Logger receives access logs and errors; nil means slog.Default().
	Logger *slog.Logger
	// MaxTileBytes is the largest tile accepted and the base of the maximum
	// message size (larger messages fail with ResourceExhausted). Zero means
	// storage.DefaultMaxTileBytes.
	MaxTileBytes int
	// AdvertiseAddr is the address (host:port) clients use to reach this
	// node, reported by GetServers on a single node.
	AdvertiseAddr string
	// NodeID is this node's id, reported by GetServers on a single node.
	// Empty means AdvertiseAddr.
	NodeID string
	// Compress lets responses be gzip-compressed when a client accepts gzip.
	// Off by default: voxel tiles compress poorly and gzip costs about ten
	// times the serving throughput. Compressed requests are accepted either
	// way.
	Compress bool
	// Interceptors run on every ldm.v1 call, unary and streaming, after
	// access logging and panic recovery and before request validation and
	// the handler (authentication and authorization go here). The first is
	// the outermost. Health checks and reflection do not run them.
	Interceptors []connect.Interceptor
	// CORSOrigins lists the origins (scheme://host[:port]) browsers may
	// call from besides the server's own. Empty means: read-only calls
	// from any origin, everything else from the server's own origin only;
	// "*" allows every origin for every call. A cross-origin call that is
	// not allowed fails with PermissionDenied before its body is read (see
	// cors.go). Credentials (cookies) are never allowed.
	CORSOrigins []string

	// Authenticate, when set, decides who calls from the request's headers
	// (and TLS state) alone, before any byte of the body is read or
	// decompressed, for every call of every service. It returns the context
	// the call runs in (carrying the caller's identity for Interceptors),
	// and whether the caller is authenticated: calls of callers who are
	// not get the tighter MaxUnauthenticatedBytes limit. An error fails the
	// call at once (it should be a *connect.Error, normally
	// Unauthenticated) without reading the body. Nil means every caller
	// gets the full message limit.
	Authenticate func(r *http.Request) (ctx context.Context, authenticated bool, err error)
	// MaxUnauthenticatedBytes is the largest request message, after
	// decompression, of a caller that Authenticate did not authenticate
	// (and of health and reflection calls); larger messages fail with
	// ResourceExhausted. Zero means DefaultMaxUnauthenticatedBytes.
	MaxUnauthenticatedBytes int
	// MaxReadBytes bounds the tile bytes that reads in flight (ReadTile,
	// GetBrick, ReadTileStream, StreamBricks) hold across the server, until
	// the client has taken them; a read waits for room. Tiles above 1 MiB
	// may take three quarters of it, so small reads always find room; a
	// tile larger than that is read alone. Zero means DefaultMaxReadBytes.
	MaxReadBytes int64
	// MaxIngestBytes bounds the tile bytes that WriteTileStream streams
	// hold queued for the store, across the server; MaxStreamIngestBytes
	// bounds one stream. A stream stops reading (HTTP/2 flow control holds
	// the client back) while its tiles would exceed either. A CODEC_ZSTD
	// tile counts as its bytes plus the content size its frame declares,
	// in streams and in WriteTile (server-wide only); one that cannot fit
	// is refused (see decodedBytes). Zero means
	// DefaultMaxIngestBytes and DefaultMaxStreamIngestBytes.
	MaxIngestBytes, MaxStreamIngestBytes int64
	// DrainGrace is how long Drain lets an open stream's pending write
	// reach its client before resetting the stream. Zero means
	// DefaultDrainGrace.
	DrainGrace time.Duration

	// MaxRegionBytes caps the bytes of one ReadRegion box; a larger box
	// fails with ResourceExhausted naming the cap. Zero means
	// DefaultMaxRegionBytes.
	MaxRegionBytes int64
	// Shares issues the tokens of CreateShare; nil makes CreateShare fail
	// with FailedPrecondition (share links are not configured).
	Shares ShareIssuer

	// Telemetry interceptors run first on every call of every service
	// (health and reflection too), before the access log and panic
	// recovery, so the access log sees what they put in the context (the
	// trace of the call). The first is the outermost.
	Telemetry []connect.Interceptor
	// Health answers grpc.health.v1 Check and Watch; nil reports every
	// service SERVING for the server's life.
	Health grpchealth.Checker
}

// Defaults of the limits in Config.
const (
	DefaultMaxUnauthenticatedBytes       = 64 << 10
	DefaultMaxReadBytes            int64 = 128 << 20
	DefaultMaxIngestBytes          int64 = 128 << 20
	DefaultMaxStreamIngestBytes    int64 = 64 << 20
)

// Server holds the ldm.v1 handlers. Create it with New; it is safe for
// concurrent use.
type Server struct {
	store   Tiles
	log     *slog.Logger
	maxTile int
	addr    string
	id      string

	// drain ends follow streams and brick streams when the server shuts
	// down (see Drain).
	drain       context.Context
	cancelDrain context.CancelFunc

	// authenticate is Config.Authenticate.
	authenticate func(r *http.Request) (context.Context, bool, error)
	// reads and ingest bound the tile bytes calls hold (see Config).
	reads, ingest *byteBudget
	// streamIngest is Config.MaxStreamIngestBytes.
	streamIngest int64
	// streams are the open streams Drain resets when their client does
	// not read; drainGrace is how long it waits first.
	streams    streams
	drainGrace time.Duration
	// ids deduplicates writes by request id when the store cannot (see
	// IdempotentAppender).
	ids requestIDs
	// maxRegion is Config.MaxRegionBytes; shares is Config.Shares.
	maxRegion int64
	shares    ShareIssuer

	handler http.Handler
	paths   []string
}

// New validates cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("service: Config.Store is required")
	}
	if cfg.MaxTileBytes < 0 {
		return nil, fmt.Errorf("service: Config.MaxTileBytes %d is negative", cfg.MaxTileBytes)
	}
	if cfg.MaxTileBytes == 0 {
		cfg.MaxTileBytes = storage.DefaultMaxTileBytes
	}
	if cfg.MaxTileBytes > math.MaxInt32-messageOverhead {
		return nil, fmt.Errorf("service: Config.MaxTileBytes %d is above the largest message (2 GiB)", cfg.MaxTileBytes)
	}
	for i, ic := range cfg.Interceptors {
		if ic == nil {
			return nil, fmt.Errorf("service: Config.Interceptors[%d] is nil", i)
		}
	}
	if cfg.MaxUnauthenticatedBytes < 0 || cfg.MaxReadBytes < 0 || cfg.MaxIngestBytes < 0 || cfg.MaxStreamIngestBytes < 0 || cfg.DrainGrace < 0 {
		return nil, errors.New("service: Config limits must not be negative")
	}
	if cfg.MaxUnauthenticatedBytes == 0 {
		cfg.MaxUnauthenticatedBytes = DefaultMaxUnauthenticatedBytes
	}
	if cfg.MaxReadBytes == 0 {
		cfg.MaxReadBytes = DefaultMaxReadBytes
	}
	if cfg.MaxIngestBytes == 0 {
		cfg.MaxIngestBytes = DefaultMaxIngestBytes
	}
	if cfg.MaxStreamIngestBytes == 0 {
		cfg.MaxStreamIngestBytes = DefaultMaxStreamIngestBytes
	}
	if cfg.DrainGrace == 0 {
		cfg.DrainGrace = DefaultDrainGrace
	}
	if cfg.MaxRegionBytes < 0 {
		return nil, errors.New("service: Config.MaxRegionBytes must not be negative")
	}
	if cfg.MaxRegionBytes == 0 {
		cfg.MaxRegionBytes = DefaultMaxRegionBytes
	}
	if err := checkCORSOrigins(cfg.CORSOrigins); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{
		store:   cfg.Store,
		log:     logger.With("component", "service"),
		maxTile: cfg.MaxTileBytes,
		addr:    cfg.AdvertiseAddr,
		id:      cfg.NodeID,

		authenticate: cfg.Authenticate,
		reads:        newByteBudget(cfg.MaxReadBytes),
		ingest:       newByteBudget(cfg.MaxIngestBytes),
		streamIngest: cfg.MaxStreamIngestBytes,
		drainGrace:   cfg.DrainGrace,
		maxRegion:    cfg.MaxRegionBytes,
		shares:       cfg.Shares,
	}
	if s.id == "" {
		s.id = s.addr
	}
	s.drain, s.cancelDrain = context.WithCancel(context.Background())

	interceptors := append([]connect.Interceptor(nil), cfg.Telemetry...)
	interceptors = append(interceptors, logInterceptor{log: s.log}, recoverInterceptor{log: s.log})
	interceptors = append(interceptors, cfg.Interceptors...)
	interceptors = append(interceptors, validateInterceptor{maxTile: s.maxTile, lookup: s.store.Volume})
	// Two sets of the same handlers, which differ only in the largest
	// request message: full for authenticated callers (or every caller
	// when there is no authentication), small for the others. The gate
	// picks one from the headers before the body is read.
	full := s.buildMux(cfg, interceptors, cfg.MaxTileBytes+messageOverhead, true)
	small := full
	if s.authenticate != nil {
		small = s.buildMux(cfg, interceptors, min(cfg.MaxUnauthenticatedBytes, cfg.MaxTileBytes+messageOverhead), false)
	}
	s.handler = newCORS(cfg.CORSOrigins, s.gate(withCalls(full), withCalls(small)))
	return s, nil
}

// buildMux mounts every service with interceptors and the given largest
// request message (after decompression). Health and reflection get the
// smaller of it and Config.MaxUnauthenticatedBytes. record keeps the paths
// for Paths.
func (s *Server) buildMux(cfg Config, interceptors []connect.Interceptor, readMax int, record bool) *http.ServeMux {
	compressMin := math.MaxInt32 // never compress responses
	if cfg.Compress {
		compressMin = compressMinBytes
	}
	opts := []connect.HandlerOption{
		connect.WithInterceptors(interceptors...),
		connect.WithReadMaxBytes(readMax),
		connect.WithSendMaxBytes(cfg.MaxTileBytes + messageOverhead),
		connect.WithCompressMinBytes(compressMin),
		limitedGzip(readMax),
		limitedZstd(readMax, nil),
	}
	mux := http.NewServeMux()
	mount := func(path string, h http.Handler) {
		mux.Handle(path, h)
		if record {
			s.paths = append(s.paths, path)
		}
	}
	mount(ldmv1connect.NewTileServiceHandler(&tileHandler{s: s}, opts...))
	mount(ldmv1connect.NewVolumeServiceHandler(&volumeHandler{s: s}, opts...))
	mount(ldmv1connect.NewClusterServiceHandler(&clusterHandler{s: s}, opts...))
	// The tile reads answer with each tile's kept encoding (encoded.go),
	// on their own paths, which take precedence over the services' above.
	for path, h := range s.tileReadHandlers(append(opts[:len(opts):len(opts)], tileCompression(readMax))) {
		mux.Handle(path, h)
	}
	names := []string{
		ldmv1connect.TileServiceName,
		ldmv1connect.VolumeServiceName,
		ldmv1connect.ClusterServiceName,
	}
	// Health and reflection get the extra interceptors too, but not request
	// validation. Probes and tools call them without credentials: the
	// authentication interceptors of service/auth let them through unless
	// configured otherwise (auth.Config.Public).
	plainInterceptors := append([]connect.Interceptor(nil), cfg.Telemetry...)
	plainInterceptors = append(plainInterceptors, logInterceptor{log: s.log}, recoverInterceptor{log: s.log})
	plainInterceptors = append(plainInterceptors, cfg.Interceptors...)
	plain := []connect.HandlerOption{
		connect.WithInterceptors(plainInterceptors...),
		connect.WithReadMaxBytes(min(readMax, cfg.MaxUnauthenticatedBytes)),
		limitedGzip(min(readMax, cfg.MaxUnauthenticatedBytes)),
		limitedZstd(min(readMax, cfg.MaxUnauthenticatedBytes), nil),
	}
	var checker grpchealth.Checker = grpchealth.NewStaticChecker(names...)
	if cfg.Health != nil {
		checker = cfg.Health
	}
	mount(grpchealth.NewHandler(checker, plain...))
	reflector := grpcreflect.NewStaticReflector(append(names, grpchealth.HealthV1ServiceName)...)
	mount(grpcreflect.NewHandlerV1(reflector, plain...))
	mount(grpcreflect.NewHandlerV1Alpha(reflector, plain...))
	return mux
}

// Handler returns the HTTP handler of every service (ldm.v1, health,
// reflection) with CORS. Mount it at each of Paths, or at "/".
func (s *Server) Handler() http.Handler { return s.handler }

// Paths returns the URL path prefixes Handler serves, one per service (for
// example "/ldm.v1.TileService/"), for mounting on a shared http.ServeMux.
func (s *Server) Paths() []string { return append([]string(nil), s.paths...) }

// Drain ends open ReadTileStream follow streams and StreamBricks streams
// cleanly (the client sees the stream end without error) and makes new
// ones end at once. WriteTileStream streams end with Unavailable between
// two appends: every tile acknowledged before is stored. Call it when
// shutting down, before http.Server.Shutdown, which waits for open calls.
// A stream whose Send is blocked because its client does not read is
// reset after Config.DrainGrace, so shutdown does not wait on it. Unary
// calls are not affected. Drain is idempotent.
func (s *Server) Drain() {
	s.cancelDrain()
	s.resetBlockedStreams(time.Now().Add(s.drainGrace))
}

// streamContext returns a context that ends with ctx or when the server
// drains, and a function that releases it.
func (s *Server) streamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.drain, cancel)
	return ctx, func() { stop(); cancel() }
}
