package volfile

// Where a file's voxels sit in the world. Every format here ends as a 4x4
// voxel-to-world affine in mm (Header.Transform) plus the name of its space
// (Header.Space):
//
//   - NIfTI-1: the sform (srow_x, srow_y, srow_z) when sform_code > 0, else
//     the qform (quatern_b/c/d, qoffset_x/y/z, pixdim[0] = qfac, pixdim[1..3])
//     when qform_code > 0, else diag(pixdim[1..3]) with no orientation
//     (the standard's "method 1", for ANALYZE 7.5 files). NIfTI's world is
//     RAS+ whatever the code says it is aligned to.
//   - NRRD: space directions (one vector per axis) and space origin in the
//     space field's coordinates: right-anterior-superior (RAS),
//     left-posterior-superior (LPS), left-anterior-superior (converted to
//     RAS by negating x), or scanner-xyz / 3D-right-handed /
//     3D-left-handed (scanner: no anatomical meaning). Without a space
//     field: diag(spacings) with no orientation.
//   - Raw: RawOptions.Orientation, Origin and Space.

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

const (
	offQformCode = 252
	offSformCode = 254
	offQuaternB  = 256 // quatern_b, quatern_c, quatern_d: float32
	offQoffsetX  = 268 // qoffset_x, qoffset_y, qoffset_z: float32
	offSrowX     = 280 // srow_x[4], srow_y[4], srow_z[4]: float32
)

// quaternTolerance is how far above 1 b^2+c^2+d^2 of a qform may be (float32
// rounding of a unit quaternion) before the quaternion is refused.
const quaternTolerance = 1e-5

// niftiTransform reads the NIfTI-1 header's orientation into h.Transform,
// h.Space and h.Spacing (the transform's column lengths).
func niftiTransform(h *Header, b []byte, bo binary.ByteOrder, qformCode, sformCode int16) error {
	const f = FormatNIfTI1
	f32 := func(off int) float64 { return float64(math.Float32frombits(bo.Uint32(b[off:]))) }
	switch {
	case sformCode > 0:
		rows := [3]string{"srow_x", "srow_y", "srow_z"}
		var a storage.Affine
		for r := 0; r < 3; r++ {
			for c := 0; c < 4; c++ {
				v := f32(offSrowX + 16*r + 4*c)
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return malformed(f, fmt.Sprintf("%s[%d]", rows[r], c), fmt.Sprint(v), "the sform must be finite (sform_code > 0 says it is used)")
				}
				a[4*r+c] = v
			}
		}
		a[15] = 1
		for c := 0; c < 3; c++ {
			if a.ColumnNorm(c) == 0 {
				return malformed(f, fmt.Sprintf("srow_x[%d], srow_y[%d], srow_z[%d]", c, c, c), "0, 0, 0",
					fmt.Sprintf("voxel axis %d has no direction: the sform must map each axis to a non-zero vector", c))
			}
		}
		if err := storage.CheckAffine("sform", a); err != nil {
			return malformed(f, "srow_x, srow_y, srow_z", "a singular matrix", "the sform's three axes must not be parallel")
		}
		h.Transform, h.Space = a, storage.SpaceRAS
	case qformCode > 0:
		qb, qc, qd := f32(offQuaternB), f32(offQuaternB+4), f32(offQuaternB+8)
		for i, v := range []float64{qb, qc, qd} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return malformed(f, "quatern_"+string(rune('b'+i)), fmt.Sprint(v), "the qform quaternion must be finite (qform_code > 0 says it is used)")
			}
		}
		var off [3]float64
		for i := range off {
			off[i] = f32(offQoffsetX + 4*i)
			if math.IsNaN(off[i]) || math.IsInf(off[i], 0) {
				return malformed(f, "qoffset_"+string(rune('x'+i)), fmt.Sprint(off[i]), "the qform offset must be finite")
			}
		}
		for i := 1; i <= 3; i++ {
			if v := f32(offPixdim + 4*i); math.IsNaN(v) || math.IsInf(v, 0) {
				return malformed(f, fmt.Sprintf("pixdim[%d]", i), fmt.Sprint(v), "the qform scales axis by pixdim: it must be finite")
			}
		}
		n := qb*qb + qc*qc + qd*qd
		if n > 1+quaternTolerance {
			return malformed(f, "quatern_b, quatern_c, quatern_d", fmt.Sprintf("%v, %v, %v", qb, qc, qd),
				fmt.Sprintf("b^2+c^2+d^2 = %v exceeds 1: not a unit quaternion", n))
		}
		var qa float64
		if a := 1 - n; a < 1e-7 {
			// A 180 degree rotation (a = 0) stored with float32 rounding:
			// normalise (b, c, d), as nifti1_io does.
			s := 1 / math.Sqrt(n)
			qb, qc, qd = qb*s, qc*s, qd*s
		} else {
			qa = math.Sqrt(a)
		}
		// qfac is pixdim[0]: -1 flips the third axis; any other value means
		// 1, as the standard says.
		qfac := 1.0
		if f32(offPixdim) == -1 {
			qfac = -1
		}
		r := [9]float64{
			qa*qa + qb*qb - qc*qc - qd*qd, 2 * (qb*qc - qa*qd), 2 * (qb*qd + qa*qc),
			2 * (qb*qc + qa*qd), qa*qa + qc*qc - qb*qb - qd*qd, 2 * (qc*qd - qa*qb),
			2 * (qb*qd - qa*qc), 2 * (qc*qd + qa*qb), qa*qa + qd*qd - qc*qc - qb*qb,
		}
		scale := [3]float64{h.Spacing[0], h.Spacing[1], h.Spacing[2] * qfac}
		var a storage.Affine
		for row := 0; row < 3; row++ {
			for c := 0; c < 3; c++ {
				a[4*row+c] = r[3*row+c] * scale[c]
			}
			a[4*row+3] = off[row]
		}
		a[15] = 1
		h.Transform, h.Space = a, storage.SpaceRAS
	default:
		h.Transform, h.Space = storage.DiagonalAffine(h.Spacing), storage.SpaceUnspecified
		return nil
	}
	for c := 0; c < 3; c++ {
		h.Spacing[c] = h.Transform.ColumnNorm(c)
	}
	return nil
}

