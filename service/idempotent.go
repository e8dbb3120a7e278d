package service

import (
	"context"
	"sync"

	"github.com/xcheng85/go-ldm/storage"
)

// IdempotentAppender is an optional capability of a Tiles value: Append
// where tile i carries the client request id ids[i] ("" for none). A tile
// whose id was applied to the volume before is not stored again and gets
// its original offset; AppendIdempotent returns every tile's offset, in
// order. cluster.Node implements it with the ids in the replicated
// command, so a retry after a leader change is recognized. Without it the
// service keeps the ids itself, in memory (see requestIDs).
type IdempotentAppender interface {
	AppendIdempotent(ctx context.Context, volume string, tiles []storage.Tile, ids []string) ([]uint64, error)
}

// MaxRequestIDBytes is the longest request id a write may carry.
const MaxRequestIDBytes = 64

// requestIDEntries is how many request ids a server without the
// IdempotentAppender capability remembers (the most recent ones, about
// 150 bytes each), as cluster nodes do.
const requestIDEntries = 1 << 17

// appendTiles appends tiles to volume; ids is nil or holds a request id
// per tile. It returns the first offset and, when a tile repeated a known
// request id (so offsets need not be contiguous), every tile's offset.
func (s *Server) appendTiles(ctx context.Context, volume string, tiles []storage.Tile, ids []string) (first uint64, offsets []uint64, err error) {
	has := false
	for i, id := range ids {
		if len(id) > MaxRequestIDBytes {
			return 0, nil, invalidField("request_id", "request id of %d bytes (tile %d of the batch), at most %d", len(id), i, MaxRequestIDBytes)
		}
		has = has || id != ""
	}
	if !has {
		first, err := s.store.Append(ctx, volume, tiles...)
		return first, nil, err
	}
	var offs []uint64
	if a, ok := s.store.(IdempotentAppender); ok {
		offs, err = a.AppendIdempotent(ctx, volume, tiles, ids)
	} else {
		offs, err = s.ids.append(ctx, s.store, volume, tiles, ids)
	}
	if err != nil {
		return 0, nil, err
	}
	return offs[0], offs, nil
}

// requestIDs deduplicates writes by request id for a store that cannot
// (a single node's storage.Store or storage.Memory). Ids are kept in
// memory, keyed by volume, the volume's creation time (so a deleted and
// re-created volume starts afresh) and id; the most recent
// requestIDEntries are kept. A restart forgets them. The zero value is
// ready to use.
type requestIDs struct {
	mu    sync.Mutex
	m     map[requestKey]*requestEntry
	order []requestKey // insertion order from head
	head  int
}

type requestKey struct {
	volume  string
	created int64
	id      string
}

// requestEntry is an id being written (done open) or written (ok: offset
// is valid; !ok: the write failed and the entry is gone from the map).
type requestEntry struct {
	done   chan struct{}
	offset uint64
	ok     bool
}

// append stores the tiles whose ids are not known (waiting for a write of
// the same id in flight) and returns every tile's offset.
func (r *requestIDs) append(ctx context.Context, store Tiles, volume string, tiles []storage.Tile, ids []string) ([]uint64, error) {
	info, err := store.Volume(volume)
	if err != nil {
		return nil, err
	}
	created := info.CreatedAt.UnixNano()
	offsets := make([]uint64, len(tiles))
	// Per tile: -1 to store, -2 answered by a known id, >= 0 the earlier
	// tile of this batch with the same id.
	src := make([]int, len(tiles))
	waits := map[int]*requestEntry{}
	ownedAt := map[int]*requestEntry{}
	seen := map[string]int{}

	r.mu.Lock()
	if r.m == nil {
		r.m = map[requestKey]*requestEntry{}
	}
	for i, id := range ids {
		src[i] = -1
		if id == "" {
			continue
		}
		if j, ok := seen[id]; ok {
			src[i] = j
			continue
		}
		seen[id] = i
		k := requestKey{volume, created, id}
		if e, ok := r.m[k]; ok {
			waits[i] = e
			continue
		}
		e := &requestEntry{done: make(chan struct{})}
		r.insertLocked(k, e)
		ownedAt[i] = e
	}
	r.mu.Unlock()

	// Writes of the same ids in flight elsewhere: take their offsets, or
	// store the tile here if that write failed.
	for i, e := range waits {
		select {
		case <-e.done:
		case <-ctx.Done():
			r.finish(volume, created, ids, ownedAt, false)
			return nil, ctx.Err()
		}
		if e.ok {
			offsets[i], src[i] = e.offset, -2
		}
	}
	var batch []storage.Tile
	var at []int
	for i := range tiles {
		if src[i] == -1 {
			batch = append(batch, tiles[i])
			at = append(at, i)
		}
	}
	if len(batch) > 0 {
		first, err := store.Append(ctx, volume, batch...)
		if err != nil {
			r.finish(volume, created, ids, ownedAt, false)
			return nil, err
		}
		for k, i := range at {
			offsets[i] = first + uint64(k)
		}
	}
	for i, e := range ownedAt {
		e.offset = offsets[i]
	}
	r.finish(volume, created, ids, ownedAt, true)
	for i, j := range src {
		if j >= 0 {
			offsets[i] = offsets[j]
		}
	}
	return offsets, nil
}

// finish completes the entries this call owns: written, or failed and
// forgotten so that a retry writes again.
func (r *requestIDs) finish(volume string, created int64, ids []string, owned map[int]*requestEntry, ok bool) {
	r.mu.Lock()
	for i, e := range owned {
		e.ok = ok
		if !ok {
			k := requestKey{volume, created, ids[i]}
			if r.m[k] == e {
				delete(r.m, k)
			}
		}
		close(e.done)
	}
	r.mu.Unlock()
}

// insertLocked adds an entry and evicts the oldest beyond the bound.
func (r *requestIDs) insertLocked(k requestKey, e *requestEntry) {
	r.m[k] = e
	r.order = append(r.order, k)
	for len(r.m) > requestIDEntries && r.head < len(r.order) {
		delete(r.m, r.order[r.head])
		r.order[r.head] = requestKey{}
		r.head++
	}
	if r.head > 1024 && r.head > len(r.order)/2 {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
}
