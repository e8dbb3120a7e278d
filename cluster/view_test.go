package cluster

import (
	"bytes"
	"testing"
	"time"

	"github.com/xcheng85/go-ldm/storage"
)

// The copy-free read the service detects (service.TileViewer), spelled out
// because cluster does not import service.
var _ tileViewer = (*Node)(nil)

// TestNode_ReadView checks that a Node forwards the file store's copy-free
// reads with their errors.
func TestNode_ReadView(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t)
	n1 := c.add("n1")
	c.leader(10 * time.Second)
	mustCreate(t, n1.node, "v")
	want := bytes.Repeat([]byte("tile "), 100)
	mustAppend(t, n1.node, "v", storage.Tile{Value: want, HasKey: true, Key: storage.BrickKey{X: 1}})
	got, release, err := n1.node.ReadView("v", 0)
	if err != nil || !bytes.Equal(got.Value, want) || got.CRC32C != storage.Checksum(want) {
		t.Fatalf("ReadView(0) = %d bytes, %v", len(got.Value), err)
	}
	release()
	got, release, err = n1.node.BrickView("v", storage.BrickKey{X: 1})
	if err != nil || !bytes.Equal(got.Value, want) {
		t.Fatalf("BrickView = %d bytes, %v", len(got.Value), err)
	}
	release()
	if _, _, err := n1.node.ReadView("v", 1); !errorsIs(err, storage.ErrOutOfRange) {
		t.Fatalf("ReadView past the end: %v", err)
	}
}
