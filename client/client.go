package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// ErrNoServers: no server answered GetServers.
var ErrNoServers = errors.New("no ldm server reachable")

// Config configures a Client. Seeds is required; the zero value of every
// other field works.
type Config struct {
	// Seeds are base URLs of some servers (http://host:port or
	// https://host:port). The scheme of the first one is used for every
	// server GetServers reports.
	Seeds []string
	// HTTPClient carries the calls; nil means a client with the transport
	// of NewTransport(nil) (HTTP/2: h2c for http://, TLS with the system
	// roots for https://), shared by all such Clients.
	HTTPClient *http.Client
	// Options are passed to every generated Connect client (protocol,
	// interceptors, message limits).
	Options []connect.ClientOption
	// RefreshInterval is how often the server list is refreshed in the
	// background (default 10s; negative disables).
	RefreshInterval time.Duration
	// Attempts bounds the tries of one call, refreshes included (default 4).
	Attempts int
}

// endpoint holds the generated clients of one server.
type endpoint struct {
	addr    string
	tiles   ldmv1connect.TileServiceClient
	volumes ldmv1connect.VolumeServiceClient
	cluster ldmv1connect.ClusterServiceClient
}

// Client routes ldm.v1 calls over a cluster; see the package comment.
type Client struct {
	cfg    Config
	scheme string
	hc     *http.Client

	mu        sync.RWMutex
	servers   []*ldmv1.Server
	endpoints map[string]*endpoint // by address
	leader    *endpoint
	followers []*endpoint
	rr        atomic.Uint64

	refreshMu sync.Mutex
	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// New discovers the cluster through the seeds and returns a Client. It
// fails with ErrNoServers when no seed answers.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Seeds) == 0 {
		return nil, errors.New("client: Config.Seeds is empty")
	}
	u, err := url.Parse(cfg.Seeds[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: seed %q: want http://host:port or https://host:port", cfg.Seeds[0])
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = 10 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	c := &Client{cfg: cfg, scheme: u.Scheme, hc: cfg.HTTPClient, endpoints: map[string]*endpoint{}, stop: make(chan struct{})}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	if cfg.RefreshInterval > 0 {
		c.wg.Add(1)
		go c.refreshLoop()
	}
	return c, nil
}

// Close stops the background refresh.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.wg.Wait()
	})
	return nil
}

func (c *Client) refreshLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RefreshInterval)
			_ = c.Refresh(ctx)
			cancel()
		}
	}
}

func (c *Client) endpoint(addr string) *endpoint {
	if e, ok := c.endpoints[addr]; ok {
		return e
	}
	base := c.scheme + "://" + addr
	// zstd besides gzip for compressed responses (see ZstdCompression).
	opts := append([]connect.ClientOption{ZstdCompression(0)}, c.cfg.Options...)
	e := &endpoint{
		addr:    addr,
		tiles:   ldmv1connect.NewTileServiceClient(c.hc, base, opts...),
		volumes: ldmv1connect.NewVolumeServiceClient(c.hc, base, opts...),
		cluster: ldmv1connect.NewClusterServiceClient(c.hc, base, opts...),
	}
	c.endpoints[addr] = e
	return e
}

// Refresh asks the known servers, then the seeds, for the server list, and
// adopts the first answer.
func (c *Client) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	c.mu.Lock()
	var candidates []*endpoint
	if c.leader != nil {
		candidates = append(candidates, c.leader)
	}
	candidates = append(candidates, c.followers...)
	for _, s := range c.cfg.Seeds {
		u, err := url.Parse(s)
		if err == nil && u.Host != "" {
			candidates = append(candidates, c.endpoint(u.Host))
		}
	}
	c.mu.Unlock()
	var errs []error
	seen := map[string]bool{}
	for _, e := range candidates {
		if seen[e.addr] {
			continue
		}
		seen[e.addr] = true
		res, err := e.cluster.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.addr, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.adopt(res.Msg.GetServers())
		return nil
	}
	return fmt.Errorf("%w: %w", ErrNoServers, errors.Join(errs...))
}

