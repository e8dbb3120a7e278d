package storage

import (
	"fmt"
	"math"
)

// Space names the world coordinate system of a volume's Transform.
type Space string

// The spaces a volume's transform may be in.
const (
	// SpaceUnspecified: no anatomical meaning is known; viewers show the
	// axes as stored.
	SpaceUnspecified Space = ""
	// SpaceRAS: x towards the patient's right, y anterior, z superior
	// (NIfTI's world, RAS+).
	SpaceRAS Space = "RAS"
	// SpaceLPS: x towards the patient's left, y posterior, z superior
	// (DICOM's and ITK's patient coordinates).
	SpaceLPS Space = "LPS"
	// SpaceScanner: device coordinates with no anatomical meaning.
	SpaceScanner Space = "scanner"
)

// Valid reports whether s is one of the known spaces.
func (s Space) Valid() bool {
	switch s {
	case SpaceUnspecified, SpaceRAS, SpaceLPS, SpaceScanner:
		return true
	}
	return false
}

// Affine is a 4x4 matrix in row-major order: element (r, c) is A[4*r+c].
type Affine [16]float64

// Apply maps the voxel position p (i, j, k) to world coordinates.
func (a Affine) Apply(p [3]float64) [3]float64 {
	var w [3]float64
	for r := 0; r < 3; r++ {
		w[r] = a[4*r]*p[0] + a[4*r+1]*p[1] + a[4*r+2]*p[2] + a[4*r+3]
	}
	return w
}

// ColumnNorm returns the length of column c (0..2): the voxel size along
// voxel axis c.
func (a Affine) ColumnNorm(c int) float64 {
	return math.Sqrt(a[c]*a[c] + a[4+c]*a[4+c] + a[8+c]*a[8+c])
}

// DiagonalAffine returns diag(s[0], s[1], s[2], 1).
func DiagonalAffine(s [3]float64) Affine {
	return Affine{s[0], 0, 0, 0, 0, s[1], 0, 0, 0, 0, s[2], 0, 0, 0, 0, 1}
}

// CheckAffine reports why a is not a usable voxel-to-world affine: a value
// that is not finite, a last row other than 0 0 0 1, a zero column (a voxel
// axis of no length) or columns that are linearly dependent. field names the
// transform in the error; elements are named field[index].
func CheckAffine(field string, a Affine) error {
	for i, v := range a {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s[%d] = %v: every element of the affine must be finite", ErrInvalidArgument, field, i, v)
		}
	}
	if a[12] != 0 || a[13] != 0 || a[14] != 0 || a[15] != 1 {
		return fmt.Errorf("%w: %s[12:16] = %v: the last row of the affine must be 0 0 0 1", ErrInvalidArgument, field, a[12:16])
	}
	for c := 0; c < 3; c++ {
		if a.ColumnNorm(c) == 0 {
			return fmt.Errorf("%w: %s column %d (elements %d, %d, %d) is zero: each voxel axis needs a direction and a size", ErrInvalidArgument, field, c, c, 4+c, 8+c)
		}
	}
	det := a[0]*(a[5]*a[10]-a[6]*a[9]) - a[1]*(a[4]*a[10]-a[6]*a[8]) + a[2]*(a[4]*a[9]-a[5]*a[8])
	if math.Abs(det) <= 1e-9*a.ColumnNorm(0)*a.ColumnNorm(1)*a.ColumnNorm(2) {
		return fmt.Errorf("%w: %s: the three voxel axes are (nearly) parallel (determinant %g): the affine cannot be inverted", ErrInvalidArgument, field, det)
	}
	return nil
}

// Affine returns the volume's LOD 0 voxel-to-world affine: Transform when
// set, else diag(Spacing, 1) (spacing 1 where none is given).
func (m *VolumeMeta) Affine() Affine {
	if len(m.Transform) == 16 {
		return Affine(m.Transform)
	}
	s := [3]float64{1, 1, 1}
	if len(m.Spacing) == 3 {
		copy(s[:], m.Spacing)
	}
	return DiagonalAffine(s)
}

// LODAffine returns the voxel-to-world affine of level lod. Level l+1's
// voxel i is the mean of level l's voxels 2i and 2i+1, so its centre sits
// half a level-l voxel past voxel 2i: each level doubles the scale and
// shifts the origin by half a voxel of the finer level. Over l levels the
// scale is 2^l and the shift (2^l - 1) / 2 LOD 0 voxels in each axis.
func (m *VolumeMeta) LODAffine(lod uint32) Affine {
	a := m.Affine()
	if lod == 0 {
		return a
	}
	f := math.Ldexp(1, int(lod))
	t := (f - 1) / 2
	var out Affine
	for r := 0; r < 3; r++ {
		out[4*r] = a[4*r] * f
		out[4*r+1] = a[4*r+1] * f
		out[4*r+2] = a[4*r+2] * f
		out[4*r+3] = a[4*r]*t + a[4*r+1]*t + a[4*r+2]*t + a[4*r+3]
	}
	out[15] = 1
	return out
}

// spacingTolerance is the relative difference allowed between a spacing
// value and the length of the transform's column for that axis.
const spacingTolerance = 1e-6

// normalizeSpace checks Space and Transform and fills Spacing from the
// transform's column lengths when it is empty.
func (m *VolumeMeta) normalizeSpace() error {
	if !m.Space.Valid() {
		return fmt.Errorf("%w: space %q (want RAS, LPS, scanner or none)", ErrInvalidArgument, string(m.Space))
	}
	if len(m.Transform) == 0 {
		m.Transform = nil
		return nil
	}
	if len(m.Transform) != 16 {
		return fmt.Errorf("%w: transform has %d values (want 16: a 4x4 affine, row-major, or none)", ErrInvalidArgument, len(m.Transform))
	}
	a := Affine(m.Transform)
	if err := CheckAffine("transform", a); err != nil {
		return err
	}
	if len(m.Spacing) == 0 {
		m.Spacing = []float64{a.ColumnNorm(0), a.ColumnNorm(1), a.ColumnNorm(2)}
		return nil
	}
	for c := 0; c < 3; c++ {
		n := a.ColumnNorm(c)
		if math.Abs(m.Spacing[c]-n) > spacingTolerance*n {
			return fmt.Errorf("%w: spacing[%d] = %v but transform column %d has length %v: leave spacing empty or make it the column lengths", ErrInvalidArgument, c, m.Spacing[c], c, n)
		}
	}
	return nil
}
