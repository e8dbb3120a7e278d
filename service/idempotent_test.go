package service_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"connectrpc.com/connect"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// TestTileService_WriteTile_request_id: a write retried with the same
// request id is stored once and answered with the original offset, in
// every protocol, by WriteTile and WriteTileStream (across a batch and
// within one); a deleted and re-created volume forgets its ids; an id over
// 64 bytes is InvalidArgument.
func TestTileService_WriteTile_request_id(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			for name, store := range map[string]func(t *testing.T) storage.LDM{
				"memory": func(*testing.T) storage.LDM { return storage.NewMemory(0) },
				"file_store": func(t *testing.T) storage.LDM {
					s, err := storage.Open(t.TempDir(), storage.Config{})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { s.Close() })
					return s
				},
			} {
				t.Run(name, func(t *testing.T) {
					st := store(t)
					ts := startServer(t, serverOptions{store: st})
					c := ts.clients(t, p)
					ctx := context.Background()
					createVolume(t, c, "v")
					write := func(value, id string) uint64 {
						t.Helper()
						res, err := c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte(value)}, RequestId: id}))
						if err != nil {
							t.Fatal(err)
						}
						return res.Msg.GetOffset()
					}
					if a, b := write("a", "r-1"), write("a", "r-1"); a != 0 || b != 0 {
						t.Fatalf("WriteTile twice with one request id: offsets %d and %d, want 0 and 0", a, b)
					}
					if off := write("plain", ""); off != 1 {
						t.Fatalf("WriteTile without an id at %d, want 1", off)
					}

					stream := c.tiles.WriteTileStream(ctx)
					send := []struct{ value, id string }{{"b", "r-2"}, {"a", "r-1"}, {"b", "r-2"}, {"c", ""}}
					for i, m := range send {
						msg := &ldmv1.WriteTileStreamRequest{Tile: &ldmv1.Tile{Value: []byte(m.value)}, RequestId: m.id}
						if i == 0 {
							msg.Volume = "v"
						}
						if err := stream.Send(msg); err != nil {
							t.Fatal(err)
						}
					}
					if err := stream.CloseRequest(); err != nil {
						t.Fatal(err)
					}
					var got []uint64
					for {
						res, err := stream.Receive()
						if err != nil {
							break
						}
						got = append(got, res.GetOffset())
					}
					if err := stream.CloseResponse(); err != nil {
						t.Fatal(err)
					}
					if want := []uint64{2, 0, 2, 3}; !slices.Equal(got, want) {
						t.Fatalf("WriteTileStream offsets %v, want %v", got, want)
					}
					info, err := st.Volume("v")
					if err != nil {
						t.Fatal(err)
					}
					if info.NextOffset != 4 {
						t.Fatalf("%d tiles stored, want 4", info.NextOffset)
					}

					if _, err := c.volumes.DeleteVolume(ctx, connect.NewRequest(&ldmv1.DeleteVolumeRequest{Name: "v"})); err != nil {
						t.Fatal(err)
					}
					createVolume(t, c, "v")
					if off := write("new", "plain-first"); off != 0 {
						t.Fatalf("first write to the re-created volume at %d", off)
					}
					if off := write("a again", "r-1"); off != 1 {
						t.Fatalf("an id of the deleted volume answered offset %d, want a new tile at 1", off)
					}

					_, err = c.tiles.WriteTile(ctx, connect.NewRequest(&ldmv1.WriteTileRequest{Volume: "v", Tile: &ldmv1.Tile{Value: []byte("x")}, RequestId: string(make([]byte, 65))}))
					var ce *connect.Error
					if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument {
						t.Fatalf("a 65-byte request id: %v, want InvalidArgument", err)
					}
				})
			}
		})
	}
}