func (c *Client) adopt(servers []*ldmv1.Server) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.servers = servers
	c.leader, c.followers = nil, nil
	for _, s := range servers {
		if !routable(s) {
			continue
		}
		e := c.endpoint(s.GetRpcAddr())
		if s.GetIsLeader() {
			c.leader = e
		} else {
			c.followers = append(c.followers, e)
		}
	}
}

// routable reports whether calls may go to s: it has an address, gossip
// does not see it failed or gone, and it is a voter. A member that gossip
// knows but Raft does not yet (a node still joining) holds no data, so it
// must not serve reads.
func routable(s *ldmv1.Server) bool {
	return s.GetRpcAddr() != "" && s.GetVoter() && s.GetStatus() != "failed" && s.GetStatus() != "left"
}

// Servers returns the server list of the last refresh.
func (c *Client) Servers() []*ldmv1.Server {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*ldmv1.Server(nil), c.servers...)
}

// Leader returns the address of the leader as of the last refresh, or "".
func (c *Client) Leader() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.leader == nil {
		return ""
	}
	return c.leader.addr
}

// pick returns the leader for writes, the next follower for reads (the
// leader when there is none), or any server when the role is unknown.
func (c *Client) pick(write bool) *endpoint {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if write && c.leader != nil {
		return c.leader
	}
	if !write && len(c.followers) > 0 {
		return c.followers[c.rr.Add(1)%uint64(len(c.followers))]
	}
	if c.leader != nil {
		return c.leader
	}
	if len(c.followers) > 0 {
		return c.followers[c.rr.Add(1)%uint64(len(c.followers))]
	}
	return nil
}

// LeaderTiles returns the TileService client of the leader (for
// WriteTileStream), or of any server when no leader is known.
func (c *Client) LeaderTiles() ldmv1connect.TileServiceClient {
	if e := c.pick(true); e != nil {
		return e.tiles
	}
	return nil
}

// ReaderTiles returns the TileService client of the next reader (for
// ReadTileStream).
func (c *Client) ReaderTiles() ldmv1connect.TileServiceClient {
	if e := c.pick(false); e != nil {
		return e.tiles
	}
	return nil
}

