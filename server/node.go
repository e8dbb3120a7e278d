package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// startNode starts the cluster node of cfg.Cluster over store. advertise
// is the listener's address; it returns the node and the address clients
// and peers use.
func startNode(cfg Config, dataDir, advertise string, useTLS bool, store storage.LDM, tel *telemetry, log *slog.Logger) (*cluster.Node, string, error) {
	c := cfg.Cluster
	fs, ok := store.(*storage.Store)
	if !ok {
		return nil, "", fmt.Errorf("a cluster node needs the file store (got %T)", store)
	}
	if c.Advertise != "" {
		advertise = c.Advertise
	}
	host, _, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, "", invalid("--advertise %q: %v", advertise, err)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, "", invalid("the server listens on %s: set --advertise to the address peers should use", advertise)
	}
	bootstrap := c.Bootstrap == BootstrapAlways || (c.Bootstrap == BootstrapAuto && len(c.Join) == 0 && c.BootstrapExpect == 0)
	raftDir := c.RaftDir
	if raftDir == "" {
		// Not inside the data directory: the store owns every name there.
		raftDir = filepath.Clean(dataDir) + "-raft"
	}
	var peerTLS *tls.Config
	if useTLS {
		if peerTLS, err = nodeTLS(cfg); err != nil {
			return nil, "", err
		}
	}
	node, err := cluster.New(cluster.Config{
		NodeID:              c.NodeID,
		Dir:                 raftDir,
		AdvertiseAddr:       advertise,
		Bootstrap:           bootstrap,
		GossipAddr:          c.GossipAddr,
		GossipAdvertiseAddr: c.GossipAdvertise,
		GossipKey:           c.GossipKey,
		LocalGossip:         c.LocalGossip,
		Join:                c.Join,
		BootstrapExpect:     c.BootstrapExpect,
		LookupHost:          c.LookupHost,
		MaxTileBytes:        cfg.MaxTileBytes,
		TLS:                 peerTLS,
		Key:                 c.Key,
		// Under TLS only node certificates (server usage) may use the
		// node-to-node endpoints, not users' client certificates.
		Authorize:       auth.NodePeer,
		Tracer:          tel.tracer,
		ObserveSnapshot: tel.observeSnapshot(),
		Logger:          log,
	}, cluster.FileStore(fs))
	if err != nil {
		return nil, "", err
	}
	if !useTLS && len(c.Key) == 0 && !isLoopbackHost(host) {
		log.Warn("cluster node endpoints (/_ldm/raft, /_ldm/cluster/*) are open to anyone who reaches "+advertise+": without TLS and --cluster-key any caller can write, replicate or change membership; set --cluster-key or TLS",
			"node", c.NodeID, "advertise", advertise)
	}
	log.Info("cluster node started", "node", c.NodeID, "advertise", advertise, "gossip", node.GossipAddr(), "join", c.Join, "bootstrap", bootstrap, "bootstrap_expect", c.BootstrapExpect, "raft_dir", raftDir)
	return node, advertise, nil
}

// nodeTLS builds the client TLS configuration for connections to peers: it
// presents the node's certificate (mutual TLS) and trusts the peers' CA.
func nodeTLS(cfg Config) (*tls.Config, error) {
	c := cfg.Cluster
	cert, key, ca := c.PeerCertFile, c.PeerKeyFile, c.PeerCAFile
	if cert == "" && key == "" {
		cert, key = cfg.TLS.CertFile, cfg.TLS.KeyFile
	}
	if ca == "" {
		ca = cfg.TLS.ClientCAFile
	}
	if cert == "" || key == "" || ca == "" {
		return nil, invalid("a cluster under TLS needs node certificates for mutual TLS: --client-ca (or --peer-ca) and a certificate usable as a client (--peer-cert/--peer-key, default --tls-cert/--tls-key)")
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

// isLoopbackHost reports whether host is a loopback IP or "localhost".
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// addPeerCA makes the main port's TLS verify client certificates against
// the peer CA too (--peer-ca), so nodes whose certificates another CA than
// --client-ca signed can open Raft streams and forward writes;
// auth.NodePeer still decides which verified certificates are nodes'.
func addPeerCA(cfg Config, tlsConfig *tls.Config) error {
	ca := cfg.Cluster.PeerCAFile
	if tlsConfig == nil || cfg.Cluster.NodeID == "" || ca == "" || ca == cfg.TLS.ClientCAFile {
		return nil
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return fmt.Errorf("peer CA: %w", err)
	}
	pool := tlsConfig.ClientCAs
	if pool == nil {
		pool = x509.NewCertPool()
	} else {
		pool = pool.Clone()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("peer CA %s: no PEM certificates", ca)
	}
	tlsConfig.ClientCAs = pool
	if tlsConfig.ClientAuth < tls.VerifyClientCertIfGiven {
		tlsConfig.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return nil
}

// handOffTimeout bounds the leadership transfer of a stopping leader.
const handOffTimeout = 10 * time.Second

// handOffLeadership hands leadership to another voter when this node
// leads, before a graceful stop (SIGTERM: a rolling restart, a scale
// down): the cluster then has a leader again within a round trip, instead
// of after an election timeout without one. A failure is logged; the
// others elect a leader as after a crash.
func (s *Server) handOffLeadership(ctx context.Context) {
	if s.node == nil || !s.node.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, handOffTimeout)
	defer cancel()
	members, err := s.node.Members(ctx)
	voters := 0
	for _, m := range members {
		if m.Voter {
			voters++
		}
	}
	if err != nil || voters < 2 {
		return // alone: nobody to hand off to
	}
	id, err := s.node.TransferLeader(ctx, "")
	if err != nil {
		s.log.Warn("could not hand off leadership before stopping; the other nodes elect a leader after an election timeout", "error", err)
		return
	}
	s.log.Info("handed off leadership before stopping", "leader", id)
}
