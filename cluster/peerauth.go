package cluster

// Peer authentication with a shared cluster key, and the identity proof a
// member gives before the leader makes it a voter.
//
// With Config.Key set, every node-to-node request (the Raft upgrade,
// forwarded writes, read-index, membership changes, identification)
// carries the header
//
//	Ldm-Cluster-Auth: v1 <node id> <unix seconds> <hex HMAC-SHA256>
//
// whose MAC covers "ldm-cluster-auth/v1", the method, the path, the node
// id and the time, each followed by a newline. The receiver recomputes
// it, compares in constant time and accepts a time within keyClockSkew of
// its own clock. The key itself never travels.
//
// Before AddVoter the leader POSTs a random challenge to the member's
// advertised address (pathIdentify). The member answers with its node id,
// its advertised address and, with a key, an HMAC of the challenge, the id
// and the address. Under TLS the answer comes over a connection whose
// server certificate the leader verified against the peer CA. A member
// whose answer does not match its gossip tags is not made a voter.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ClusterAuthHeader carries a node's proof of the cluster key.
const ClusterAuthHeader = "Ldm-Cluster-Auth"

// MinKeyBytes is the shortest cluster key New accepts.
const MinKeyBytes = 16

// keyClockSkew is how far the time in a request's ClusterAuthHeader may be
// from the receiver's clock.
const keyClockSkew = 5 * time.Minute

// pathIdentify answers a leader's identity challenge (POST, JSON).
const pathIdentify = "/_ldm/cluster/identify"

// identifyTimeout bounds one identity check of a member.
const identifyTimeout = 5 * time.Second

// ErrPeerAuth: a node-to-node request lacks a valid proof of the cluster
// key.
var ErrPeerAuth = errors.New("cluster endpoint: not authenticated as a node of this cluster")

func keyMAC(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(p))
		m.Write([]byte{'\n'})
	}
	return m.Sum(nil)
}

// signHeader is the ClusterAuthHeader value of a request by node id.
func signHeader(key []byte, id, method, path string, now time.Time) string {
	ts := strconv.FormatInt(now.Unix(), 10)
	mac := keyMAC(key, "ldm-cluster-auth/v1", method, path, id, ts)
	return "v1 " + id + " " + ts + " " + hex.EncodeToString(mac)
}

// verifyHeader checks a request's ClusterAuthHeader against key.
func verifyHeader(key []byte, r *http.Request, now time.Time) error {
	v := r.Header.Get(ClusterAuthHeader)
	if v == "" {
		return fmt.Errorf("%w: no %s header (is --cluster-key set on every node?)", ErrPeerAuth, ClusterAuthHeader)
	}
	f := strings.Fields(v)
	if len(f) != 4 || f[0] != "v1" {
		return fmt.Errorf("%w: malformed %s header", ErrPeerAuth, ClusterAuthHeader)
	}
	id, ts, sig := f[1], f[2], f[3]
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed time in %s", ErrPeerAuth, ClusterAuthHeader)
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: malformed MAC in %s", ErrPeerAuth, ClusterAuthHeader)
	}
	want := keyMAC(key, "ldm-cluster-auth/v1", r.Method, r.URL.Path, id, ts)
	if !hmac.Equal(got, want) {
		return fmt.Errorf("%w: wrong cluster key (every node needs the same --cluster-key)", ErrPeerAuth)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > keyClockSkew || d < -keyClockSkew {
		return fmt.Errorf("%w: request time is %v off this node's clock (keep node clocks within %v)", ErrPeerAuth, d.Round(time.Second), keyClockSkew)
	}
	return nil
}

// sign adds this node's ClusterAuthHeader to req when a key is set.
func (n *Node) sign(req *http.Request) {
	if len(n.cfg.Key) > 0 {
		req.Header.Set(ClusterAuthHeader, signHeader(n.cfg.Key, n.cfg.NodeID, req.Method, req.URL.Path, time.Now()))
	}
}

// authorizePeer is the check every node-to-node endpoint runs: the cluster
// key when one is set, then Config.Authorize.
func (n *Node) authorizePeer(r *http.Request) error {
	if len(n.cfg.Key) > 0 {
		if err := verifyHeader(n.cfg.Key, r, time.Now()); err != nil {
			return err
		}
	}
	return n.cfg.Authorize(r)
}

type identifyRequest struct {
	Challenge string `json:"challenge"`
}

type identifyReply struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// MAC is hex HMAC-SHA256 of the challenge, ID and Addr under the
	// cluster key; empty without a key.
	MAC string `json:"mac,omitempty"`
}

func identifyMAC(key []byte, challenge, id, addr string) string {
	return hex.EncodeToString(keyMAC(key, "ldm-cluster-identify/v1", challenge, id, addr))
}

// handleIdentify answers a leader's identity challenge.
func (n *Node) handleIdentify(w http.ResponseWriter, r *http.Request) {
	if !n.checkPeer(w, r) {
		return
	}
	var req identifyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.Challenge == "" {
		http.Error(w, "identify: expected {\"challenge\": ...}", http.StatusBadRequest)
		return
	}
	out := identifyReply{ID: n.cfg.NodeID, Addr: n.cfg.AdvertiseAddr}
	if len(n.cfg.Key) > 0 {
		out.MAC = identifyMAC(n.cfg.Key, req.Challenge, out.ID, out.Addr)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// identify checks that the process answering at addr is the node id of
// this cluster: it reaches it over the node transport (mutual TLS with the
// peer CA, or the cluster key), and its answer names id and addr (signed
// with the key when there is one).
func (n *Node) identify(ctx context.Context, id, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, identifyTimeout)
	defer cancel()
	var c [16]byte
	if _, err := rand.Read(c[:]); err != nil {
		return err
	}
	challenge := hex.EncodeToString(c[:])
	body, _ := json.Marshal(identifyRequest{Challenge: challenge})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.scheme()+addr+pathIdentify, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	n.sign(req)
	resp, err := n.http.Do(req)
	if err != nil {
		return fmt.Errorf("reach %s over the node transport: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s answered %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
	}
	var rep identifyReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&rep); err != nil {
		return fmt.Errorf("%s: malformed identity: %w", addr, err)
	}
	if rep.ID != id || rep.Addr != addr {
		return fmt.Errorf("%s answered as node %q at %q, gossip announced %q at %q", addr, rep.ID, rep.Addr, id, addr)
	}
	if len(n.cfg.Key) > 0 {
		want := identifyMAC(n.cfg.Key, challenge, id, addr)
		if !hmac.Equal([]byte(rep.MAC), []byte(want)) {
			return fmt.Errorf("%s: identity not signed with this cluster's key", addr)
		}
	}
	return nil
}
