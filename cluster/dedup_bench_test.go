package cluster

import (
	"context"
	"encoding/hex"
	"sync/atomic"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

// BenchmarkAppendRequestIDs measures replicated ingest (three nodes,
// benchWriters concurrent writers of benchTileBytes tiles through the
// leader) without and with a request id per tile, alternating in rounds
// within one run (b.N tiles per path), and reports the ratio (with ids over without).
func BenchmarkAppendRequestIDs(b *testing.B) {
	l := benchLeader(b)
	var seq atomic.Uint64
	plain := func(ctx context.Context, v []byte) error {
		_, err := l.Append(ctx, "bench", storage.Tile{Value: v})
		return err
	}
	withID := func(ctx context.Context, v []byte) error {
		var id [16]byte
		n := seq.Add(1)
		for i := range 8 {
			id[i] = byte(n >> (8 * i))
		}
		_, err := l.AppendIdempotent(ctx, "bench", []storage.Tile{{Value: v}}, []string{hex.EncodeToString(id[:])})
		return err
	}
	b.SetBytes(benchTileBytes)
	b.ResetTimer()
	var without, with float64
	for round := 0; round < 4; round++ {
		// Alternate which path goes first (the first warms the cluster).
		n := max(b.N/4, 1)
		if round%2 == 0 {
			without += ingest(b, n, plain)
			with += ingest(b, n, withID)
		} else {
			with += ingest(b, n, withID)
			without += ingest(b, n, plain)
		}
	}
	b.ReportMetric(without/4/1e6, "MB/s_without_ids")
	b.ReportMetric(with/4/1e6, "MB/s_with_ids")
	b.ReportMetric(with/without, "ratio")
}
