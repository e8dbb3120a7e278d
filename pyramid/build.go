package pyramid

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"

	"github.com/xcheng85/go-ldm/storage"
)

// DefaultReadAhead is how many bytes of planes a Builder may read and
// downsample beyond one brick row per level while earlier rows are still
// being cut (BuildOptions.ReadAhead).
const DefaultReadAhead = 16 << 20

// BuildOptions tunes a Builder. The zero value works.
type BuildOptions struct {
	// Skip, when not nil, is asked for every brick before it is cut; a
	// brick it reports true for is neither cut nor emitted (a resumed
	// import skips the bricks the volume holds). It is called from the
	// goroutine that calls emit.
	Skip func(storage.BrickKey) bool
	// ReadAhead bounds the plane bytes held beyond one brick row of every
	// level (see Builder.MemoryBound). Zero means DefaultReadAhead.
	ReadAhead int64
	// RecycledBricks is how many bricks given back with Recycle the
	// Builder keeps for reuse. Zero means 64.
	RecycledBricks int
}

// A Builder cuts a volume into the bricks of every level of detail in one
// sequential pass over its voxels, with memory bounded by one brick row
// (brick-depth z-planes) of every level plus ReadAhead, whatever the
// volume's depth or level count:
//
//   - a reader goroutine reads level 0 one z-plane at a time, in pieces of
//     brick-height rows (one piece per row of bricks), from an io.Reader:
//     a file, a gzip stream, a Procedural;
//   - a downsampling goroutine turns each pair of planes of a level into a
//     plane of the next (Downsample's means, bit for bit) and collects each
//     level's planes into brick rows;
//   - the goroutine that calls Build cuts each finished brick row into
//     bricks, row of bricks by row of bricks, and calls emit; the pieces of
//     planes a row of bricks used are reused for later planes at once.
//
// Pieces of planes come from one budget (MemoryBound); the reader waits
// when it is spent, so the pipeline's memory does not grow with the volume.
// Coarser bricks are emitted as soon as their brick row is complete, so a
// level-l brick row follows the 2^l level-0 brick rows it is made of.
//
// A Builder may run Build more than once, one at a time; Recycle is safe
// for concurrent use.
type Builder struct {
	meta storage.VolumeMeta
	opts BuildOptions
	free chan []byte // bricks given back with Recycle
}

// NewBuilder returns a Builder for volumes described by meta (shape, data
// type, brick shape, LOD count; defaults as storage.VolumeMeta.Normalize).
// It fails with Normalize's errors (storage.ErrInvalidName,
// storage.ErrInvalidArgument).
func NewBuilder(meta storage.VolumeMeta, opts BuildOptions) (*Builder, error) {
	if err := meta.Normalize(); err != nil {
		return nil, err
	}
	if opts.ReadAhead <= 0 {
		opts.ReadAhead = DefaultReadAhead
	}
	if opts.RecycledBricks <= 0 {
		opts.RecycledBricks = 64
	}
	return &Builder{meta: meta, opts: opts, free: make(chan []byte, opts.RecycledBricks)}, nil
}

// Meta returns the normalized metadata the Builder cuts for.
func (b *Builder) Meta() storage.VolumeMeta { return b.meta }

// BrickBytes returns the size of one brick.
func (b *Builder) BrickBytes() int {
	s := b.meta.BrickShape
	return int(s.X) * int(s.Y) * int(s.Z) * b.meta.DataType.Size()
}

// MemoryBound returns the most bytes of planes a Build holds at once: a
// brick row (brick-depth z-planes) of every level (two when the brick
// depth is odd: a row whose last plane waits for its pair), two level-0
// planes being read, and ReadAhead. For 2048x2048 uint8 planes in 64^3
// bricks that is 256 MiB of level 0, 85 MiB of the coarser levels and
// 24 MiB more. Bricks are allocated on top of it, one at a time; what the
// receiver keeps of them is its own.
func (b *Builder) MemoryBound() int64 {
	var n int64
	rows := int64(b.meta.BrickShape.Z)
	if rows%2 == 1 {
		rows = 2*rows + 1
	}
	for l := range b.meta.LODCount {
		lv := newLevel(&b.meta, l)
		n += rows * int64(lv.bands) * int64(lv.chunk)
	}
	p0 := newLevel(&b.meta, 0)
	return n + 2*int64(p0.bands)*int64(p0.chunk) + b.opts.ReadAhead
}

