package service_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// fuzzMaxTile is the tile limit of the fuzzed server: messages are capped
// at this plus the message overhead (64 KiB), after decompression.
const fuzzMaxTile = 256 << 10

// fuzzTargets are the request shapes the fuzzer picks from: a procedure
// and the protocol headers, with or without compression.
var fuzzTargets = []struct {
	procedure string
	header    map[string]string
}{
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/proto"}},
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/proto", "Content-Encoding": "gzip"}},
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/json"}},
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/grpc"}},
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip"}},
	{ldmv1connect.TileServiceWriteTileProcedure, map[string]string{"Content-Type": "application/grpc-web+proto", "Grpc-Encoding": "gzip"}},
	{ldmv1connect.TileServiceReadTileStreamProcedure, map[string]string{"Content-Type": "application/connect+proto", "Connect-Content-Encoding": "gzip"}},
	{ldmv1connect.TileServiceReadTileStreamProcedure, map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip"}},
	{ldmv1connect.VolumeServiceCreateVolumeProcedure, map[string]string{"Content-Type": "application/proto", "Content-Encoding": "gzip"}},
	{ldmv1connect.VolumeServiceStreamBricksProcedure, map[string]string{"Content-Type": "application/connect+proto"}},
	{"/grpc.health.v1.Health/Check", map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip"}},
}

// FuzzHandler_body sends arbitrary bytes as the body of a call in every
// protocol, compressed or not, to the real handler. The server must answer
// without panicking, and must never allocate much beyond the message
// limit, whatever the body claims or expands to.
func FuzzHandler_body(f *testing.F) {
	gz := func(b []byte) []byte {
		var out bytes.Buffer
		zw := gzip.NewWriter(&out)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	env := func(flags byte, b []byte) []byte {
		out := make([]byte, 5, 5+len(b))
		out[0] = flags
		binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
		return append(out, b...)
	}
	write, _ := proto.Marshal(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("voxels")}})
	bomb, _ := proto.Marshal(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: make([]byte, 4<<20)}})
	follow, _ := proto.Marshal(&ldmv1.ReadTileStreamRequest{Volume: "v", Follow: false})
	f.Add(uint8(0), write)
	f.Add(uint8(1), gz(write))
	f.Add(uint8(1), gz(bomb))
	f.Add(uint8(2), []byte(`{"volume":"v","tile":{"value":"AAAA"}}`))
	f.Add(uint8(3), env(0, write))
	f.Add(uint8(4), env(1, gz(write)))
	f.Add(uint8(4), env(1, gz(bomb)))
	f.Add(uint8(4), []byte{1, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x8b})
	f.Add(uint8(5), env(1, gz(write)))
	f.Add(uint8(6), env(1, gz(follow)))
	f.Add(uint8(7), env(0, follow)[:7])
	f.Add(uint8(9), env(2, nil))
	f.Add(uint8(10), env(1, gz(make([]byte, 2<<20))))

	store := storage.NewMemory(0)
	svc, err := service.New(service.Config{Store: store, Logger: slog.New(slog.DiscardHandler), MaxTileBytes: fuzzMaxTile})
	if err != nil {
		f.Fatal(err)
	}
	h := svc.Handler()
	f.Fuzz(func(t *testing.T, target uint8, body []byte) {
		ft := fuzzTargets[int(target)%len(fuzzTargets)]
		// A follow stream waits for tiles until its client leaves: the
		// request's context ends it.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, ft.procedure, bytes.NewReader(body))
		for k, v := range ft.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		h.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)
		// Decompression stops one byte past the limit; a message may be
		// held a few times over (read, decompressed, decoded, answered).
		limit := uint64(len(body)) + 8*(fuzzMaxTile+64<<10) + 1<<20
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
			t.Fatalf("a %d-byte body to %s made the server allocate %d bytes (limit %d)", len(body), ft.procedure, alloc, limit)
		}
		if rec.Code == 0 {
			t.Fatal("no response")
		}
	})
}
