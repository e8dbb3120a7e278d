package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// clusterFlags are the cluster flags of `ldm serve`. Without --node-id the
// server runs alone and none of the others apply.
type clusterFlags struct {
	nodeID          string
	advertise       string
	gossipAddr      string
	gossipAdvertise string
	gossipKey       string
	join            []string
	raftDir         string
	bootstrap       string // "auto", "true" or "false"
	peerCert        string
	peerKey         string
	peerCA          string
}

// serveCluster maps the flag set of each `ldm serve` command to its
// clusterFlags.
var serveCluster sync.Map // *pflag.FlagSet -> *clusterFlags

// serveNodes maps the flag set of each `ldm serve` command to the node it
// started, for Mount.
var serveNodes sync.Map // *pflag.FlagSet -> *cluster.Node

func init() {
	registerServeHook(&serveHook{
		Name: "cluster",
		Flags: func(fs *pflag.FlagSet) {
			f := &clusterFlags{}
			f.register(fs)
			serveCluster.Store(fs, f)
		},
		Setup: func(ctx context.Context, env *serveEnv) error {
			f, ok := serveCluster.Load(env.FlagSet)
			if !ok {
				return errors.New("the cluster flags are not registered on this command")
			}
			return f.(*clusterFlags).setup(ctx, env)
		},
		Mount: func(_ context.Context, env *serveEnv) error {
			if n, ok := serveNodes.Load(env.FlagSet); ok {
				env.Mux.Handle(cluster.HandlerPrefix, n.(*cluster.Node).Handler())
			}
			return nil
		},
	})
}

func (f *clusterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.nodeID, "node-id", "", "join a replicated cluster as this node (stable across restarts); empty runs one server alone")
	fs.StringVar(&f.advertise, "advertise", "", "host:port peers and clients use to reach --addr (default: the listener's address)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7946", "host:port for Serf membership gossip (UDP and TCP)")
	fs.StringVar(&f.gossipAdvertise, "gossip-advertise", "", "host:port peers use to reach --gossip-addr (default: --gossip-addr)")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 key (16, 24 or 32 bytes, the same on every node) that encrypts and authenticates gossip; without it anyone who reaches --gossip-addr can join and become a voter (e.g. `head -c 32 /dev/urandom | base64`)")
	fs.StringSliceVar(&f.join, "join", nil, "gossip addresses (host:port) of existing members to join (comma separated or repeated)")
	fs.StringVar(&f.raftDir, "raft-dir", "", "directory of the Raft log and snapshots, outside --data (default: <--data>-raft)")
	fs.StringVar(&f.bootstrap, "bootstrap", "auto", "form a new cluster if this node has no Raft state: true, false or auto (true when --join is empty)")
	fs.StringVar(&f.peerCert, "peer-cert", "", "PEM node certificate presented to peers under TLS; it needs the server and client usages, as from `ldm certs issue --server` (default: --tls-cert)")
	fs.StringVar(&f.peerKey, "peer-key", "", "PEM key of --peer-cert (default: --tls-key)")
	fs.StringVar(&f.peerCA, "peer-ca", "", "PEM CA bundle that signed the peers' certificates (default: --client-ca)")
}

func (f *clusterFlags) setup(_ context.Context, env *serveEnv) error {
	if f.nodeID == "" {
		for _, name := range []string{"join", "gossip-key", "raft-dir", "bootstrap", "advertise", "peer-cert", "peer-key", "peer-ca"} {
			if fl := env.FlagSet.Lookup(name); fl != nil && fl.Changed {
				return usageError{fmt.Errorf("--%s needs --node-id", name)}
			}
		}
		return nil
	}
	fs, ok := env.Store.(*storage.Store)
	if !ok {
		return fmt.Errorf("a cluster node needs the file store (got %T)", env.Store)
	}
	advertise := f.advertise
	if advertise == "" {
		advertise = env.AdvertiseAddr
	}
	host, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return usageError{fmt.Errorf("--advertise %q: %v", advertise, err)}
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return usageError{fmt.Errorf("the server listens on %s: set --advertise to the address peers should use", advertise)}
	}
	var bootstrap bool
	switch f.bootstrap {
	case "auto":
		bootstrap = len(f.join) == 0
	case "true":
		bootstrap = true
	case "false":
	default:
		return usageError{fmt.Errorf("--bootstrap %q: want true, false or auto", f.bootstrap)}
	}
	raftDir := f.raftDir
	if raftDir == "" {
		// Not inside --data: the store owns every name there.
		raftDir = filepath.Clean(env.Flags.data) + "-raft"
	}
	peerTLS, err := f.peerTLS(env)
	if err != nil {
		return err
	}
	var gossipKey []byte
	if f.gossipKey != "" {
		gossipKey, err = base64.StdEncoding.DecodeString(f.gossipKey)
		if err != nil {
			return usageError{fmt.Errorf("--gossip-key: %v", err)}
		}
		if k := len(gossipKey); k != 16 && k != 24 && k != 32 {
			return usageError{fmt.Errorf("--gossip-key: %d bytes, want 16, 24 or 32", k)}
		}
	}
	node, err := cluster.New(cluster.Config{
		NodeID:              f.nodeID,
		Dir:                 raftDir,
		AdvertiseAddr:       advertise,
		Bootstrap:           bootstrap,
		GossipAddr:          f.gossipAddr,
		GossipAdvertiseAddr: f.gossipAdvertise,
		GossipKey:           gossipKey,
		Join:                f.join,
		TLS:                 peerTLS,
		// Under TLS only node certificates (server usage) may use the
		// node-to-node endpoints, not users' client certificates.
		Authorize: auth.NodePeer,
		Logger:    env.Logger,
	}, cluster.FileStore(fs))
	if err != nil {
		return err
	}
	env.OnShutdown(func(context.Context) error { return node.Close() })
	env.Tiles = node
	env.AdvertiseAddr = advertise
	serveNodes.Store(env.FlagSet, node)
	env.Logger.Info("cluster node started", "node", f.nodeID, "advertise", advertise, "gossip", node.GossipAddr(), "join", f.join, "bootstrap", bootstrap, "raft_dir", raftDir)
	return nil
}

// peerTLS builds the client TLS configuration for connections to peers:
// nil without TLS; under TLS it presents the node's certificate (mutual
// TLS) and trusts the peers' CA.
func (f *clusterFlags) peerTLS(env *serveEnv) (*tls.Config, error) {
	if env.TLSConfig == nil {
		if f.peerCert != "" || f.peerKey != "" || f.peerCA != "" {
			return nil, usageError{errors.New("--peer-cert, --peer-key and --peer-ca need TLS (--tls-cert and --tls-key)")}
		}
		return nil, nil
	}
	cert, key, ca := f.peerCert, f.peerKey, f.peerCA
	if sec, ok := serveSecurity.Load(env.FlagSet); ok {
		s := sec.(*securityFlags)
		if cert == "" && key == "" {
			cert, key = s.tlsCert, s.tlsKey
		}
		if ca == "" {
			ca = s.clientCA
		}
	}
	if cert == "" || key == "" || ca == "" {
		return nil, usageError{errors.New("a cluster under TLS needs node certificates for mutual TLS: --client-ca (or --peer-ca) and a certificate usable as a client (--peer-cert/--peer-key, default --tls-cert/--tls-key)")}
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("peer certificate: %w", err)
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("peer CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("peer CA %s: no PEM certificates", ca)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}
