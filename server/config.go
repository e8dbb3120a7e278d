package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// Defaults of Config.
const (
	// DefaultAddr is where a server listens when Config.Addr is empty:
	// loopback only, so a server started without thought is not on the
	// network.
	DefaultAddr = "127.0.0.1:8080"
	// DefaultDataDir is the tile store's directory when Config.DataDir is
	// empty.
	DefaultDataDir = "./ldm-data"
	// DefaultShutdownTimeout bounds how long Serve waits for open calls
	// once its context ends.
	DefaultShutdownTimeout = 30 * time.Second
	// DemoVolume is the name of the volume Config.Demo creates.
	DemoVolume = "demo"
)

// ErrInvalidConfig is wrapped by every error New returns for a Config that
// is inconsistent or unsafe (as opposed to a failure to open, listen or
// join). Command lines map it to a usage error.
var ErrInvalidConfig = errors.New("invalid server configuration")

// Config is everything a server is built from. The zero value is a
// single-node server on DefaultAddr with its store in DefaultDataDir, the
// viewer at "/", no TLS and no authentication. A Config is read by New and
// not retained for changes: changing it afterwards has no effect.
//
// Error messages name the `ldm serve` flag of a field (for example
// --tls-cert for TLS.CertFile), since that is how most people set them.
type Config struct {
	// Addr is the host:port to listen on (--addr); empty means DefaultAddr.
	// Ignored when Listener is set.
	Addr string
	// Listener, when set, is used instead of listening on Addr. The server
	// closes it when it stops.
	Listener net.Listener

	// DataDir is the tile store's directory (--data); empty means
	// DefaultDataDir. Ignored when Tiles is set.
	DataDir string
	// Tiles, when set, is served instead of a store opened in DataDir: a
	// storage.Memory, or a store wrapped to inject faults in tests. The
	// caller owns it and closes it after Serve returns. It cannot be
	// combined with Cluster, which needs the file store.
	Tiles service.Tiles
	// MaxTileBytes is the largest tile accepted (--max-tile-bytes); zero
	// means storage.DefaultMaxTileBytes.
	MaxTileBytes int
	// Sync is when writes reach the disk before they are acknowledged
	// (--sync); the zero value is storage.SyncBatch (group commit).
	Sync storage.SyncPolicy
	// Demo creates the demo phantom as volume DemoVolume if it is missing
	// (--demo).
	Demo bool

	// Compress lets responses be gzip-compressed for clients that accept
	// it (--compress).
	Compress bool
	// CORSOrigins are the origins browsers may call from (--cors-origin):
	// empty means read-only calls from any origin and writes from the
	// server's own origin only; "*" means every origin for every call
	// (see service.Config.CORSOrigins).
	CORSOrigins []string
	// Viewer is served at "/"; nil means the embedded viewer (package web).
	Viewer http.Handler

	// TLS turns on HTTPS when CertFile is set.
	TLS TLSConfig
	// Auth turns on authentication and Casbin authorization when any of
	// its files is set, or when TLS.ClientCAFile is.
	Auth AuthConfig
	// Insecure allows a non-loopback address without TLS and
	// authentication (--insecure).
	Insecure bool

	// Cluster makes the server a node of a replicated cluster when
	// Cluster.NodeID is set; otherwise the server runs alone.
	Cluster ClusterConfig

	// Limits bound the memory that callers can make the server hold.
	Limits Limits

	// Telemetry configures /metrics, tracing and readiness; the zero
	// value serves metrics and traces calls without exporting spans (see
	// docs/observability.md).
	Telemetry TelemetryConfig

	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout bounds how long Serve waits for open calls after
	// its context ends; zero means DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
}

