package pyramid

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/xcheng85/go-ldm/storage"
)

// Procedural is a synthetic volume of any shape and data type whose voxels
// are a pure function of their position: a structured phantom (an
// ellipsoidal body with a gradient along z, a bone-like shell around a
// textured inner region, dark ventricles, a region with a gradient along x,
// a rod along z, a cube and two beads) scaled to the shape, so that
// `ldm import --demo --shape XxYxZ` can import a volume of any size without
// a source file, and tests can check any voxel at any level of detail
// without storing the volume.
//
// Every structure is defined in integer arithmetic on voxel indices, so
// Intensity, Voxel and Value give the same numbers on every machine and
// exactly the bytes Read produces.
//
// A Procedural is immutable after NewProcedural: its methods are safe for
// concurrent use. Its Reader is not (each Reader is one sequential pass).
type Procedural struct {
	shape storage.Shape
	dt    storage.DataType
	parts []part
}

// The intensity of a structure is in 0..255 (see Procedural.Intensity);
// ProceduralValue maps it to the data type.
const (
	procFix  = 16      // coordinates are fixed point: 1<<procFix is half the volume's extent
	procOne  = 1 << 20 // the ellipsoid test's fixed-point 1
	procMaxA = 1 << 20 // the largest axis Procedural accepts (the fixed-point maths needs it)
)

// fillKind says how a structure paints its voxels.
type fillKind int

const (
	fillConst  fillKind = iota // value
	fillZRamp                  // lo + (hi-lo)*z/Z, one value per plane
	fillXRamp                  // lo + (hi-lo)*x/X
	fillStripe                 // lo + amp * triangle((x + 3y + 5z) mod 16)
)

// part is one structure: an axis-aligned ellipsoid (or, with rz == 0, a
// cylinder along z) clipped to a z range, or a box; later parts paint over
// earlier ones.
type part struct {
	box        bool
	cx, cy, cz int64 // centre, fixed point (see fix)
	rx, ry, rz int64 // semi-axes, fixed point; rz == 0: no limit along z
	// z range (fixed point, inclusive) for cylinders; boxes use all three.
	x0, x1, y0, y1, z0, z1 int64
	fill                   fillKind
	lo, hi                 int64
	// tab is the row table of fillXRamp and fillStripe (indexed by x, and
	// by x + phase for stripes).
	tab []uint8
}

// NewProcedural returns the procedural phantom of the given shape and data
// type. It fails with an error wrapping storage.ErrInvalidArgument for a
// zero axis, an axis above 2^20 voxels or an unknown data type.
func NewProcedural(shape storage.Shape, dt storage.DataType) (*Procedural, error) {
	if shape.X == 0 || shape.Y == 0 || shape.Z == 0 || shape.X > procMaxA || shape.Y > procMaxA || shape.Z > procMaxA {
		return nil, fmt.Errorf("procedural volume %dx%dx%d: %w: every axis must be 1..%d voxels", shape.X, shape.Y, shape.Z, storage.ErrInvalidArgument, procMaxA)
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("procedural volume: %w: unknown data type %v", storage.ErrInvalidArgument, dt)
	}
	p := &Procedural{shape: shape, dt: dt}
	f := func(v float64) int64 { return int64(math.Round(v * (1 << procFix))) }
	ell := func(cx, cy, cz, rx, ry, rz float64, fill fillKind, lo, hi int64) part {
		return part{cx: f(cx), cy: f(cy), cz: f(cz), rx: f(rx), ry: f(ry), rz: f(rz), fill: fill, lo: lo, hi: hi}
	}
	cyl := func(cx, cy, r, z0, z1 float64, v int64) part {
		return part{cx: f(cx), cy: f(cy), rx: f(r), ry: f(r), z0: f(z0), z1: f(z1), fill: fillConst, lo: v}
	}
	box := func(x0, x1, y0, y1, z0, z1 float64, v int64) part {
		return part{box: true, x0: f(x0), x1: f(x1), y0: f(y0), y1: f(y1), z0: f(z0), z1: f(z1), fill: fillConst, lo: v}
	}
	p.parts = []part{
		ell(0, 0, 0, 0.94, 0.82, 0.96, fillZRamp, 40, 80),          // body, brighter towards +z
		ell(0, 0, 0.02, 0.86, 0.74, 0.88, fillConst, 200, 0),       // bone-like shell ...
		ell(0, 0, 0.02, 0.80, 0.68, 0.82, fillStripe, 96, 6),       // ... around a textured inside
		ell(0, -0.3, 0.3, 0.32, 0.16, 0.22, fillXRamp, 110, 170),   // a region with a gradient along x
		ell(-0.2, 0.1, 0.05, 0.09, 0.26, 0.16, fillConst, 30, 0),   // ventricles
		ell(0.2, 0.1, 0.05, 0.09, 0.26, 0.16, fillConst, 30, 0),    //
		cyl(0.48, 0.32, 0.07, -0.6, 0.6, 230),                      // rod along z
		box(-0.62, -0.38, -0.62, -0.38, -0.62, -0.38, 255),         // cube
		ell(0.3, -0.5, -0.5, 0.09, 0.09, 0.09, fillConst, 250, 0),  // bright bead
		ell(-0.42, 0.42, -0.3, 0.11, 0.11, 0.11, fillConst, 12, 0), // dark bead
	}
	for i := range p.parts {
		q := &p.parts[i]
		switch q.fill {
		case fillXRamp:
			q.tab = make([]uint8, shape.X)
			for x := range q.tab {
				q.tab[x] = uint8(q.lo + (q.hi-q.lo)*int64(x)/int64(shape.X))
			}
		case fillStripe:
			q.tab = make([]uint8, int(shape.X)+16)
			for i := range q.tab {
				q.tab[i] = uint8(q.lo + q.hi*triangle(int64(i)))
			}
		}
	}
	return p, nil
}