// retryable reports whether a failed call may be sent again. Reads may;
// a write only when it surely was not applied: the server refused it as
// not the leader, or the connection was never made.
func retryable(err error, write bool) bool {
	if connect.CodeOf(err) != connect.CodeUnavailable {
		return false
	}
	if !write {
		return true
	}
	msg := err.Error()
	if strings.Contains(msg, "outcome unknown") {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return strings.Contains(msg, "not the leader")
}

// isTransport reports whether err came from the connection rather than
// from the server.
func isTransport(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// callMode says where a call goes and when it may be sent again.
type callMode int

const (
	modeRead  callMode = iota // any server; retried on Unavailable
	modeWrite                 // the leader; retried only when surely not applied
	// modeIdempotentWrite is a write with a request id: the leader, and
	// retried like a read, since the server answers a repeated id with the
	// original result instead of applying it again.
	modeIdempotentWrite
)

// call runs f on the right server, refreshing and retrying per retryable.
func call[T any](ctx context.Context, c *Client, mode callMode, f func(e *endpoint) (*connect.Response[T], error)) (*T, error) {
	write := mode != modeRead
	var last error
	for attempt := 0; attempt < c.cfg.Attempts; attempt++ {
		e := c.pick(write)
		if e == nil {
			last = ErrNoServers
		} else {
			res, err := f(e)
			if err == nil {
				return res.Msg, nil
			}
			if !retryable(err, mode == modeWrite) {
				if connect.CodeOf(err) == connect.CodeUnavailable || isTransport(err) {
					// The server may be gone: look again before the
					// caller's next call.
					_ = c.Refresh(ctx)
				}
				return nil, err
			}
			last = err
		}
		if ctx.Err() != nil {
			break
		}
		if err := c.Refresh(ctx); err != nil && ctx.Err() != nil {
			break
		}
		if write && e != nil && c.pick(true) == e && attempt > 0 {
			// Same leader as before: give the election a moment by
			// waiting for the next refresh to tell something new.
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
			}
		}
	}
	return nil, last
}

// WriteTile appends a tile on the leader. When req.RequestId is empty it
// sets a new random one (NewRequestID) on req, so the write is idempotent:
// the client retries it also when its outcome is unknown (a leader change,
// a broken connection), and sending req again is answered with the
// original offset instead of storing the tile twice.
func (c *Client) WriteTile(ctx context.Context, req *ldmv1.WriteTileRequest) (*ldmv1.WriteTileResponse, error) {
	if req.GetRequestId() == "" {
		req.RequestId = NewRequestID()
	}
	return call(ctx, c, modeIdempotentWrite, func(e *endpoint) (*connect.Response[ldmv1.WriteTileResponse], error) {
		return e.tiles.WriteTile(ctx, connect.NewRequest(req))
	})
}

// ReadTile reads a tile from a follower (round-robin).
func (c *Client) ReadTile(ctx context.Context, req *ldmv1.ReadTileRequest) (*ldmv1.ReadTileResponse, error) {
	return call(ctx, c, modeRead, func(e *endpoint) (*connect.Response[ldmv1.ReadTileResponse], error) {
		return e.tiles.ReadTile(ctx, connect.NewRequest(req))
	})
}

// CreateVolume creates a volume on the leader.
func (c *Client) CreateVolume(ctx context.Context, req *ldmv1.CreateVolumeRequest) (*ldmv1.CreateVolumeResponse, error) {
	return call(ctx, c, modeWrite, func(e *endpoint) (*connect.Response[ldmv1.CreateVolumeResponse], error) {
		return e.volumes.CreateVolume(ctx, connect.NewRequest(req))
	})
}

// DeleteVolume deletes a volume on the leader.
func (c *Client) DeleteVolume(ctx context.Context, req *ldmv1.DeleteVolumeRequest) (*ldmv1.DeleteVolumeResponse, error) {
	return call(ctx, c, modeWrite, func(e *endpoint) (*connect.Response[ldmv1.DeleteVolumeResponse], error) {
		return e.volumes.DeleteVolume(ctx, connect.NewRequest(req))
	})
}

// GetVolume reads a volume's metadata from a follower.
func (c *Client) GetVolume(ctx context.Context, req *ldmv1.GetVolumeRequest) (*ldmv1.GetVolumeResponse, error) {
	return call(ctx, c, modeRead, func(e *endpoint) (*connect.Response[ldmv1.GetVolumeResponse], error) {
		return e.volumes.GetVolume(ctx, connect.NewRequest(req))
	})
}

// ListVolumes lists volumes from a follower.
func (c *Client) ListVolumes(ctx context.Context, req *ldmv1.ListVolumesRequest) (*ldmv1.ListVolumesResponse, error) {
	return call(ctx, c, modeRead, func(e *endpoint) (*connect.Response[ldmv1.ListVolumesResponse], error) {
		return e.volumes.ListVolumes(ctx, connect.NewRequest(req))
	})
}

// GetBrick reads a brick from a follower.
func (c *Client) GetBrick(ctx context.Context, req *ldmv1.GetBrickRequest) (*ldmv1.GetBrickResponse, error) {
	return call(ctx, c, modeRead, func(e *endpoint) (*connect.Response[ldmv1.GetBrickResponse], error) {
		return e.volumes.GetBrick(ctx, connect.NewRequest(req))
	})
}

// NewRequestID returns a new random request id for WriteTile and
// WriteTileStream messages: 128 random bits as 32 hex digits.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}