// Limits bound the memory that callers can make the server hold. Zero
// fields mean the defaults of package service (see service.Config).
type Limits struct {
	// MaxUnauthenticatedBytes is the largest request message, after
	// decompression, of a caller without valid credentials when
	// authentication is on (--max-unauthenticated-bytes).
	MaxUnauthenticatedBytes int
	// MaxReadBytes bounds the tile bytes that reads in flight hold, across
	// the server (--max-read-bytes).
	MaxReadBytes int64
	// MaxIngestBytes bounds the tile bytes that WriteTileStream streams
	// hold queued, across the server (--max-ingest-bytes), and
	// MaxStreamIngestBytes those of one stream (--max-stream-ingest-bytes).
	MaxIngestBytes, MaxStreamIngestBytes int64
	// MemoryLimit, when positive, is the Go runtime's soft memory limit
	// for the whole process (runtime/debug.SetMemoryLimit), set by New
	// (--memory-limit): the collector works harder as the heap nears it,
	// so the garbage of large messages does not double the resident
	// memory. Zero leaves the runtime's limit (GOMEMLIMIT) alone.
	MemoryLimit int64
	// MaxRegionBytes caps the bytes of one ReadRegion box
	// (--max-region-bytes); zero means service.DefaultMaxRegionBytes.
	MaxRegionBytes int64
}

// TLSConfig is the server's certificate and the CA of its clients.
type TLSConfig struct {
	// CertFile and KeyFile are the PEM certificate (chain) and key
	// (--tls-cert, --tls-key); both or neither.
	CertFile, KeyFile string
	// ClientCAFile verifies client certificates, whose common name (and
	// URI and DNS SANs) becomes the caller's identity (--client-ca).
	ClientCAFile string
	// RequireClientCert fails the handshake without a verified client
	// certificate (--require-client-cert); needs ClientCAFile.
	RequireClientCert bool
	// ReloadInterval is how often, at most, a TLS handshake checks
	// CertFile and KeyFile for a new pair (--auth-reload): zero means
	// auth.DefaultReloadInterval, negative never. A pair that does not
	// load keeps the previous certificate.
	ReloadInterval time.Duration
}

// AuthConfig is where credentials and the authorization policy come from.
type AuthConfig struct {
	// TokensFile holds bearer token hashes (--tokens, made with
	// `ldm token create`).
	TokensFile string
	// UsersFile holds Basic users with bcrypt hashes (--users).
	UsersFile string
	// ModelFile and PolicyFile replace the embedded Casbin model and
	// policy (--authz-model, --authz-policy).
	ModelFile, PolicyFile string
	// ReloadInterval is how often the files are checked for changes
	// (--auth-reload): zero means auth.DefaultReloadInterval, negative
	// never.
	ReloadInterval time.Duration
	// Public lists procedure prefixes that answer without credentials
	// (--auth-public): nil means auth.DefaultPublic (health and
	// reflection); an empty non-nil slice makes every call need
	// credentials.
	Public []string
	// BasicLimit bounds the bcrypt checks of Basic authentication (at
	// once, and failures per client IP and per username); the zero value
	// means the defaults of auth.BasicLimit.
	BasicLimit auth.BasicLimit
	// ShareKeyFile turns on share links (--share-key): the 32-byte key that
	// signs share tokens, created (mode 0600) when the file does not exist.
	// Every node of a cluster needs the same key.
	ShareKeyFile string
	// ShareRevocationsFile lists revoked share ids (--share-revocations,
	// written by `ldm share revoke`), reloaded when it changes; empty means
	// ShareKeyFile + ".revoked".
	ShareRevocationsFile string
	// MaxShareTTL bounds the life of a share (--share-max-ttl); zero means
	// auth.DefaultMaxShareTTL.
	MaxShareTTL time.Duration
}

// enabled reports whether any setting asks for authentication or
// authorization. Without one the server authorizes nothing and answers
// everyone, which the loopback rule confines.
func (c Config) authEnabled() bool {
	a := c.Auth
	return a.TokensFile != "" || a.UsersFile != "" || c.TLS.ClientCAFile != "" || a.ModelFile != "" || a.PolicyFile != "" || a.ShareKeyFile != ""
}

