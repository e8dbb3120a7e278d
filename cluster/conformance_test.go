package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
	"github.com/xcheng85/go-ldm/storage/ldmtest"
)

// smallLimitCluster returns a cluster whose nodes and file stores accept
// tiles of at most maxTile bytes.
func smallLimitCluster(tb testing.TB, maxTile int) *testCluster {
	tb.Helper()
	c := newTestCluster(tb)
	c.newStore = func(tb testing.TB, dir string) Store {
		tb.Helper()
		s, err := storage.Open(dir, storage.Config{MaxTileBytes: maxTile, Logger: testLogger()})
		if err != nil {
			tb.Fatalf("open store %s: %v", dir, err)
		}
		return FileStore(s)
	}
	c.tune = func(cfg *Config) { cfg.MaxTileBytes = maxTile }
	return c
}

// conformanceLeader starts a cluster of size nodes and returns its leader.
// The suite runs against the leader: a follower acknowledges a forwarded
// write once the leader applied it, before it applied it itself, so a
// read on the follower right after its own write may not see it yet.
func conformanceLeader(tb testing.TB, size int) storage.LDM {
	tb.Helper()
	c := smallLimitCluster(tb, ldmtest.MaxTileBytes)
	c.add("n1")
	c.leader(10 * time.Second)
	ids := []string{"n1"}
	for i := 2; i <= size; i++ {
		id := "n" + string(rune('0'+i))
		c.add(id)
		ids = append(ids, id)
	}
	c.waitVoters(15*time.Second, ids...)
	return c.leader(10 * time.Second).node
}

// TestNode_Conformance runs storage's conformance suite against a one-node
// and the leader of a three-node cluster, as storage runs it against Memory
// and Store.
func TestNode_Conformance(t *testing.T) {
	for _, size := range []int{1, 3} {
		name := map[int]string{1: "one_node", 3: "three_nodes"}[size]
		t.Run(name, func(t *testing.T) {
			ldmtest.RunConformance(t, func(tb testing.TB) storage.LDM { return conformanceLeader(tb, size) })
		})
	}
}

// The optional capabilities the service detects on the value it serves
// (service.ReadBarrier, ReaderInto, Membership and IdempotentAppender), spelled out here
// because cluster does not import service: a changed signature would
// silently turn a capability off.
var _ interface {
	ReadBarrier(ctx context.Context) error
	ReadInto(volume string, offset uint64, buf []byte) (storage.Tile, error)
	Servers(ctx context.Context) ([]*ldmv1.Server, error)
	RemoveServer(ctx context.Context, id string) error
	TransferLeader(ctx context.Context, id string) (string, error)
	AppendIdempotent(ctx context.Context, volume string, tiles []storage.Tile, ids []string) ([]uint64, error)
} = (*Node)(nil)

// TestNode_ReadInto checks that a Node forwards the file store's
// zero-allocation read, the optional capability the service detects by
// type assertion, on the leader and on a follower.
func TestNode_ReadInto(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	n2 := c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")
	mustCreate(t, n1.node, "v")
	want := [][]byte{tileValue(t, "short"), bytes.Repeat([]byte("long tile "), 100)}
	for _, v := range want {
		mustAppend(t, n1.node, "v", storage.Tile{Value: v})
	}
	c.converge(20 * time.Second)

	for _, n := range []*testNode{n1, n2} {
		buf := make([]byte, 0, 64)
		got, err := n.node.ReadInto("v", 0, buf)
		if err != nil || !bytes.Equal(got.Value, want[0]) || got.Offset != 0 {
			t.Fatalf("%s: ReadInto(0) = %q at %d, %v; want %q", n.id, got.Value, got.Offset, err, want[0])
		}
		if &got.Value[0] != &buf[:1][0] {
			t.Fatalf("%s: ReadInto with a large enough buffer did not read into it", n.id)
		}
		got, err = n.node.ReadInto("v", 1, buf)
		if err != nil || !bytes.Equal(got.Value, want[1]) || got.CRC32C != storage.Checksum(want[1]) {
			t.Fatalf("%s: ReadInto(1) with a small buffer = %d bytes, %v", n.id, len(got.Value), err)
		}
		if _, err := n.node.ReadInto("v", 2, buf); !errorsIs(err, storage.ErrOutOfRange) {
			t.Fatalf("%s: ReadInto past the end: %v", n.id, err)
		}
	}
}