// Recycle gives back the Value of a brick the receiver of emit is done
// with, so a later brick can reuse it. Recycling is optional; a value
// must not be used after it is recycled.
func (b *Builder) Recycle(value []byte) {
	if len(value) != b.BrickBytes() {
		return
	}
	select {
	case b.free <- value:
	default:
	}
}

// brick returns a brick buffer, zeroed when zero is set.
func (b *Builder) brick(zero bool) []byte {
	select {
	case v := <-b.free:
		if zero {
			clear(v)
		}
		return v
	default:
		return make([]byte, b.BrickBytes())
	}
}

// Build reads the volume's voxels from src (little-endian, x fastest, then
// y, then z: exactly shape.x*shape.y*shape.z voxels; src is read once,
// sequentially, and not past the volume's last byte) and calls emit for
// every brick of every level (BrickCount in all, less those Skip skips).
// emit is called from the calling goroutine; its error stops Build and is
// returned as is. A read error, or src ending early, stops Build after the
// bricks of the brick rows read whole are emitted, and is returned wrapped
// with the z-plane it happened in (io.ErrUnexpectedEOF for a short src).
func (b *Builder) Build(src io.Reader, emit func(Brick) error) error {
	m := &b.meta
	lods := int(m.LODCount)
	levels := make([]*level, lods)
	for l := range lods {
		levels[l] = newLevel(m, uint32(l))
	}
	bud := newBudget(b.MemoryBound())
	planes := make(chan plane, 1)
	slabs := make(chan *slab, 2)
	var readErr, downErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // reader
		defer wg.Done()
		defer close(planes)
		readErr = readPlanes(src, levels[0], bud, planes)
	}()
	go func() { // downsampler
		defer wg.Done()
		defer close(slabs)
		d := downsampler{levels: levels, bud: bud, bz: int(m.BrickShape.Z), out: slabs, dt: m.DataType}
		for p := range planes {
			if !d.push(0, p) {
				return
			}
		}
		if readErr == nil && levels[0].z < levels[0].sz {
			readErr = io.ErrUnexpectedEOF
		}
		if readErr != nil {
			downErr = fmt.Errorf("read z-plane %d of %d: %w", levels[0].z, levels[0].sz, readErr)
		}
	}()
	var err error
	for s := range slabs {
		if err == nil {
			if err = b.cut(s, levels[s.lod], bud, emit); err != nil {
				bud.close() // stop reading; the slabs still queued are dropped
			}
		}
		s.release(levels[s.lod], bud)
	}
	for range planes { // the reader may be waiting to hand over a plane
	}
	wg.Wait()
	if err == nil {
		err = downErr
	}
	return err
}

// Cut reads a raw volume described by meta (shape, data type, brick shape,
// LOD count; see storage.VolumeMeta.Normalize for defaults) from src and
// calls emit for every brick of every level, with a Builder: src is read
// once, front to back, through an io.SectionReader. src must hold exactly
// shape.x*shape.y*shape.z voxels. Cut fails with Normalize's error
// (storage.ErrInvalidName, storage.ErrInvalidArgument) for metadata
// Normalize rejects, and with a wrapped read error naming the z-plane;
// emit's error stops Cut and is returned as is. Cut calls emit from the
// calling goroutine, and the receiver owns every brick's Value.
func Cut(src io.ReaderAt, meta storage.VolumeMeta, emit func(Brick) error) error {
	b, err := NewBuilder(meta, BuildOptions{})
	if err != nil {
		return err
	}
	m := b.Meta()
	n := int64(m.Shape.X) * int64(m.Shape.Y) * int64(m.Shape.Z) * int64(m.DataType.Size())
	return b.Build(io.NewSectionReader(src, 0, n), emit)
}

// level is the geometry of one level of detail and the downsampler's state
// for it.
type level struct {
	lod        uint32
	sx, sy, sz int // shape
	rb         int // bytes of one row of voxels
	by         int // rows per chunk (the brick height)
	bands      int // chunks per plane
	chunk      int // bytes of one chunk (by rows)

	// downsampler state
	z       int   // planes received
	cur     *slab // the brick row being filled
	hold    *slab // a full brick row whose last plane waits for its pair
	pending plane // an even plane waiting for the next one
	vs      int   // voxel size
}

