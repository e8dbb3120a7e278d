package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/storage"
)

// HandlerPrefix is the path prefix of every cluster endpoint; cmd/ldm
// mounts Node.Handler there.
const HandlerPrefix = "/_ldm/"

// Internal endpoints between nodes. Each answers 200 with a JSON reply
// whose Error field carries a failure, so storage sentinels survive the hop.
const (
	pathApply     = "/_ldm/cluster/apply"     // POST: body is an encoded command
	pathReadIndex = "/_ldm/cluster/readindex" // POST: reply.Index
	pathRemove    = "/_ldm/cluster/remove"    // POST: body {"id":...}
	pathTransfer  = "/_ldm/cluster/transfer"  // POST: body {"id":...}; reply.LeaderID
)

// forwardBatchBytes is the tile bytes a write may carry beyond its last
// tile: WriteTileStream gathers up to 64 MiB of values into one Append and
// may then add one more tile.
const forwardBatchBytes = 64 << 20

// maxCommandBytes is the largest Raft command a node proposes or accepts
// from a follower: forwardBatchBytes plus one tile of maxTile bytes, plus
// framing of up to a quarter of the batch (29 bytes a tile at most, so
// tiles of 128 bytes and more on average fit). Leader and followers derive
// it from the same Config.MaxTileBytes, so what a follower forwards the
// leader accepts.
func maxCommandBytes(maxTile int) int {
	return forwardBatchBytes + maxTile + forwardBatchBytes/4
}

type wireError struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

type reply struct {
	First    uint64              `json:"first,omitempty"`
	Offsets  []uint64            `json:"offsets,omitempty"` // per tile, for appends with request ids
	Info     *storage.VolumeInfo `json:"info,omitempty"`
	Index    uint64              `json:"index,omitempty"`
	LeaderID string              `json:"leader_id,omitempty"`
	Error    *wireError          `json:"error,omitempty"`
}

type idRequest struct {
	ID string `json:"id"`
}

// errorKinds maps sentinels to wire kinds; the first match wins, so
// unknown_outcome comes before the sentinels such an error also wraps.
var errorKinds = []struct {
	kind string
	err  error
}{
	{"unknown_outcome", ErrUnknownOutcome},
	{"not_found", storage.ErrNotFound},
	{"exists", storage.ErrExists},
	{"invalid_name", storage.ErrInvalidName},
	{"invalid_argument", storage.ErrInvalidArgument},
	{"out_of_range", storage.ErrOutOfRange},
	{"too_large", storage.ErrTooLarge},
	{"no_space", storage.ErrNoSpace},
	{"corrupt", storage.ErrCorrupt},
	{"closed", storage.ErrClosed},
	{"not_leader", storage.ErrNotLeader},
	{"unknown_command", ErrUnknownCommand},
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.err) {
			return &wireError{Kind: k.kind, Message: err.Error()}
		}
	}
	return &wireError{Kind: "internal", Message: err.Error()}
}

// remoteError is an error that came back from the leader. It unwraps to the
// storage sentinel of its kind.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return "leader: " + e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

func (n *Node) fromWire(w *wireError) error {
	if w == nil {
		return nil
	}
	if w.Kind == "not_leader" {
		// The node we asked no longer leads: report what we know now.
		return n.notLeader(nil)
	}
	if w.Kind == "unknown_outcome" {
		return unknownOutcome(n.notLeader(nil), errors.New("leader: "+w.Message))
	}
	for _, k := range errorKinds {
		if k.kind == w.Kind {
			return &remoteError{msg: w.Message, sentinel: k.err}
		}
	}
	return &remoteError{msg: w.Message}
}

// dialError marks a failure to connect: the request was never sent.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func newHTTPClient(tlsConfig *tls.Config, dial DialFunc) *http.Client {
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		},
		TLSClientConfig:     tlsConfig,
		ForceAttemptHTTP2:   tlsConfig != nil,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: t}
}

func (n *Node) scheme() string {
	if n.cfg.TLS != nil {
		return "https://"
	}
	return "http://"
}