// Bootstrap says whether a cluster node forms a new cluster.
type Bootstrap int

const (
	// BootstrapAuto (the zero value) forms a new cluster when Join is
	// empty.
	BootstrapAuto Bootstrap = iota
	// BootstrapAlways forms a new cluster if the node has no Raft state.
	BootstrapAlways
	// BootstrapNever waits to be added by an existing cluster.
	BootstrapNever
)

// ClusterConfig makes a server a replicated cluster node.
type ClusterConfig struct {
	// NodeID names the node in Raft and Serf and must stay the same
	// across restarts (--node-id). Empty runs the server alone; the other
	// fields then must be zero.
	NodeID string
	// Advertise is the host:port peers and clients use to reach the main
	// port (--advertise); empty means the listener's address.
	Advertise string
	// GossipAddr is the host:port of Serf gossip, UDP and TCP
	// (--gossip-addr); GossipAdvertise is how peers reach it when it
	// differs (--gossip-advertise).
	GossipAddr, GossipAdvertise string
	// GossipKey encrypts and authenticates gossip (16, 24 or 32 bytes, the
	// same on every node; --gossip-key).
	GossipKey []byte
	// Join lists gossip addresses of existing members (--join).
	Join []string
	// RaftDir holds the Raft log and snapshots (--raft-dir); empty means
	// DataDir + "-raft" (not inside DataDir: the store owns every name
	// there).
	RaftDir string
	// Bootstrap says whether this node forms a new cluster (--bootstrap).
	Bootstrap Bootstrap
	// BootstrapExpect, when positive, forms one cluster of that many
	// voters from nodes started in parallel (--bootstrap-expect): once the
	// gossip pool holds that many members without Raft state, the one with
	// the lowest NodeID bootstraps with them all; a node with Raft state,
	// or that sees a member with state, never bootstraps (the leader adds
	// it). Every node needs the same value and Join (for example a
	// headless service's DNS name); Bootstrap must stay BootstrapAuto.
	BootstrapExpect int
	// LookupHost resolves the host names in Join (a name may stand for
	// many members: each of its addresses is one); nil means
	// net.DefaultResolver.LookupHost.
	LookupHost func(ctx context.Context, host string) ([]string, error)
	// PeerCertFile and PeerKeyFile are the node certificate presented to
	// peers under TLS (--peer-cert, --peer-key); empty means TLS.CertFile
	// and TLS.KeyFile. PeerCAFile verifies the peers (--peer-ca); empty
	// means TLS.ClientCAFile.
	PeerCertFile, PeerKeyFile, PeerCAFile string
	// LocalGossip selects memberlist's local-network profile (faster
	// failure detection), for clusters on one host and tests.
	LocalGossip bool
	// Key is a secret shared by every node, at least 16 bytes
	// (--cluster-key): every node-to-node request (the Raft upgrade,
	// forwarded writes, membership changes) carries an HMAC of it, and a
	// member proves it before it becomes a voter (see cluster.Config.Key).
	// Without TLS, a cluster with authentication on needs it: the node
	// endpoints must never be more open than the API.
	Key []byte
}

// invalid wraps an error in ErrInvalidConfig without changing its text.
func invalid(format string, args ...any) error {
	return configError{fmt.Errorf(format, args...)}
}

// configError is an error of a Config: its text is the cause's, and it is
// ErrInvalidConfig under errors.Is.
type configError struct{ err error }

func (e configError) Error() string        { return e.err.Error() }
func (e configError) Unwrap() error        { return e.err }
func (e configError) Is(target error) bool { return target == ErrInvalidConfig }

