package service

import (
	"context"
	"sync"

	"github.com/xcheng85/go-ldm/storage"
)

// byteBudget is a server-wide count of bytes that calls hold (tile buffers
// of reads in flight, tiles queued for ingest), bounded by a limit. A call
// acquires bytes before it holds them and releases them when it lets go.
//
// It is not FIFO: a small request that fits goes ahead of a large one that
// waits (a large request can wait long under a steady load of small
// ones). Requests above smallBytes may together take only the limit less
// a reserve (a quarter), so callers that hold large tiles, for example
// clients that never read them, cannot keep small requests waiting. A
// request larger than its share is clamped to it, so it proceeds alone.
type byteBudget struct {
	limit   int64
	reserve int64

	mu   sync.Mutex
	used int64
	wake chan struct{} // closed (and replaced) whenever bytes are released

	// probe lets one reader at a time read a tile of unknown size while
	// large tiles fill their share (see readBuf.read).
	probe chan struct{}
}

// smallBytes is the largest request that may use the budget's reserve.
const smallBytes = 1 << 20

func newByteBudget(limit int64) *byteBudget {
	return &byteBudget{limit: limit, reserve: limit / 4, wake: make(chan struct{}), probe: make(chan struct{}, 1)}
}

// share is how far the bytes in use may grow for a request of n bytes.
func (b *byteBudget) share(n int64) int64 {
	if n <= smallBytes {
		return b.limit
	}
	return b.limit - b.reserve
}

// clamp returns what a request of n bytes actually takes from the budget.
func (b *byteBudget) clamp(n int64) int64 {
	if n < 0 {
		return 0
	}
	return min(n, b.share(n))
}

// tryAcquire takes clamp(n) bytes if they are free and reports whether it
// did, and how many it took.
func (b *byteBudget) tryAcquire(n int64) (int64, bool) {
	n = b.clamp(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.share(n) {
		return 0, false
	}
	b.used += n
	return n, true
}

// acquire takes clamp(n) bytes, waiting until they are free or ctx ends.
// It returns the bytes taken, to be passed to release.
func (b *byteBudget) acquire(ctx context.Context, n int64) (int64, error) {
	n = b.clamp(n)
	for {
		b.mu.Lock()
		if b.used+n <= b.share(n) {
			b.used += n
			b.mu.Unlock()
			return n, nil
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// release gives back n bytes that acquire or tryAcquire took.
func (b *byteBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	if b.used < 0 {
		b.mu.Unlock()
		panic("service: byte budget released more than it lent")
	}
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

// congested reports whether large requests have filled their share.
func (b *byteBudget) congested() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used+smallBytes > b.limit-b.reserve
}

// inUse returns the bytes currently taken.
func (b *byteBudget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// readBuf is the tile buffer of one read call or stream and the bytes of
// the read budget it holds for that buffer. A stream reads every tile into
// the same buffer, so it holds budget for the largest tile it has read,
// until it lets go of the buffer. It is not safe for concurrent use.
type readBuf struct {
	budget *byteBudget
	buf    []byte
	held   int64
}

// read reads a tile with read (into the buffer when it fits) and holds
// budget for the array the tile uses. When the budget has no room, it lets
// go of the tile, the buffer and the budget it held, waits for room until
// ctx ends, and reads again: a call that waits holds nothing.
//
// The size of a tile is known only once it is read. While large tiles
// fill their share, readers that hold nothing read one at a time (the
// probe), so the reads the budget then turns away hold one tile at a time,
// not one per waiting caller.
func (r *readBuf) read(ctx context.Context, read func(buf []byte) (storage.Tile, error)) (storage.Tile, error) {
	probing := false
	unprobe := func() {
		if probing {
			probing = false
			<-r.budget.probe
		}
	}
	defer unprobe()
	if r.held == 0 && r.budget.congested() {
		select {
		case r.budget.probe <- struct{}{}:
			probing = true
		case <-ctx.Done():
			return storage.Tile{}, ctx.Err()
		}
	}
	t, err := read(r.buf)
	if err != nil {
		return storage.Tile{}, err
	}
	need := int64(cap(t.Value))
	if need > r.held {
		n, ok := r.budget.tryAcquire(need - r.held)
		unprobe()
		if ok && r.held+n >= r.budget.clamp(need) {
			r.held += n
		} else {
			if ok {
				r.budget.release(n)
			}
			t = storage.Tile{}
			r.release()
			if r.held, err = r.budget.acquire(ctx, need); err != nil {
				return storage.Tile{}, err
			}
			if t, err = read(nil); err != nil {
				return storage.Tile{}, err
			}
		}
	}
	r.buf = t.Value[:0]
	return t, nil
}

// release gives back the budget and lets go of the buffer.
func (r *readBuf) release() {
	r.budget.release(r.held)
	r.held = 0
	r.buf = nil
}