// ProceduralMeta returns the metadata of a procedural volume named name:
// the shape and data type given, 64^3 bricks, levels of detail until the
// volume fits in one brick (LevelsToFit), spacing 1, and a source label.
func ProceduralMeta(name string, shape storage.Shape, dt storage.DataType) storage.VolumeMeta {
	return storage.VolumeMeta{
		Name:       name,
		Shape:      shape,
		DataType:   dt,
		BrickShape: storage.DefaultBrickShape,
		LODCount:   LevelsToFit(shape, storage.DefaultBrickShape),
		Spacing:    []float64{1, 1, 1},
		Labels:     map[string]string{"source": "go-ldm procedural phantom"},
	}
}

// Shape returns the volume's shape at level 0.
func (p *Procedural) Shape() storage.Shape { return p.shape }

// DataType returns the volume's data type.
func (p *Procedural) DataType() storage.DataType { return p.dt }

// triangle is a triangle wave of period 16 with values 0..8.
func triangle(i int64) int64 {
	i &= 15
	if i < 8 {
		return i
	}
	return 16 - i
}

// fix returns voxel index i's centre on an axis of n voxels in fixed point:
// -1<<procFix at the volume's lower face, 1<<procFix at its upper face.
func fix(i, n int64) int64 { return ((2*i+1)<<procFix)/n - 1<<procFix }

// term is the ellipsoid test's contribution of one axis: floor(d^2/r^2 in
// fixed point), or more than procOne when |d| > r.
func term(d, r int64) int64 {
	if d < 0 {
		d = -d
	}
	if d > r {
		return procOne + 1
	}
	return (d * d << 20) / (r * r) // d, r <= 2^17: d*d<<20 < 2^55
}

// rowRest returns, for the row (y, z), how much of the ellipsoid test is
// left for the x term (negative: the row misses the part), and whether the
// row is inside a box part's y and z range.
func (q *part) rowRest(fy, fz int64) int64 {
	if q.box {
		if fy < q.y0 || fy > q.y1 || fz < q.z0 || fz > q.z1 {
			return -1
		}
		return 0
	}
	rest := procOne - term(fy-q.cy, q.ry)
	if q.rz == 0 {
		if fz < q.z0 || fz > q.z1 {
			return -1
		}
	} else {
		rest -= term(fz-q.cz, q.rz)
	}
	return rest
}

// insideX reports whether x (fixed point fx) is inside the part on a row
// whose rowRest is rest >= 0.
func (q *part) insideX(fx, rest int64) bool {
	if q.box {
		return fx >= q.x0 && fx <= q.x1
	}
	return term(fx-q.cx, q.rx) <= rest
}

// value returns the part's intensity at (x, y, z).
func (q *part) value(x, y, z int64, s storage.Shape) uint8 {
	switch q.fill {
	case fillZRamp:
		return uint8(q.lo + (q.hi-q.lo)*z/int64(s.Z))
	case fillXRamp:
		return q.tab[x]
	case fillStripe:
		return q.tab[x+(3*y+5*z)&15]
	}
	return uint8(q.lo)
}

// Intensity returns the phantom's structure intensity (0..255) at level-0
// voxel (x, y, z); voxels outside the volume are 0. Voxel maps it to the
// data type.
func (p *Procedural) Intensity(x, y, z int) uint8 {
	s := p.shape
	if x < 0 || y < 0 || z < 0 || x >= int(s.X) || y >= int(s.Y) || z >= int(s.Z) {
		return 0
	}
	fx, fy, fz := fix(int64(x), int64(s.X)), fix(int64(y), int64(s.Y)), fix(int64(z), int64(s.Z))
	for i := len(p.parts) - 1; i >= 0; i-- {
		q := &p.parts[i]
		if rest := q.rowRest(fy, fz); rest >= 0 && q.insideX(fx, rest) {
			return q.value(int64(x), int64(y), int64(z), s)
		}
	}
	return 0
}