// validate checks what can be checked without touching the system.
func (c Config) validate() error {
	if c.MaxTileBytes < 0 {
		return invalid("--max-tile-bytes %d: must be positive", c.MaxTileBytes)
	}
	if l := c.Limits; l.MaxUnauthenticatedBytes < 0 || l.MaxReadBytes < 0 || l.MaxIngestBytes < 0 || l.MaxStreamIngestBytes < 0 || l.MemoryLimit < 0 || l.MaxRegionBytes < 0 {
		return invalid("--max-unauthenticated-bytes, --max-read-bytes, --max-ingest-bytes, --max-stream-ingest-bytes, --memory-limit and --max-region-bytes must not be negative")
	}
	if c.ShutdownTimeout < 0 {
		return invalid("shutdown timeout %v: must not be negative", c.ShutdownTimeout)
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		return invalid("--tls-cert and --tls-key go together")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		return invalid("--client-ca needs TLS (--tls-cert and --tls-key)")
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		return invalid("--require-client-cert needs --client-ca")
	}
	cl := c.Cluster
	if cl.NodeID == "" {
		if cl.Advertise != "" || len(cl.GossipKey) > 0 || len(cl.Key) > 0 || len(cl.Join) > 0 || cl.RaftDir != "" || cl.Bootstrap != BootstrapAuto ||
			cl.BootstrapExpect != 0 || cl.PeerCertFile != "" || cl.PeerKeyFile != "" || cl.PeerCAFile != "" {
			return invalid("cluster settings (--join, --gossip-key, --cluster-key, --raft-dir, --bootstrap, --bootstrap-expect, --advertise, --peer-*) need --node-id")
		}
		return nil
	}
	if c.Tiles != nil {
		return invalid("a cluster node needs the file store in --data, not a store passed in Config.Tiles")
	}
	if k := len(cl.GossipKey); k != 0 && k != 16 && k != 24 && k != 32 {
		return invalid("--gossip-key: %d bytes, want 16, 24 or 32", k)
	}
	if k := len(cl.Key); k != 0 && k < cluster.MinKeyBytes {
		return invalid("--cluster-key: %d bytes, want at least %d", k, cluster.MinKeyBytes)
	}
	if c.authEnabled() && t.CertFile == "" && len(cl.Key) == 0 {
		return invalid("a cluster with authentication on needs its nodes to authenticate each other, or anyone could write through the node-to-node endpoints: set --cluster-key (the same secret on every node; make one with: head -c 32 /dev/urandom | base64) or use TLS with node certificates (--tls-cert, --tls-key, --client-ca or --peer-ca)")
	}
	if cl.Bootstrap < BootstrapAuto || cl.Bootstrap > BootstrapNever {
		return invalid("bootstrap mode %d: want auto, always or never", cl.Bootstrap)
	}
	if err := cl.validateExpect(); err != nil {
		return err
	}
	if t.CertFile == "" && (cl.PeerCertFile != "" || cl.PeerKeyFile != "" || cl.PeerCAFile != "") {
		return invalid("--peer-cert, --peer-key and --peer-ca need TLS (--tls-cert and --tls-key)")
	}
	return nil
}

// validateExpect checks BootstrapExpect against the other settings.
func (cl ClusterConfig) validateExpect() error {
	n := cl.BootstrapExpect
	switch {
	case n == 0:
		return nil
	case n < 0:
		return invalid("--bootstrap-expect %d: want the number of servers that form the cluster (3 or 5), or 0 for none", n)
	case cl.Bootstrap == BootstrapAlways:
		return invalid("--bootstrap-expect %d and --bootstrap=true contradict each other: with --bootstrap-expect the nodes decide together which one forms the cluster; drop --bootstrap", n)
	case cl.Bootstrap == BootstrapNever:
		return invalid("--bootstrap-expect %d and --bootstrap=false contradict each other: a node that must never form a cluster needs no --bootstrap-expect; drop one of them", n)
	case cl.GossipAddr == "":
		return invalid("--bootstrap-expect needs gossip: set --gossip-addr")
	case n > 1 && len(cl.Join) == 0:
		return invalid("--bootstrap-expect %d needs --join with the other servers' gossip addresses or a DNS name that resolves to them (for example a headless service)", n)
	}
	return nil
}
