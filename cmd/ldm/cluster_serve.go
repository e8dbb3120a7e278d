package main

import (
	"encoding/base64"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/xcheng85/go-ldm/server"
)

// clusterFlags are the cluster flags of `ldm serve`. Without --node-id the
// server runs alone and none of the others apply.
type clusterFlags struct {
	nodeID          string
	advertise       string
	gossipAddr      string
	gossipAdvertise string
	gossipKey       string
	clusterKey      string
	join            []string
	raftDir         string
	bootstrap       string // "auto", "true" or "false"
	bootstrapExpect int
	peerCert        string
	peerKey         string
	peerCA          string
}

func (f *clusterFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.nodeID, "node-id", "", "join a replicated cluster as this node (stable across restarts); empty runs one server alone")
	fs.StringVar(&f.advertise, "advertise", "", "host:port peers and clients use to reach --addr (default: the listener's address)")
	fs.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7946", "host:port for Serf membership gossip (UDP and TCP)")
	fs.StringVar(&f.gossipAdvertise, "gossip-advertise", "", "host:port peers use to reach --gossip-addr (default: --gossip-addr)")
	fs.StringVar(&f.gossipKey, "gossip-key", "", "base64 key (16, 24 or 32 bytes, the same on every node) that encrypts and authenticates gossip; without it anyone who reaches --gossip-addr can join and become a voter (make one with: head -c 32 /dev/urandom | base64)")
	fs.StringVar(&f.clusterKey, "cluster-key", "", "base64 secret (at least 16 bytes, the same on every node) that authenticates node-to-node requests (Raft, forwarded writes, membership) and the identity a member proves before it becomes a voter; required without TLS when authentication is on (make one with: head -c 32 /dev/urandom | base64)")
	fs.StringSliceVar(&f.join, "join", nil, "gossip addresses of members to join, host:port or host (then the port of --gossip-addr), comma separated or repeated; a DNS name stands for every address it resolves to and is resolved again until joined")
	fs.StringVar(&f.raftDir, "raft-dir", "", "directory of the Raft log and snapshots, outside --data (default: <--data>-raft)")
	fs.StringVar(&f.bootstrap, "bootstrap", "auto", "form a new cluster if this node has no Raft state: true, false or auto (true when --join and --bootstrap-expect are not set)")
	fs.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "form one cluster of this many voters from nodes started together (the same number on each, with --join naming them, e.g. a headless service): the node with the lowest --node-id bootstraps once it sees them all; nodes with Raft state never bootstrap")
	fs.StringVar(&f.peerCert, "peer-cert", "", "PEM node certificate presented to peers under TLS; it needs the server and client usages, as from 'ldm certs issue --server' (default: --tls-cert)")
	fs.StringVar(&f.peerKey, "peer-key", "", "PEM key of --peer-cert (default: --tls-key)")
	fs.StringVar(&f.peerCA, "peer-ca", "", "PEM CA bundle that signed the peers' certificates (default: --client-ca)")
}

// apply sets cfg.Cluster from the flags in fs.
func (f *clusterFlags) apply(fs *pflag.FlagSet, cfg *server.Config) error {
	if f.nodeID == "" {
		for _, name := range []string{"join", "gossip-key", "cluster-key", "raft-dir", "bootstrap", "bootstrap-expect", "advertise", "peer-cert", "peer-key", "peer-ca"} {
			if fl := fs.Lookup(name); fl != nil && fl.Changed {
				return usageError{fmt.Errorf("--%s needs --node-id", name)}
			}
		}
		return nil
	}
	var bootstrap server.Bootstrap
	switch f.bootstrap {
	case "auto":
		bootstrap = server.BootstrapAuto
	case "true":
		bootstrap = server.BootstrapAlways
	case "false":
		bootstrap = server.BootstrapNever
	default:
		return usageError{fmt.Errorf("--bootstrap %q: want true, false or auto", f.bootstrap)}
	}
	var gossipKey []byte
	if f.gossipKey != "" {
		var err error
		gossipKey, err = base64.StdEncoding.DecodeString(f.gossipKey)
		if err != nil {
			return usageError{fmt.Errorf("--gossip-key: %v", err)}
		}
	}
	var clusterKey []byte
	if f.clusterKey != "" {
		var err error
		clusterKey, err = base64.StdEncoding.DecodeString(f.clusterKey)
		if err != nil {
			return usageError{fmt.Errorf("--cluster-key: %v", err)}
		}
	}
	cfg.Cluster = server.ClusterConfig{
		NodeID:          f.nodeID,
		Advertise:       f.advertise,
		GossipAddr:      f.gossipAddr,
		GossipAdvertise: f.gossipAdvertise,
		GossipKey:       gossipKey,
		Key:             clusterKey,
		Join:            f.join,
		RaftDir:         f.raftDir,
		Bootstrap:       bootstrap,
		BootstrapExpect: f.bootstrapExpect,
		PeerCertFile:    f.peerCert,
		PeerKeyFile:     f.peerKey,
		PeerCAFile:      f.peerCA,
	}
	return nil
}
