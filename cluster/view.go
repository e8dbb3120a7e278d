package cluster

import "github.com/xcheng85/go-ldm/storage"

// tileViewer is the optional copy-free read of a store
// (storage.Store.ReadView); the service detects it on a Node the same way.
type tileViewer interface {
	ReadView(volume string, offset uint64) (storage.Tile, func(), error)
	BrickView(volume string, key storage.BrickKey) (storage.Tile, func(), error)
}

// ReadView forwards to the store's ReadView (see storage.Store.ReadView):
// the tile's value aliases the store's mapping of its data file until
// release is called. Over a store without it (MemoryStore) it is Read, and
// release does nothing.
func (n *Node) ReadView(volume string, offset uint64) (storage.Tile, func(), error) {
	if v, ok := n.store.(tileViewer); ok {
		return v.ReadView(volume, offset)
	}
	t, err := n.store.Read(volume, offset)
	return t, func() {}, err
}

// BrickView forwards to the store's BrickView like ReadView.
func (n *Node) BrickView(volume string, key storage.BrickKey) (storage.Tile, func(), error) {
	if v, ok := n.store.(tileViewer); ok {
		return v.BrickView(volume, key)
	}
	t, err := n.store.Brick(volume, key)
	return t, func() {}, err
}