// nrrdSpaces maps NRRD space names (lower case) to a store space and the
// sign applied to each world axis to reach it.
var nrrdSpaces = map[string]struct {
	space storage.Space
	sign  [3]float64
}{
	"right-anterior-superior": {storage.SpaceRAS, [3]float64{1, 1, 1}},
	"ras":                     {storage.SpaceRAS, [3]float64{1, 1, 1}},
	"left-anterior-superior":  {storage.SpaceRAS, [3]float64{-1, 1, 1}},
	"las":                     {storage.SpaceRAS, [3]float64{-1, 1, 1}},
	"left-posterior-superior": {storage.SpaceLPS, [3]float64{1, 1, 1}},
	"lps":                     {storage.SpaceLPS, [3]float64{1, 1, 1}},
	"scanner-xyz":             {storage.SpaceScanner, [3]float64{1, 1, 1}},
	"3d-right-handed":         {storage.SpaceScanner, [3]float64{1, 1, 1}},
	"3d-left-handed":          {storage.SpaceScanner, [3]float64{1, 1, 1}},
}

// nrrdTransform reads the NRRD space fields into h.Transform, h.Space and
// h.Spacing. dim is the number of axes.
func nrrdTransform(h *Header, fields map[string]string, dim int) error {
	const f = FormatNRRD
	name, hasSpace := fields["space"]
	sd, hasDim := fields["space dimension"]
	if !hasSpace && !hasDim {
		h.Transform, h.Space = storage.DiagonalAffine(h.Spacing), storage.SpaceUnspecified
		return nil
	}
	sp, ok := nrrdSpaces[strings.ToLower(name)]
	if hasSpace {
		if !ok {
			return unsupported(f, "space", strconv.Quote(name),
				"supported: right-anterior-superior (RAS), left-anterior-superior (LAS), left-posterior-superior (LPS), scanner-xyz, 3D-right-handed, 3D-left-handed")
		}
		if hasDim && sd != "3" {
			return malformed(f, "space dimension", strconv.Quote(sd), "want 3 for space "+name)
		}
	} else {
		if sd != "3" {
			return unsupported(f, "space dimension", strconv.Quote(sd), "supported: 3")
		}
		sp.space, sp.sign = storage.SpaceScanner, [3]float64{1, 1, 1}
	}
	if u, ok := fields["space units"]; ok {
		for _, unit := range strings.Fields(u) {
			if strings.Trim(unit, `"`) != "mm" {
				return unsupported(f, "space units", strconv.Quote(u), `supported: "mm" for every axis`)
			}
		}
	}
	a := storage.DiagonalAffine(h.Spacing)
	if s, ok := fields["space directions"]; ok {
		vecs, err := parseDirections(s)
		if err != nil {
			return malformed(f, "space directions", strconv.Quote(s), err.Error())
		}
		if len(vecs) != dim {
			return malformed(f, "space directions", strconv.Quote(s), fmt.Sprintf("want %d entries (dimension)", dim))
		}
		for i := 0; i < dim; i++ {
			v := vecs[i]
			field := fmt.Sprintf("space directions[%d]", i)
			if i == 3 {
				if v != nil {
					return unsupported(f, field, fmt.Sprint(v), "the fourth (time) axis must be none")
				}
				continue
			}
			if v == nil {
				return malformed(f, field, "none", "a spatial axis needs a direction vector")
			}
			if len(v) != 3 {
				return malformed(f, field, fmt.Sprint(v), "want 3 components (space dimension)")
			}
			zero := true
			for k, c := range v {
				if math.IsNaN(c) || math.IsInf(c, 0) {
					return malformed(f, field, fmt.Sprint(v), "components must be finite")
				}
				zero = zero && c == 0
				a[4*k+i] = c
			}
			if zero {
				return malformed(f, field, fmt.Sprint(v), "a zero vector gives the axis no direction")
			}
		}
	}
	if s, ok := fields["space origin"]; ok {
		vecs, err := parseDirections(s)
		if err != nil || len(vecs) != 1 || len(vecs[0]) != 3 {
			return malformed(f, "space origin", strconv.Quote(s), "want (x,y,z)")
		}
		for k, c := range vecs[0] {
			if math.IsNaN(c) || math.IsInf(c, 0) {
				return malformed(f, "space origin", strconv.Quote(s), "components must be finite")
			}
			a[4*k+3] = c
		}
	}
	for r := 0; r < 3; r++ {
		for c := 0; c < 4; c++ {
			a[4*r+c] *= sp.sign[r]
		}
	}
	if err := storage.CheckAffine("transform", a); err != nil {
		return malformed(f, "space directions", fields["space directions"], "the axes' directions must not be parallel")
	}
	h.Transform, h.Space = a, sp.space
	for c := 0; c < 3; c++ {
		h.Spacing[c] = a.ColumnNorm(c)
	}
	return nil
}