// TestNode_MaxTileBytes checks that Config.MaxTileBytes limits writes on a
// follower (checked before forwarding) and on the leader, including a
// command that reaches the leader's forwarding endpoint directly.
func TestNode_MaxTileBytes(t *testing.T) {
	t.Parallel()
	const limit = 4 << 10
	c := smallLimitCluster(t, limit)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")
	leader := c.leader(10 * time.Second)
	var follower *testNode
	for _, n := range c.running() {
		if n != leader {
			follower = n
		}
	}
	mustCreate(t, n1.node, "v")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, n := range []*testNode{follower, leader} {
		just := tileValue(t, bytes.Repeat([]byte{'x'}, limit-8), n.id)[:limit]
		off, err := n.node.Append(ctx, "v", storage.Tile{Value: just})
		if err != nil {
			t.Fatalf("%s: a tile of exactly the limit: %v", n.id, err)
		}
		if got, err := leader.node.Read("v", off); err != nil || !bytes.Equal(got.Value, just) {
			t.Fatalf("%s: the tile at the limit reads back as %d bytes, %v", n.id, len(got.Value), err)
		}
		_, err = n.node.Append(ctx, "v", storage.Tile{Value: make([]byte, limit+1)})
		if !errorsIs(err, storage.ErrTooLarge) {
			t.Fatalf("%s: a tile one byte over the limit: %v, want ErrTooLarge", n.id, err)
		}
	}

	// A forwarded command with a tile over the limit (from a peer that
	// skipped the check) is refused by the leader with the same sentinel.
	cmd, err := encodeAppend("v", []storage.Tile{{Value: make([]byte, limit+1)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := forwardRaw(leader, cmd); !errorsIs(err, storage.ErrTooLarge) {
		t.Fatalf("forwarded oversized tile: %v, want ErrTooLarge", err)
	}
	if info, err := leader.node.Volume("v"); err != nil || info.NextOffset != 2 {
		t.Fatalf("after refused writes: %+v, %v; want 2 tiles", info, err)
	}
}

// TestNode_CommandLimitAgrees checks that leader and follower apply one cap
// to a whole command: a batch the follower refuses is one the leader would
// refuse too, and the leader refuses a forwarded command over it.
func TestNode_CommandLimitAgrees(t *testing.T) {
	t.Parallel()
	const limit, maxCmd = 1 << 10, 8 << 10
	c := smallLimitCluster(t, limit)
	tune := c.tune
	c.tune = func(cfg *Config) { tune(cfg); cfg.maxCommandBytes = maxCmd }
	c.add("n1")
	c.leader(10 * time.Second)
	c.add("n2")
	c.waitVoters(15*time.Second, "n1", "n2")
	leader := c.leader(10 * time.Second)
	mustCreate(t, leader.node, "v")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	batch := func(n int) []storage.Tile {
		var tiles []storage.Tile
		for i := range n {
			v := make([]byte, limit)
			binary.LittleEndian.PutUint64(v, uint64(i))
			tiles = append(tiles, storage.Tile{Value: v})
		}
		return tiles
	}
	// 7 tiles of 1 KiB plus framing fit in 8 KiB; 8 do not.
	for _, n := range c.running() {
		if _, err := n.node.Append(ctx, "v", batch(7)...); err != nil {
			t.Fatalf("%s: a batch under the command limit: %v", n.id, err)
		}
		if _, err := n.node.Append(ctx, "v", batch(8)...); !errorsIs(err, storage.ErrTooLarge) {
			t.Fatalf("%s: a batch over the command limit: %v, want ErrTooLarge", n.id, err)
		}
	}
	cmd, err := encodeAppend("v", batch(8))
	if err != nil {
		t.Fatal(err)
	}
	if err := forwardRaw(leader, cmd); !errorsIs(err, storage.ErrTooLarge) {
		t.Fatalf("forwarded command over the limit: %v, want ErrTooLarge", err)
	}
}

// forwardRaw hands cmd to n's forwarding endpoint as a follower would and
// returns the error of the reply.
func forwardRaw(n *testNode, cmd []byte) error {
	req := httptest.NewRequest(http.MethodPost, pathApply, bytes.NewReader(cmd))
	rec := httptest.NewRecorder()
	n.node.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		return &remoteError{msg: rec.Body.String()}
	}
	var r reply
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		return err
	}
	return n.node.fromWire(r.Error)
}
