package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/xcheng85/go-ldm/cluster"
	"github.com/xcheng85/go-ldm/service/auth"
	"github.com/xcheng85/go-ldm/storage"
)

// startNode starts the cluster node of cfg.Cluster over store. advertise
// is the listener's address; it returns the node and the address clients
// and peers use.
func startNode(cfg Config, dataDir, advertise string, useTLS bool, store storage.LDM, log *slog.Logger) (*cluster.Node, string, error) {
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
	bootstrap := c.Bootstrap == BootstrapAlways || (c.Bootstrap == BootstrapAuto && len(c.Join) == 0)
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
		MaxTileBytes:        cfg.MaxTileBytes,
		TLS:                 peerTLS,
		// Under TLS only node certificates (server usage) may use the
		// node-to-node endpoints, not users' client certificates.
		Authorize: auth.NodePeer,
		Logger:    log,
	}, cluster.FileStore(fs))
	if err != nil {
		return nil, "", err
	}
	log.Info("cluster node started", "node", c.NodeID, "advertise", advertise, "gossip", node.GossipAddr(), "join", c.Join, "bootstrap", bootstrap, "raft_dir", raftDir)
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