// OrientationAffine builds the voxel-to-world affine of a volume whose voxel
// axes point as the three-letter code says (e.g. "LPS": x towards the
// patient's left, y posterior, z superior), with the given spacing and the
// centre of voxel (0, 0, 0) at origin, in space (RAS when empty). An empty
// code gives diag(spacing) plus origin in the unspecified space. The error
// wraps storage.ErrInvalidArgument.
func OrientationAffine(code string, space storage.Space, spacing, origin [3]float64) (storage.Affine, storage.Space, error) {
	a := storage.DiagonalAffine(spacing)
	a[3], a[7], a[11] = origin[0], origin[1], origin[2]
	if code == "" {
		if space != storage.SpaceUnspecified {
			return a, "", fmt.Errorf("%w: a space (%s) needs an orientation code (e.g. RAS or LPS)", storage.ErrInvalidArgument, space)
		}
		return a, storage.SpaceUnspecified, nil
	}
	if space == storage.SpaceUnspecified {
		space = storage.SpaceRAS
	}
	if space != storage.SpaceRAS && space != storage.SpaceLPS {
		return a, "", fmt.Errorf("%w: space %q: an orientation code needs RAS or LPS", storage.ErrInvalidArgument, space)
	}
	// Each letter's world axis and sign in RAS; LPS negates x and y.
	letters := map[byte]struct {
		axis int
		sign float64
	}{'R': {0, 1}, 'L': {0, -1}, 'A': {1, 1}, 'P': {1, -1}, 'S': {2, 1}, 'I': {2, -1}}
	code = strings.ToUpper(code)
	if len(code) != 3 {
		return a, "", fmt.Errorf("%w: orientation %q: want three letters, one of R/L, A/P and S/I each (e.g. RAS, LPS, LPI)", storage.ErrInvalidArgument, code)
	}
	var seen [3]bool
	var m storage.Affine
	for c := 0; c < 3; c++ {
		l, ok := letters[code[c]]
		if !ok || seen[l.axis] {
			return a, "", fmt.Errorf("%w: orientation %q: want three letters, one of R/L, A/P and S/I each (e.g. RAS, LPS, LPI)", storage.ErrInvalidArgument, code)
		}
		seen[l.axis] = true
		sign := l.sign
		if space == storage.SpaceLPS && l.axis < 2 {
			sign = -sign
		}
		m[4*l.axis+c] = sign * spacing[c]
	}
	m[3], m[7], m[11], m[15] = origin[0], origin[1], origin[2], 1
	return m, space, nil
}