func newLevel(m *storage.VolumeMeta, lod uint32) *level {
	s := m.LODShape(lod)
	vs := m.DataType.Size()
	by := int(m.BrickShape.Y)
	lv := &level{lod: lod, sx: int(s.X), sy: int(s.Y), sz: int(s.Z), rb: int(s.X) * vs, by: by, vs: vs}
	lv.bands = (lv.sy + by - 1) / by
	lv.chunk = min(by, lv.sy) * lv.rb
	return lv
}

// plane is one z-plane of a level: chunk i holds rows [i*by, (i+1)*by).
type plane [][]byte

func (lv *level) row(p plane, y int) []byte {
	c := p[y/lv.by]
	o := (y % lv.by) * lv.rb
	return c[o : o+lv.rb]
}

// newPlane takes the chunks of a plane from the budget; nil if it closed.
func (lv *level) newPlane(bud *budget) plane {
	p := make(plane, lv.bands)
	for i := range p {
		c := lv.get(bud)
		if c == nil {
			lv.put(bud, p[:i]...)
			return nil
		}
		p[i] = c
	}
	return p
}

func (lv *level) get(bud *budget) []byte { return bud.get(lv.chunk) }

func (lv *level) put(bud *budget, cs ...[]byte) { bud.put(cs...) }

// slab is a brick row of one level: up to brick-depth planes starting at
// plane bz*brick.z.
type slab struct {
	lod    uint32
	bz     int
	planes []plane
}

// release gives the slab's remaining chunks back.
func (s *slab) release(lv *level, bud *budget) {
	for _, p := range s.planes {
		for i, c := range p {
			if c != nil {
				lv.put(bud, c)
				p[i] = nil
			}
		}
	}
}

// readPlanes reads level 0 plane by plane into chunks and sends the planes
// on out. It returns src's error (io.ErrUnexpectedEOF when src ends inside
// a plane, nil when it ends exactly between planes: the caller counts), or
// nil when the budget closed.
func readPlanes(src io.Reader, lv *level, bud *budget, out chan<- plane) error {
	for z := 0; z < lv.sz; z++ {
		p := lv.newPlane(bud)
		if p == nil {
			return nil
		}
		for i, c := range p {
			rows := min(lv.by, lv.sy-i*lv.by)
			if _, err := io.ReadFull(src, c[:rows*lv.rb]); err != nil {
				lv.put(bud, p...)
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the volume needs more planes
				}
				return err
			}
		}
		out <- p
	}
	return nil
}

// downsampler collects each level's planes into brick rows and makes the
// planes of the next level.
type downsampler struct {
	levels []*level
	bud    *budget
	bz     int
	dt     storage.DataType
	out    chan<- *slab
}

// push adds plane p as the next plane of level l; false when the budget
// closed.
func (d *downsampler) push(l int, p plane) bool {
	lv := d.levels[l]
	z := lv.z
	lv.z++
	if lv.cur == nil {
		lv.cur = &slab{lod: lv.lod, bz: z / d.bz}
	}
	lv.cur.planes = append(lv.cur.planes, p)
	if l+1 < len(d.levels) {
		var q plane
		switch {
		case z%2 == 1:
			q = d.down(l, lv.pending, p)
			lv.pending = nil
			if lv.hold != nil {
				d.out <- lv.hold
				lv.hold = nil
			}
		case z == lv.sz-1:
			q = d.down(l, p, nil)
		default:
			lv.pending = p
		}
		if lv.pending == nil && (q == nil || !d.push(l+1, q)) {
			return false // the budget closed
		}
	}
	if len(lv.cur.planes) == d.bz || z == lv.sz-1 {
		if lv.pending != nil {
			lv.hold = lv.cur
		} else {
			d.out <- lv.cur
		}
		lv.cur = nil
	}
	return true
}

// down returns the plane of level l+1 made of planes a and b (nil: a is
// the level's last plane) of level l; nil if the budget closed.
func (d *downsampler) down(l int, a, b plane) plane {
	lv, nx := d.levels[l], d.levels[l+1]
	q := nx.newPlane(d.bud)
	if q == nil {
		return nil
	}
	f := downRow(d.dt)
	var rows [4][]byte
	for y := range nx.sy {
		y0, y1 := 2*y, 2*y+1
		rows[0] = lv.row(a, y0)
		rows[1], rows[2], rows[3] = nil, nil, nil
		if y1 < lv.sy {
			rows[1] = lv.row(a, y1)
		}
		if b != nil {
			rows[2] = lv.row(b, y0)
			if y1 < lv.sy {
				rows[3] = lv.row(b, y1)
			}
		}
		f(nx.row(q, y), rows, lv.sx)
	}
	return q
}

