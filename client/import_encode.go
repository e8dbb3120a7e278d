package client

import (
	"runtime"
	"sync"

	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/internal/zstdcodec"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// importJobs is how many bricks at most are between the pyramid builder
// and the sender (queued, being encoded, or encoded and waiting to be
// sent), whatever their size; the byte budget (importQueue raw bricks)
// usually binds first.
const importJobs = 4 * importQueue

// encodeJob is one brick on its way from the builder to the sender. A
// worker fills value and crc, then closes ready; the sender reads jobs in
// the builder's order.
type encodeJob struct {
	key   storage.BrickKey
	raw   []byte // the builder's buffer; nil once recycled
	value []byte // the bytes to send: raw, or one zstd frame
	buf   *[]byte
	crc   uint32
	ready chan struct{}
}

// encoder is the stage between the pyramid builder and the sender: workers
// (one per core) compress the bricks of a zstd volume, or only checksum
// those of a raw one, while the builder cuts the next ones and the sender
// sends earlier ones. What waits in the stage is bounded by a byte budget
// that counts every brick as it is held: raw until it is compressed, then
// its frame until it is sent.
type encoder struct {
	b          *pyramid.Builder
	zstd       bool
	level      int
	brickBytes int64
	budget     *byteBudget
	work       chan *encodeJob
	order      chan *encodeJob
	frames     sync.Pool // *[]byte, buffers for frames
	wg         sync.WaitGroup
}

func newEncoder(b *pyramid.Builder, codec storage.Codec) *encoder {
	e := &encoder{
		b:          b,
		zstd:       codec.Kind == storage.CodecZstd,
		level:      codec.Level,
		brickBytes: int64(b.BrickBytes()),
		work:       make(chan *encodeJob, importJobs),
		order:      make(chan *encodeJob, importJobs),
	}
	e.budget = newByteBudget(importQueue * e.brickBytes)
	for range runtime.GOMAXPROCS(0) {
		e.wg.Add(1)
		go e.run()
	}
	return e
}

// put queues a brick the builder cut, in order. It blocks while the stage
// holds its budget, and returns false once the stage is stopped.
func (e *encoder) put(br pyramid.Brick, stop <-chan struct{}) bool {
	if !e.budget.acquire(e.brickBytes) {
		return false
	}
	j := &encodeJob{key: br.Key, raw: br.Value, ready: make(chan struct{})}
	select {
	case e.order <- j:
	case <-stop:
		return false
	}
	e.work <- j // never blocks for long: work has order's capacity and workers drain it
	return true
}

// close ends the input: after the builder returns.
func (e *encoder) close() {
	close(e.order)
	close(e.work)
}

// stop releases a builder waiting for budget; the workers finish the jobs
// queued.
func (e *encoder) stop() { e.budget.close() }

// wait waits for the workers to end (after close).
func (e *encoder) wait() { e.wg.Wait() }

func (e *encoder) run() {
	defer e.wg.Done()
	for j := range e.work {
		if e.zstd {
			buf, _ := e.frames.Get().(*[]byte)
			if buf == nil {
				buf = new([]byte)
			}
			*buf = zstdcodec.Encode((*buf)[:0], j.raw, e.level)
			j.value, j.buf = *buf, buf
			e.b.Recycle(j.raw)
			j.raw = nil
			// The job now holds its frame instead of the raw brick (a frame
			// of incompressible voxels is a little larger).
			e.budget.release(e.brickBytes - int64(len(j.value)))
		} else {
			j.value = j.raw
		}
		j.crc = storage.Checksum(j.value)
		close(j.ready)
	}
}

// tile returns the tile to send for an encoded job.
func (e *encoder) tile(j *encodeJob) *ldmv1.Tile {
	t := &ldmv1.Tile{Value: j.value, Crc32C: j.crc}
	if e.zstd {
		t.Codec = ldmv1.Codec_CODEC_ZSTD
	}
	return t
}

// done gives back what a sent (marshalled) or dropped job holds.
func (e *encoder) done(j *encodeJob) {
	held := int64(len(j.value))
	if j.raw != nil {
		e.b.Recycle(j.raw)
		held = e.brickBytes
	}
	if j.buf != nil {
		*j.buf = (*j.buf)[:0]
		e.frames.Put(j.buf)
	}
	j.raw, j.value, j.buf = nil, nil, nil
	e.budget.release(held)
}

// byteBudget bounds the bytes the encode stage holds. Acquire waits for
// room (one acquisition larger than the whole budget gets it when nothing
// else is held); release may be negative (a frame larger than its brick).
type byteBudget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	limit  int64
	used   int64
	closed bool
}

func newByteBudget(limit int64) *byteBudget {
	b := &byteBudget{limit: limit}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *byteBudget) acquire(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed && b.used > 0 && b.used+n > b.limit {
		b.cond.Wait()
	}
	if b.closed {
		return false
	}
	b.used += n
	return true
}

func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

func (b *byteBudget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}

// sentLog is the FIFO of the sizes of bricks sent and not yet
// acknowledged (the server acknowledges in order), so progress can count
// the bytes sent of the bricks stored.
type sentLog struct {
	mu    sync.Mutex
	sizes []int64
	head  int
}

func (l *sentLog) push(n int64) {
	l.mu.Lock()
	if l.head > 1024 && l.head*2 > len(l.sizes) {
		l.sizes = append(l.sizes[:0], l.sizes[l.head:]...)
		l.head = 0
	}
	l.sizes = append(l.sizes, n)
	l.mu.Unlock()
}

func (l *sentLog) pop() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.sizes) {
		return 0
	}
	n := l.sizes[l.head]
	l.head++
	return n
}