// ProceduralValue maps an intensity (0..255) to a voxel value of data type
// dt: uint8 as is, uint16 v*257, int16 v*16-1024 (a CT-like range),
// uint32 v*0x01010101, float32 float32(v)/255.
func ProceduralValue(dt storage.DataType, v uint8) float64 {
	switch dt {
	case storage.Uint16:
		return float64(uint16(v) * 257)
	case storage.Int16:
		return float64(int16(v)*16 - 1024)
	case storage.Uint32:
		return float64(uint32(v) * 0x01010101)
	case storage.Float32:
		return float64(float32(v) / 255)
	}
	return float64(v)
}

// Voxel returns the level-0 value at (x, y, z) in the volume's data type,
// as a float64 (exact for every type); outside the volume it is the value
// of intensity 0.
func (p *Procedural) Voxel(x, y, z int) float64 {
	return ProceduralValue(p.dt, p.Intensity(x, y, z))
}

// Value returns the voxel (x, y, z) of level lod as the pipeline stores it:
// level 0 is Voxel; a voxel of level l is the mean of the 2x2x2 voxels of
// level l-1 below it that exist (the level's shape is ceil(shape/2^l)),
// summed z-major then y then x, and stored in the data type as Downsample
// does (rounded to nearest, halves away from zero, for integer types). It
// costs up to 8^lod evaluations of Voxel. Coordinates outside the level
// return 0 and false.
func (p *Procedural) Value(lod uint32, x, y, z int) (float64, bool) {
	meta := storage.VolumeMeta{Shape: p.shape}
	s := meta.LODShape(lod)
	if x < 0 || y < 0 || z < 0 || x >= int(s.X) || y >= int(s.Y) || z >= int(s.Z) {
		return 0, false
	}
	if lod == 0 {
		return p.Voxel(x, y, z), true
	}
	var sum float64
	n := 0
	for dz := range 2 {
		for dy := range 2 {
			for dx := range 2 {
				if v, ok := p.Value(lod-1, 2*x+dx, 2*y+dy, 2*z+dz); ok {
					sum += v
					n++
				}
			}
		}
	}
	return Stored(p.dt, sum/float64(n)), true
}

// Stored returns v as data type dt stores it, read back as a float64:
// rounded to nearest (halves away from zero) and converted for integer
// types, converted to float32 for float32. It is the conversion Downsample
// applies to each mean.
func Stored(dt storage.DataType, v float64) float64 {
	switch dt {
	case storage.Uint8:
		return float64(uint8(math.Round(v)))
	case storage.Uint16:
		return float64(uint16(math.Round(v)))
	case storage.Int16:
		return float64(int16(math.Round(v)))
	case storage.Uint32:
		return float64(uint32(math.Round(v)))
	case storage.Float32:
		return float64(float32(v))
	}
	panic(fmt.Sprintf("pyramid: unknown data type %v", dt))
}

// Row writes the intensities of level-0 row (y, z) into dst, which must
// hold Shape().X bytes. It paints the structures span by span, so its cost
// is a few memory fills per row.
func (p *Procedural) Row(dst []uint8, y, z int) {
	s := p.shape
	nx := int64(s.X)
	dst = dst[:nx]
	fy, fz := fix(int64(y), int64(s.Y)), fix(int64(z), int64(s.Z))
	for i := range p.parts {
		q := &p.parts[i]
		rest := q.rowRest(fy, fz)
		a, b, ok := int64(0), int64(0), rest >= 0
		if ok {
			a, b, ok = q.span(rest, nx)
		}
		if i == 0 {
			// The background, around the body (which paints its span).
			if !ok {
				clear(dst)
				continue
			}
			clear(dst[:a])
			clear(dst[b:])
		}
		if !ok {
			continue
		}
		switch q.fill {
		case fillXRamp:
			copy(dst[a:b], q.tab[a:b])
		case fillStripe:
			ph := (3*int64(y) + 5*int64(z)) & 15
			copy(dst[a:b], q.tab[a+ph:b+ph])
		default:
			fill(dst[a:b], q.value(0, int64(y), int64(z), s))
		}
	}
}

// fill sets every byte of d to v, doubling copies for long runs.
func fill(d []byte, v uint8) {
	n := min(len(d), 64)
	for i := range d[:n] {
		d[i] = v
	}
	for n < len(d) {
		n += copy(d[n:], d[:n])
	}
}