// downRow returns the function that writes one row of the next level from
// up to four rows (z-major then y; nil where the row does not exist) of sx
// voxels: each voxel the mean of the 2x2x2 (fewer at edges) below it, as
// Downsample computes it.
func downRow(dt storage.DataType) func(dst []byte, rows [4][]byte, sx int) {
	switch dt {
	case storage.Uint8:
		return downU8
	case storage.Uint16:
		return downInt(2, func(b []byte) int64 { return int64(binary.LittleEndian.Uint16(b)) },
			func(b []byte, v int64) { binary.LittleEndian.PutUint16(b, uint16(v)) })
	case storage.Int16:
		return downInt(2, func(b []byte) int64 { return int64(int16(binary.LittleEndian.Uint16(b))) },
			func(b []byte, v int64) { binary.LittleEndian.PutUint16(b, uint16(int16(v))) })
	case storage.Uint32:
		return downInt(4, func(b []byte) int64 { return int64(binary.LittleEndian.Uint32(b)) },
			func(b []byte, v int64) { binary.LittleEndian.PutUint32(b, uint32(v)) })
	case storage.Float32:
		return downF32
	}
	panic(fmt.Sprintf("pyramid: unknown data type %v", dt))
}

// present compacts the rows that exist, keeping their order.
func present(rows [4][]byte) ([4][]byte, int) {
	var out [4][]byte
	n := 0
	for _, r := range rows {
		if r != nil {
			out[n] = r
			n++
		}
	}
	return out, n
}

// roundDiv returns s/n rounded to nearest, halves away from zero (as
// math.Round of the exact quotient), for n a power of two.
func roundDiv(s, n int64) int64 {
	if s >= 0 {
		return (s + n/2) / n
	}
	return -((-s + n/2) / n)
}

func downU8(dst []byte, rows [4][]byte, sx int) {
	rs, nr := present(rows)
	full := sx / 2
	switch nr {
	case 4:
		a, b, c, d := rs[0][:2*full], rs[1][:2*full], rs[2][:2*full], rs[3][:2*full]
		// Eight voxels of each row at a time: pairs summed in 16-bit
		// lanes (at most 8*255), rounded, and packed back to bytes.
		const lo = 0x00ff00ff00ff00ff
		x0 := 0
		for o := dst[:full]; len(o) >= 4 && len(a) >= 8 && len(b) >= 8 && len(c) >= 8 && len(d) >= 8; o = o[4:] {
			va, vb := binary.LittleEndian.Uint64(a), binary.LittleEndian.Uint64(b)
			vc, vd := binary.LittleEndian.Uint64(c), binary.LittleEndian.Uint64(d)
			s := va&lo + va>>8&lo + vb&lo + vb>>8&lo + vc&lo + vc>>8&lo + vd&lo + vd>>8&lo
			s = (s + 0x0004000400040004) >> 3 & lo
			binary.LittleEndian.PutUint32(o, uint32(s&0xff|s>>8&0xff00|s>>16&0xff0000|s>>24&0xff000000))
			a, b, c, d = a[8:], b[8:], c[8:], d[8:]
			x0 += 4
		}
		dst := dst[x0:full]
		for x := range dst {
			i := 2 * x
			s := uint(a[i]) + uint(a[i+1]) + uint(b[i]) + uint(b[i+1]) + uint(c[i]) + uint(c[i+1]) + uint(d[i]) + uint(d[i+1])
			dst[x] = byte((s + 4) >> 3)
		}
	case 2:
		a, b := rs[0][:2*full], rs[1][:2*full]
		dst := dst[:full]
		for x := range dst {
			i := 2 * x
			s := uint(a[i]) + uint(a[i+1]) + uint(b[i]) + uint(b[i+1])
			dst[x] = byte((s + 2) >> 2)
		}
	default:
		a := rs[0][:2*full]
		dst := dst[:full]
		for x := range dst {
			i := 2 * x
			dst[x] = byte((uint(a[i]) + uint(a[i+1]) + 1) >> 1)
		}
	}
	if sx%2 == 1 {
		var s int64
		for _, r := range rs[:nr] {
			s += int64(r[sx-1])
		}
		dst[full] = byte(roundDiv(s, int64(nr)))
	}
}

