package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// TestTileCodec_MarshalAppend_cut_file: a kept tile whose value aliases a
// mapped file that was cut short after the store checked it fails to
// encode with an error instead of killing the process with SIGBUS.
func TestTileCodec_MarshalAppend_cut_file(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, make([]byte, 3*4096), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, 3*4096, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	var e encodedTile
	tile := storage.Tile{Offset: 1, Value: m[4096:]}
	e.setTile(&ldmv1.ReadTileResponse{Tile: &ldmv1.Tile{Offset: 1, Value: tile.Value}}, tile)
	if out, err := (tileCodec{}).MarshalAppend(nil, &e); err != nil || len(out) != e.size() {
		t.Fatalf("MarshalAppend of a sound file = %d bytes, %v", len(out), err)
	}
	if err := os.Truncate(p, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := (tileCodec{}).MarshalAppend(nil, &e); !errors.Is(err, errMappedFault) {
		t.Fatalf("MarshalAppend of a file cut under the value = %v, want errMappedFault", err)
	}
}

// BenchmarkTileCodec_appendGuarded: the cost of the fault guard on the
// copy of a kept tile into the send buffer (small and 256 KiB tiles).
func BenchmarkTileCodec_appendGuarded(b *testing.B) {
	for _, n := range []int{64, 256 << 10} {
		var e encodedTile
		tile := storage.Tile{Offset: 1, Value: make([]byte, n)}
		e.setTile(&ldmv1.ReadTileResponse{Tile: &ldmv1.Tile{Offset: 1, Value: tile.Value}}, tile)
		dst := make([]byte, 0, e.size())
		b.Run(fmt.Sprintf("plain_%d", n), func(b *testing.B) {
			for b.Loop() {
				dst = e.appendTo(dst[:0])
			}
		})
		b.Run(fmt.Sprintf("guarded_%d", n), func(b *testing.B) {
			for b.Loop() {
				dst, _ = e.appendGuarded(dst[:0])
			}
		})
	}
}