// span returns the x range [a, b) of the row inside the part, whose
// rowRest is rest >= 0.
func (q *part) span(rest, nx int64) (int64, int64, bool) {
	in := func(x int64) bool { return q.insideX(fix(x, nx), rest) }
	// The voxel nearest the centre (boxes: nearest the middle of the box).
	c := q.cx
	if q.box {
		c = (q.x0 + q.x1) / 2
	}
	xc := ((c+1<<procFix)*nx>>procFix - 1) / 2
	xin := int64(-1)
	for d := int64(0); d <= 2 && xin < 0; d++ {
		for _, x := range [2]int64{xc - d, xc + d} {
			if x >= 0 && x < nx && in(x) {
				xin = x
				break
			}
		}
	}
	if xin < 0 {
		return 0, 0, false
	}
	// Half-width estimate, then exact steps to the boundary.
	var hw int64
	if q.box {
		hw = (q.x1 - q.x0) / 2
	} else {
		hw = int64(math.Sqrt(float64(rest)/procOne) * float64(q.rx))
	}
	edge := func(e int64, dir int64) int64 {
		lim := nx - 1
		if dir < 0 {
			lim = 0
		}
		if (dir > 0 && e > lim) || (dir < 0 && e < lim) {
			e = lim
		}
		if (dir > 0 && e < xin) || (dir < 0 && e > xin) {
			e = xin
		}
		if in(e) {
			for e != lim && in(e+dir) {
				e += dir
			}
			return e
		}
		for !in(e) {
			e -= dir
		}
		return e
	}
	scale := func(f int64) int64 { return ((f+1<<procFix)*nx>>procFix - 1) / 2 }
	b := edge(scale(c+hw), 1)
	a := edge(scale(c-hw), -1)
	return a, b + 1, true
}

// Fill writes level-0 voxels, in the volume's data type, little-endian, x
// fastest, into dst, starting at row (y, z) and continuing row by row (and
// plane by plane). len(dst) must be a multiple of the row's bytes
// (Shape().X times the type's size) and stay within the volume.
func (p *Procedural) Fill(dst []byte, y, z int) {
	nx := int(p.shape.X)
	vs := p.dt.Size()
	rb := nx * vs
	var row []uint8
	if vs != 1 {
		row = make([]uint8, nx)
	}
	for off := 0; off+rb <= len(dst); off += rb {
		if vs == 1 {
			p.Row(dst[off:off+rb], y, z)
		} else {
			p.Row(row, y, z)
			putIntensities(dst[off:off+rb], row, p.dt)
		}
		if y++; y == int(p.shape.Y) {
			y, z = 0, z+1
		}
	}
}

// putIntensities writes the values of intensities src in data type dt.
func putIntensities(dst []byte, src []uint8, dt storage.DataType) {
	switch dt {
	case storage.Uint16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], uint16(v)*257)
		}
	case storage.Int16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], uint16(int16(v)*16-1024))
		}
	case storage.Uint32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], uint32(v)*0x01010101)
		}
	case storage.Float32:
		var lut [256]uint32
		for i := range lut {
			lut[i] = math.Float32bits(float32(i) / 255)
		}
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], lut[v])
		}
	default:
		copy(dst, src)
	}
}

// Reader returns the volume's level-0 voxels as one sequential stream, in
// the layout Cut and Build read: little-endian, x fastest, then y, then z,
// Shape().X*Y*Z voxels, then io.EOF. Reads of whole rows are generated in
// place; others go through a row buffer.
func (p *Procedural) Reader() io.Reader {
	return &procReader{p: p, rb: int(p.shape.X) * p.dt.Size()}
}

type procReader struct {
	p    *Procedural
	rb   int
	y, z int
	part []byte // the rest of a row generated for a short read
}

func (r *procReader) Read(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if len(r.part) > 0 {
			c := copy(b, r.part)
			r.part = r.part[c:]
			b = b[c:]
			n += c
			continue
		}
		if r.z >= int(r.p.shape.Z) {
			break
		}
		rows := len(b) / r.rb
		if left := (int(r.p.shape.Z)-r.z)*int(r.p.shape.Y) - r.y; rows > left {
			rows = left
		}
		if rows == 0 {
			buf := make([]byte, r.rb)
			r.p.Fill(buf, r.y, r.z)
			r.part = buf
			r.advance(1)
			continue
		}
		r.p.Fill(b[:rows*r.rb], r.y, r.z)
		r.advance(rows)
		b = b[rows*r.rb:]
		n += rows * r.rb
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *procReader) advance(rows int) {
	ny := int(r.p.shape.Y)
	t := r.y + rows
	r.z += t / ny
	r.y = t % ny
}
