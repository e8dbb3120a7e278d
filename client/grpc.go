package client

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
)

// Scheme is the grpc-go target scheme of the resolver this package
// registers: "ldm:///host:port,host:port".
const Scheme = "ldm"

// BalancerName is the grpc-go load balancing policy this package
// registers: writes to the leader, reads round-robin over followers.
const BalancerName = "ldm_leader_follower"

// writeMethods are the full gRPC method names that change state.
var writeMethods = map[string]bool{
	ldmv1connect.TileServiceWriteTileProcedure:         true,
	ldmv1connect.TileServiceWriteTileStreamProcedure:   true,
	ldmv1connect.VolumeServiceCreateVolumeProcedure:    true,
	ldmv1connect.VolumeServiceDeleteVolumeProcedure:    true,
	ldmv1connect.ClusterServiceRemoveServerProcedure:   true,
	ldmv1connect.ClusterServiceTransferLeaderProcedure: true,
}

func init() {
	resolver.Register(NewResolverBuilder(Scheme, nil, "http", 0))
	balancer.Register(base.NewBalancerBuilder(BalancerName, pickerBuilder{}, base.Config{HealthCheck: false}))
}

// NewResolverBuilder returns a grpc-go resolver for targets
// "<scheme>:///host:port,host:port". It asks the servers for GetServers
// (over Connect with hc, nil meaning a client with the transport of
// NewTransport(nil), and URL scheme urlScheme, "http" or "https") every
// refresh interval (default 10s) and whenever a call fails with
// Unavailable, and selects BalancerName.
func NewResolverBuilder(scheme string, hc *http.Client, urlScheme string, refresh time.Duration) resolver.Builder {
	if hc == nil {
		hc = defaultHTTPClient
	}
	if refresh <= 0 {
		refresh = 10 * time.Second
	}
	return &resolverBuilder{scheme: scheme, hc: hc, urlScheme: urlScheme, refresh: refresh}
}

type resolverBuilder struct {
	scheme    string
	hc        *http.Client
	urlScheme string
	refresh   time.Duration
}

func (b *resolverBuilder) Scheme() string { return b.scheme }

func (b *resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	var seeds []string
	for _, s := range strings.Split(target.Endpoint(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	r := &ldmResolver{b: b, cc: cc, seeds: seeds, now: make(chan struct{}, 1), done: make(chan struct{})}
	r.wg.Add(1)
	go r.run()
	return r, nil
}

// ldmResolver feeds grpc-go the servers of GetServers and remembers the
// leader for the picker.
type ldmResolver struct {
	b      *resolverBuilder
	cc     resolver.ClientConn
	seeds  []string
	leader atomic.Value // string
	known  []string     // addresses of the last answer; only run uses it
	now    chan struct{}
	done   chan struct{}
	wg     sync.WaitGroup
}

type resolverKey struct{}

func (r *ldmResolver) leaderAddr() string {
	s, _ := r.leader.Load().(string)
	return s
}

// ResolveNow implements resolver.Resolver.
func (r *ldmResolver) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Close implements resolver.Resolver.
func (r *ldmResolver) Close() {
	close(r.done)
	r.wg.Wait()
}

func (r *ldmResolver) run() {
	defer r.wg.Done()
	t := time.NewTicker(r.b.refresh)
	defer t.Stop()
	for {
		r.resolve()
		select {
		case <-r.done:
			return
		case <-t.C:
		case <-r.now:
		}
	}
}

func (r *ldmResolver) resolve() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, addr := range append(append([]string(nil), r.known...), r.seeds...) {
		cl := ldmv1connect.NewClusterServiceClient(r.b.hc, r.b.urlScheme+"://"+addr)
		res, err := cl.GetServers(ctx, connect.NewRequest(&ldmv1.GetServersRequest{}))
		if err != nil {
			lastErr = err
			continue
		}
		var addrs []resolver.Address
		var known []string
		leader := ""
		for _, s := range res.Msg.GetServers() {
			if !routable(s) {
				continue
			}
			if s.GetIsLeader() {
				leader = s.GetRpcAddr()
			}
			known = append(known, s.GetRpcAddr())
			addrs = append(addrs, resolver.Address{Addr: s.GetRpcAddr(), Attributes: attributes.New(resolverKey{}, r)})
		}
		r.leader.Store(leader)
		r.known = known
		_ = r.cc.UpdateState(resolver.State{
			Addresses:     addrs,
			ServiceConfig: r.cc.ParseServiceConfig(`{"loadBalancingConfig":[{"` + BalancerName + `":{}}]}`),
		})
		return
	}
	if lastErr != nil {
		r.cc.ReportError(lastErr)
	}
}

type pickerBuilder struct{}

// Build implements base.PickerBuilder.
func (pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p := &picker{byAddr: map[string]balancer.SubConn{}}
	for sc, ci := range info.ReadySCs {
		p.byAddr[ci.Address.Addr] = sc
		p.all = append(p.all, ci.Address.Addr)
		if r, ok := ci.Address.Attributes.Value(resolverKey{}).(*ldmResolver); ok {
			p.r = r
		}
	}
	return p
}

// picker sends writes to the leader and reads round-robin to the others.
type picker struct {
	r      *ldmResolver
	byAddr map[string]balancer.SubConn
	all    []string
	next   atomic.Uint64
}

// Pick implements balancer.Picker.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	leader := ""
	if p.r != nil {
		leader = p.r.leaderAddr()
	}
	var sc balancer.SubConn
	if lsc, ok := p.byAddr[leader]; ok && writeMethods[info.FullMethodName] {
		sc = lsc
	} else {
		var readers []string
		for _, a := range p.all {
			if a != leader {
				readers = append(readers, a)
			}
		}
		if len(readers) == 0 {
			readers = p.all
		}
		// A write without a ready leader goes to any server: it forwards.
		sc = p.byAddr[readers[p.next.Add(1)%uint64(len(readers))]]
	}
	r := p.r
	return balancer.PickResult{SubConn: sc, Done: func(di balancer.DoneInfo) {
		if r != nil && di.Err != nil && status.Code(di.Err) == codes.Unavailable {
			r.ResolveNow(resolver.ResolveNowOptions{})
		}
	}}, nil
}