// call POSTs body to path on addr and decodes the reply. A failure to
// connect wraps *storage.NotLeaderError (the request was not sent); a
// failure after sending also wraps ErrUnknownOutcome.
func (n *Node) call(ctx context.Context, addr, path string, body []byte) (*reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.scheme()+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	injectTrace(ctx, req)
	n.sign(req)
	resp, err := n.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		nl := &storage.NotLeaderError{LeaderAddr: addr}
		var de *dialError
		if errors.As(err, &de) {
			return nil, fmt.Errorf("%w: forward to %s: %v", nl, addr, err)
		}
		return nil, unknownOutcome(nl, fmt.Errorf("forward to %s: %w", addr, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("forward to %s: %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
		if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway {
			return nil, fmt.Errorf("%w: %v", &storage.NotLeaderError{LeaderAddr: addr}, err)
		}
		return nil, err
	}
	var r reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, unknownOutcome(&storage.NotLeaderError{LeaderAddr: addr}, fmt.Errorf("forward to %s: decode reply: %w", addr, err))
	}
	return &r, nil
}

func (n *Node) forwardApply(ctx context.Context, addr string, cmd []byte) (*applyResult, error) {
	r, err := n.call(ctx, addr, pathApply, cmd)
	if err != nil {
		return nil, err
	}
	if r.Error != nil && r.Error.Kind == "not_leader" {
		return nil, n.fromWire(r.Error)
	}
	res := &applyResult{first: r.First, offsets: r.Offsets, err: n.fromWire(r.Error)}
	if r.Info != nil {
		res.info = *r.Info
	}
	return res, nil
}

func (n *Node) forwardReadIndex(ctx context.Context, addr string) (uint64, error) {
	r, err := n.call(ctx, addr, pathReadIndex, nil)
	if err != nil {
		return 0, err
	}
	if err := n.fromWire(r.Error); err != nil {
		return 0, err
	}
	return r.Index, nil
}

func writeReply(w http.ResponseWriter, r *reply) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(r)
}

// checkPeer rejects requests that are not POSTs from an authorized peer.
func (n *Node) checkPeer(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return false
	}
	if err := n.authorizePeer(r); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return false
	}
	return true
}

// handleApply applies a command forwarded by a follower. It never forwards
// again: a node that does not lead answers not_leader.
func (n *Node) handleApply(w http.ResponseWriter, r *http.Request) {
	if !n.checkPeer(w, r) {
		return
	}
	limit := n.cfg.maxCommandBytes
	cmd, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(cmd) > limit {
		writeReply(w, &reply{Error: toWire(fmt.Errorf("forwarded command of more than %d bytes: %w", limit, storage.ErrTooLarge))})
		return
	}
	c, err := decodeCommand(cmd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, t := range c.tiles {
		if len(t.Value) > n.cfg.MaxTileBytes {
			writeReply(w, &reply{Error: toWire(fmt.Errorf("forwarded tile of %d bytes, the limit is %d: %w", len(t.Value), n.cfg.MaxTileBytes, storage.ErrTooLarge))})
			return
		}
	}
	ctx, span := n.startForwarded(r)
	res, err := n.applyLocal(ctx, cmd)
	endSpan(span, err)
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			err = n.notLeader(nil)
		}
		writeReply(w, &reply{Error: toWire(err)})
		return
	}
	out := &reply{First: res.first, Offsets: res.offsets, Error: toWire(res.err)}
	if res.info.Name != "" {
		info := res.info
		out.Info = &info
	}
	writeReply(w, out)
}

func (n *Node) handleReadIndex(w http.ResponseWriter, r *http.Request) {
	if !n.checkPeer(w, r) {
		return
	}
	if !n.IsLeader() {
		writeReply(w, &reply{Error: toWire(n.notLeader(nil))})
		return
	}
	idx, err := n.leaderReadIndex(r.Context())
	writeReply(w, &reply{Index: idx, Error: toWire(err)})
}

// leaderIDRequest reads the member id of a membership request that this
// node must carry out as the leader. It answers the request itself (and
// returns false) when the peer is refused, the body is malformed or this
// node does not lead.
func (n *Node) leaderIDRequest(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !n.checkPeer(w, r) {
		return "", false
	}
	var req idRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", false
	}
	if !n.IsLeader() {
		writeReply(w, &reply{Error: toWire(n.notLeader(nil))})
		return "", false
	}
	return req.ID, true
}

func (n *Node) handleRemove(w http.ResponseWriter, r *http.Request) {
	if id, ok := n.leaderIDRequest(w, r); ok {
		writeReply(w, &reply{Error: toWire(n.removeLocal(r.Context(), id))})
	}
}

func (n *Node) handleTransfer(w http.ResponseWriter, r *http.Request) {
	if id, ok := n.leaderIDRequest(w, r); ok {
		leader, err := n.transferLocal(r.Context(), id)
		writeReply(w, &reply{LeaderID: leader, Error: toWire(err)})
	}
}