func downInt(vs int, get func([]byte) int64, put func([]byte, int64)) func([]byte, [4][]byte, int) {
	return func(dst []byte, rows [4][]byte, sx int) {
		rs, nr := present(rows)
		ox := (sx + 1) / 2
		for x := range ox {
			var s, n int64
			for _, r := range rs[:nr] {
				s += get(r[2*x*vs:])
				n++
				if 2*x+1 < sx {
					s += get(r[(2*x+1)*vs:])
					n++
				}
			}
			put(dst[x*vs:], roundDiv(s, n))
		}
	}
}

func downF32(dst []byte, rows [4][]byte, sx int) {
	rs, nr := present(rows)
	ox := (sx + 1) / 2
	get := func(r []byte, i int) float64 {
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(r[4*i:])))
	}
	for x := range ox {
		var s float64
		n := 0
		for _, r := range rs[:nr] {
			s += get(r, 2*x)
			n++
			if 2*x+1 < sx {
				s += get(r, 2*x+1)
				n++
			}
		}
		binary.LittleEndian.PutUint32(dst[4*x:], math.Float32bits(float32(s/float64(n))))
	}
}

// cut emits the bricks of slab s, one row of bricks (brick-height rows of
// every plane) at a time, and gives that row's chunks back after it.
func (b *Builder) cut(s *slab, lv *level, bud *budget, emit func(Brick) error) error {
	bs := b.meta.BrickShape
	bx, by, bz := int(bs.X), int(bs.Y), int(bs.Z)
	vs := lv.vs
	gx := (lv.sx + bx - 1) / bx
	for j := range lv.bands {
		rows := min(by, lv.sy-j*by)
		for i := range gx {
			key := storage.BrickKey{LOD: s.lod, X: uint32(i), Y: uint32(j), Z: uint32(s.bz)}
			if b.opts.Skip != nil && b.opts.Skip(key) {
				continue
			}
			x0 := i * bx
			n := min(bx, lv.sx-x0)
			edge := n < bx || rows < by || len(s.planes) < bz
			out := b.brick(edge)
			w := n * vs
			for k, p := range s.planes {
				c := p[j][x0*vs:]
				o := out[k*by*bx*vs:]
				if w == 64 && bx*vs == 64 { // rows of 64 uint8 or 32 uint16 voxels: copied inline
					for r := range rows {
						*(*[64]byte)(o[r*64:]) = *(*[64]byte)(c[r*lv.rb:])
					}
					continue
				}
				for r := range rows {
					copy(o[r*bx*vs:r*bx*vs+w], c[r*lv.rb:r*lv.rb+w])
				}
			}
			if err := emit(Brick{Key: key, Value: out}); err != nil {
				return err
			}
		}
		for _, p := range s.planes {
			lv.put(bud, p[j])
			p[j] = nil
		}
	}
	return nil
}

// budget owns the chunks of a Build: it allocates them, keeps those given
// back for reuse (by size: each level has its own), and bounds the bytes
// allocated, in use or kept, by limit. A chunk of a size none is kept of
// is allocated while the limit allows, else in place of kept chunks of
// other sizes (dropped for the collector), else when one is given back.
type budget struct {
	mu     sync.Mutex
	cond   *sync.Cond
	used   int64 // bytes allocated and not dropped
	limit  int64
	free   map[int][][]byte
	closed bool
}

func newBudget(limit int64) *budget {
	b := &budget{limit: limit, free: map[int][][]byte{}}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// get returns a chunk of n bytes; nil once the budget is closed.
func (b *budget) get(n int) []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.closed {
		if l := b.free[n]; len(l) > 0 {
			c := l[len(l)-1]
			b.free[n] = l[:len(l)-1]
			return c
		}
		if b.used+int64(n) <= b.limit || b.used == 0 {
			b.used += int64(n)
			return make([]byte, n)
		}
		if !b.dropOne(n) {
			b.cond.Wait()
		}
	}
	return nil
}

// dropOne forgets one kept chunk of a size other than n; false if there is
// none.
func (b *budget) dropOne(n int) bool {
	for size, l := range b.free {
		if size != n && len(l) > 0 {
			b.free[size] = l[:len(l)-1]
			b.used -= int64(size)
			return true
		}
	}
	return false
}

// put keeps chunks for reuse.
func (b *budget) put(cs ...[]byte) {
	if len(cs) == 0 {
		return
	}
	b.mu.Lock()
	for _, c := range cs {
		b.free[len(c)] = append(b.free[len(c)], c)
	}
	b.mu.Unlock()
	b.cond.Broadcast()
}

// close wakes every waiter; later gets fail.
func (b *budget) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cond.Broadcast()
}
