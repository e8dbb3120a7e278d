package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/xcheng85/go-ldm/storage"
)

// Codecs in a rolling upgrade.
//
// The create command carries the volume's codec (storage.VolumeMeta.Codec),
// but a node of a version from before codecs decodes it without the field
// and creates a raw volume: it would store and serve a zstd volume's frames
// as voxels. So every node announces the codecs it can store and serve in
// its gossip tags, and CreateVolume of a volume in any codec but raw is
// refused (CodecUnsupportedError) while a server of the Raft configuration,
// or an alive go-ldm gossip member (which the leader is about to make a
// voter), does not announce that codec. A server gossip does not know
// counts as not announcing it: its version cannot be told.

// tagCodecs lists, comma-separated, the codecs a member stores and serves
// ("raw,zstd"). A member without it (an older version) supports raw only.
const tagCodecs = "codecs"

// supportedCodecs are the codecs this version stores and serves.
var supportedCodecs = []storage.CodecKind{storage.CodecRaw, storage.CodecZstd}

// codecsTag is the value of tagCodecs this node announces: its
// advertiseCodecs when set (tests of upgrades), else supportedCodecs.
func codecsTag(cfg Config) string {
	kinds := cfg.advertiseCodecs
	if kinds == nil {
		kinds = supportedCodecs
	}
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.String()
	}
	return strings.Join(names, ",")
}

// memberSupports reports whether a gossip member announces codec k. Raw
// is supported by every version.
func memberSupports(m serf.Member, k storage.CodecKind) bool {
	if k == storage.CodecRaw {
		return true
	}
	return slices.Contains(strings.Split(m.Tags[tagCodecs], ","), k.String())
}

// CodecUnsupportedError is the error of CreateVolume when a node of the
// cluster does not announce the volume's codec. It reports
// FailedPrecondition: the request is valid, the cluster is not ready for
// it.
type CodecUnsupportedError struct {
	Codec storage.CodecKind
	// Nodes are the node ids that do not announce Codec, sorted; a node
	// gossip does not know is listed with "(not known to gossip)".
	Nodes []string
}

func (e *CodecUnsupportedError) Error() string {
	return fmt.Sprintf("cannot create a %s volume: node(s) %s of the cluster do not support the %s codec (a version from before it, or a member gossip does not know): "+
		"upgrade every node of the cluster first (ldm cluster members lists them), then create the volume again, or create it raw (ldm: --codec raw)",
		e.Codec, strings.Join(e.Nodes, ", "), e.Codec)
}

// FailedPrecondition marks the error for the service's error table
// (Connect code FailedPrecondition).
func (e *CodecUnsupportedError) FailedPrecondition() bool { return true }

// checkCodec returns a *CodecUnsupportedError when a volume in codec k
// cannot be created yet: a server of the Raft configuration or an alive
// go-ldm gossip member other than this node does not announce k (see
// tagCodecs). This node runs this version, so it supports every codec of
// supportedCodecs.
func (n *Node) checkCodec(k storage.CodecKind) error {
	if k == storage.CodecRaw {
		return nil
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrRaftShutdown) {
			return storage.ErrClosed
		}
		return err
	}
	gossip := map[string]serf.Member{}
	if n.serf != nil {
		for _, m := range nodeMembers(n.serf.Members()) {
			gossip[memberNodeID(m)] = m
		}
	}
	var missing []string
	seen := map[string]bool{}
	check := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		if id == n.cfg.NodeID {
			if n.cfg.advertiseCodecs != nil && !slices.Contains(n.cfg.advertiseCodecs, k) {
				missing = append(missing, id)
			}
			return
		}
		m, ok := gossip[id]
		switch {
		case !ok:
			missing = append(missing, id+" (not known to gossip)")
		case !memberSupports(m, k):
			missing = append(missing, id)
		}
	}
	for _, s := range f.Configuration().Servers {
		check(string(s.ID))
	}
	for id, m := range gossip {
		if m.Status == serf.StatusAlive {
			check(id)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return &CodecUnsupportedError{Codec: k, Nodes: missing}
}
