package volfile

// Writing volume files: NIfTI-1 single files (.nii) and NRRD files with an
// attached header (.nrrd), uncompressed, little-endian, x fastest, with the
// voxel-to-world transform written back in each format's own terms so that
// other tools place the voxels where go-ldm has them:
//
//   - NIfTI-1: the sform (srow_x/y/z, float32) with sform_code 1
//     (NIFTI_XFORM_SCANNER_ANAT) and the qform (the rotation's quaternion,
//     qfac in pixdim[0], the column lengths in pixdim[1..3], the translation
//     in qoffset) with qform_code 1, both in RAS (an LPS transform has its
//     x and y rows negated). A transform read from a NIfTI file reads back
//     bit for bit: an sform's float32 values are written as they were, and
//     an affine that float32 cannot hold but the qform gives back exactly
//     (one read from a qform) is written with sform_code 0, so readers use
//     the qform. The qform can only hold a
//     rotation with scaling: for a sheared affine it holds the nearest such
//     matrix, and the sform (which readers prefer) holds the affine. A volume
//     in no space (SpaceUnspecified) gets both codes 0 and its spacing in
//     pixdim, as ANALYZE-style files have.
//   - NRRD: "space" (right-anterior-superior, left-posterior-superior or
//     scanner-xyz), "space directions" (the columns) and "space origin" (the
//     translation), written with the shortest decimal that reads back to
//     the same float64. In no space: "spacings" only when the affine is
//     diag(spacing); otherwise (a box, or a coarser level) "space
//     dimension: 3" without a space, with the directions and origin, which
//     readers take as scanner coordinates (no anatomical meaning). NIfTI
//     has no such form: a volume in no space is written without a position
//     (codes 0, spacing in pixdim) rather than with an orientation it does
//     not have.
//
// The header layout of each format is described in nifti.go and nrrd.go.
//
// A Writer writes to a temporary file beside the target and renames it into
// place on Close (after fsync), so a failed or interrupted write never
// leaves a partial file under the target's name.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

// NIfTI-1 fields written beyond those nifti.go reads.
const (
	offPixdim0      = offPixdim // qfac
	offXyztUnits    = 123       // char: units of x, y, z and t
	offDescrip      = 148       // char[80]
	niftiUnitsMM    = 2         // NIFTI_UNITS_MM
	niftiXformScan  = 1         // NIFTI_XFORM_SCANNER_ANAT
	niftiSingleFile = 352       // vox_offset of a .nii: header + 4 bytes of extension flags
)

// niftiCodes maps voxel types to NIfTI datatype codes.
var niftiCodes = map[storage.DataType]int16{
	storage.Uint8: 2, storage.Int16: 4, storage.Float32: 16, storage.Uint16: 512, storage.Uint32: 768,
}

// nrrdTypeNames maps voxel types to NRRD type names.
var nrrdTypeNames = map[storage.DataType]string{
	storage.Uint8: "uint8", storage.Int16: "int16", storage.Uint16: "uint16", storage.Uint32: "uint32", storage.Float32: "float",
}

// WriteFormat returns the format a file name asks for: FormatNIfTI1 for
// .nii, FormatNRRD for .nrrd. Other names (compressed files and detached
// headers included) wrap ErrUnsupported.
func WriteFormat(path string) (Format, error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".nii":
		return FormatNIfTI1, nil
	case ".nrrd":
		return FormatNRRD, nil
	default:
		return 0, fmt.Errorf("%w: cannot write %q: name the file .nii (NIfTI-1) or .nrrd (NRRD); compressed files are not written", ErrUnsupported, filepath.Base(path))
	}
}

// Writer writes one volume file. Create writes the header; WriteAt writes
// voxels (little-endian, x fastest) at byte offsets of the voxel data;
// Close makes the file appear under its name. It is safe to call WriteAt
// concurrently (it is os.File.WriteAt); Close and Abort are not.
type Writer struct {
	f       *os.File
	path    string
	dataOff int64
	size    int64
	done    bool
}

// Create starts a volume file at path in the format its extension names
// (see WriteFormat), with h's Shape, DataType, Transform and Space (and,
// for NIfTI, ScaleSlope and ScaleInter). Transform must be a usable affine
// (storage.CheckAffine); a zero Transform means diag(Spacing). The voxels
// of the file are zero until written.
func Create(path string, h Header) (*Writer, error) {
	format, err := WriteFormat(path)
	if err != nil {
		return nil, err
	}
	if _, ok := niftiCodes[h.DataType]; !ok {
		return nil, fmt.Errorf("%w: data type %v", ErrUnsupported, h.DataType)
	}
	if h.Shape.X == 0 || h.Shape.Y == 0 || h.Shape.Z == 0 {
		return nil, fmt.Errorf("%w: shape %v has an empty axis", ErrFormat, h.Shape)
	}
	if h.Transform == (storage.Affine{}) {
		h.Transform = storage.DiagonalAffine(h.Spacing)
	}
	if err := storage.CheckAffine("transform", h.Transform); err != nil {
		return nil, err
	}
	var hdr []byte
	switch format {
	case FormatNIfTI1:
		if h.Shape.X > math.MaxInt16 || h.Shape.Y > math.MaxInt16 || h.Shape.Z > math.MaxInt16 {
			return nil, fmt.Errorf("%w: shape %v: NIfTI-1 holds at most 32767 voxels per axis; write a .nrrd file", ErrUnsupported, h.Shape)
		}
		hdr = niftiFileHeader(h)
	case FormatNRRD:
		hdr = []byte(nrrdFileHeader(h))
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("volfile: create %s: %w", path, err)
	}
	w := &Writer{f: f, path: path, dataOff: int64(len(hdr)), size: h.VolumeBytes()}
	if _, err := f.Write(hdr); err != nil {
		w.Abort()
		return nil, fmt.Errorf("volfile: write header of %s: %w", path, err)
	}
	if err := f.Truncate(w.dataOff + w.size); err != nil {
		w.Abort()
		return nil, fmt.Errorf("volfile: size %s: %w", path, err)
	}
	return w, nil
}

// DataBytes returns the size of the voxel data.
func (w *Writer) DataBytes() int64 { return w.size }

// WriteAt writes voxel bytes at byte offset off of the voxel data.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.size {
		return 0, fmt.Errorf("volfile: write of %d bytes at %d is outside the %d bytes of voxel data", len(p), off, w.size)
	}
	return w.f.WriteAt(p, w.dataOff+off)
}

// Close syncs the file and renames it into place (replacing a file of the
// same name), then syncs the directory.
func (w *Writer) Close() error {
	if w.done {
		return errors.New("volfile: writer already closed")
	}
	w.done = true
	tmp := w.f.Name()
	err := errors.Join(w.f.Sync(), w.f.Close())
	if err == nil {
		err = os.Rename(tmp, w.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("volfile: finish %s: %w", w.path, err)
	}
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Abort removes the unfinished file. It does nothing after Close.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}

// niftiFileHeader returns the 352 bytes before the voxels of a .nii file.
func niftiFileHeader(h Header) []byte {
	b := make([]byte, niftiSingleFile)
	le := binary.LittleEndian
	f32 := func(off int, v float64) { le.PutUint32(b[off:], math.Float32bits(float32(v))) }
	le.PutUint32(b[0:], niftiHeaderSize)
	b[38] = 'r' // regular: ANALYZE readers want it
	dims := []int16{3, int16(h.Shape.X), int16(h.Shape.Y), int16(h.Shape.Z), 1, 1, 1, 1}
	for i, d := range dims {
		le.PutUint16(b[offDim+2*i:], uint16(d))
	}
	code := niftiCodes[h.DataType]
	le.PutUint16(b[offDatatype:], uint16(code))
	le.PutUint16(b[offBitpix:], uint16(8*h.DataType.Size()))
	f32(offVoxOffset, niftiSingleFile)
	if h.ScaleSlope != 0 {
		f32(offSclSlope, h.ScaleSlope)
		f32(offSclInter, h.ScaleInter)
	}
	b[offXyztUnits] = niftiUnitsMM
	copy(b[offDescrip:offDescrip+79], "go-ldm")
	copy(b[offMagic:], "n+1\x00")

	a := h.Transform
	for c := 0; c < 3; c++ {
		f32(offPixdim+4*(c+1), a.ColumnNorm(c))
	}
	f32(offPixdim0, 1)
	if h.Space == storage.SpaceUnspecified {
		return b // ANALYZE-style: spacing only
	}
	if h.Space == storage.SpaceLPS {
		for c := 0; c < 4; c++ {
			a[c], a[4+c] = -a[c], -a[4+c] // LPS to RAS
		}
	}
	for r := 0; r < 3; r++ {
		for c := 0; c < 4; c++ {
			f32(offSrowX+16*r+4*c, a[4*r+c])
		}
	}
	le.PutUint16(b[offSformCode:], niftiXformScan)
	qb, qc, qd, qfac := quaternion(a)
	f32(offQuaternB, qb)
	f32(offQuaternB+4, qc)
	f32(offQuaternB+8, qd)
	for r := 0; r < 3; r++ {
		f32(offQoffsetX+4*r, a[4*r+3])
	}
	f32(offPixdim0, qfac)
	le.PutUint16(b[offQformCode:], niftiXformScan)
	// Readers take the sform when its code is set. When float32 cannot
	// hold the affine but the qform gives it back exactly (an affine read
	// from a file's qform), leave the sform's code 0 so the file reads
	// back as the same affine; its rows stay for information.
	if !float32Exact(a) {
		le.PutUint16(b[offSformCode:], 0)
		if q, err := ParseNIfTI1Header(b[:niftiHeaderSize]); err != nil || q.Transform != a {
			le.PutUint16(b[offSformCode:], niftiXformScan)
		}
	}
	return b
}

// float32Exact reports whether every element of a is a float32 value.
func float32Exact(a storage.Affine) bool {
	for _, v := range a {
		if float64(float32(v)) != v {
			return false
		}
	}
	return true
}

// quaternion returns NIfTI's quaternion (b, c, d; a >= 0) and qfac of the
// rotation nearest to the affine's columns scaled to unit length: the
// third column is flipped (qfac -1) when the axes are left-handed, and the
// columns are made orthogonal (Gram-Schmidt) first, so a sheared affine
// gets a proper rotation.
func quaternion(a storage.Affine) (qb, qc, qd, qfac float64) {
	var col [3][3]float64
	for c := 0; c < 3; c++ {
		n := a.ColumnNorm(c)
		for r := 0; r < 3; r++ {
			col[c][r] = a[4*r+c] / n
		}
	}
	dot := func(u, v [3]float64) float64 { return u[0]*v[0] + u[1]*v[1] + u[2]*v[2] }
	norm := func(u [3]float64) [3]float64 {
		n := math.Sqrt(dot(u, u))
		return [3]float64{u[0] / n, u[1] / n, u[2] / n}
	}
	// Gram-Schmidt: keeps an orthonormal set as it is.
	x := col[0]
	y := col[1]
	d := dot(x, y)
	y = norm([3]float64{y[0] - d*x[0], y[1] - d*x[1], y[2] - d*x[2]})
	z := col[2]
	dx, dy := dot(x, z), dot(y, z)
	z = norm([3]float64{z[0] - dx*x[0] - dy*y[0], z[1] - dx*x[1] - dy*y[1], z[2] - dx*x[2] - dy*y[2]})
	cross := [3]float64{x[1]*y[2] - x[2]*y[1], x[2]*y[0] - x[0]*y[2], x[0]*y[1] - x[1]*y[0]}
	qfac = 1
	if dot(cross, z) < 0 {
		qfac = -1
		z = [3]float64{-z[0], -z[1], -z[2]}
	}
	// R has columns x, y, z: R[r][c].
	r := [3][3]float64{{x[0], y[0], z[0]}, {x[1], y[1], z[1]}, {x[2], y[2], z[2]}}
	var qa float64
	tr := r[0][0] + r[1][1] + r[2][2] + 1
	if tr > 0.5 {
		qa = 0.5 * math.Sqrt(tr)
		qb = 0.25 * (r[2][1] - r[1][2]) / qa
		qc = 0.25 * (r[0][2] - r[2][0]) / qa
		qd = 0.25 * (r[1][0] - r[0][1]) / qa
	} else {
		xd := 1 + r[0][0] - (r[1][1] + r[2][2])
		yd := 1 + r[1][1] - (r[0][0] + r[2][2])
		zd := 1 + r[2][2] - (r[0][0] + r[1][1])
		switch {
		case xd > 1:
			qb = 0.5 * math.Sqrt(xd)
			qc = 0.25 * (r[0][1] + r[1][0]) / qb
			qd = 0.25 * (r[0][2] + r[2][0]) / qb
			qa = 0.25 * (r[2][1] - r[1][2]) / qb
		case yd > 1:
			qc = 0.5 * math.Sqrt(yd)
			qb = 0.25 * (r[0][1] + r[1][0]) / qc
			qd = 0.25 * (r[1][2] + r[2][1]) / qc
			qa = 0.25 * (r[0][2] - r[2][0]) / qc
		default:
			qd = 0.5 * math.Sqrt(zd)
			qb = 0.25 * (r[0][2] + r[2][0]) / qd
			qc = 0.25 * (r[1][2] + r[2][1]) / qd
			qa = 0.25 * (r[1][0] - r[0][1]) / qd
		}
		if qa < 0 {
			qb, qc, qd = -qb, -qc, -qd
		}
	}
	return qb, qc, qd, qfac
}

// nrrdFileHeader returns the header of an attached NRRD file, ending with the
// blank line before the voxels.
func nrrdFileHeader(h Header) string {
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	vec := func(v [3]float64) string { return "(" + num(v[0]) + "," + num(v[1]) + "," + num(v[2]) + ")" }
	var sb strings.Builder
	sb.WriteString("NRRD0004\n# Complete NRRD file format specification at:\n# http://teem.sourceforge.net/nrrd/format.html\n# written by go-ldm\n")
	fmt.Fprintf(&sb, "type: %s\ndimension: 3\n", nrrdTypeNames[h.DataType])
	a := h.Transform
	diag := storage.DiagonalAffine([3]float64{a.ColumnNorm(0), a.ColumnNorm(1), a.ColumnNorm(2)})
	switch {
	case h.Space == storage.SpaceUnspecified && a == diag:
		fmt.Fprintf(&sb, "sizes: %d %d %d\n", h.Shape.X, h.Shape.Y, h.Shape.Z)
		fmt.Fprintf(&sb, "spacings: %s %s %s\n", num(a.ColumnNorm(0)), num(a.ColumnNorm(1)), num(a.ColumnNorm(2)))
	default:
		if h.Space == storage.SpaceUnspecified {
			// Placed but in no named space (a box or a coarser level of
			// such a volume): a space dimension without a space.
			sb.WriteString("space dimension: 3\n")
		} else {
			space := map[storage.Space]string{storage.SpaceRAS: "right-anterior-superior", storage.SpaceLPS: "left-posterior-superior", storage.SpaceScanner: "scanner-xyz"}[h.Space]
			fmt.Fprintf(&sb, "space: %s\n", space)
		}
		fmt.Fprintf(&sb, "sizes: %d %d %d\n", h.Shape.X, h.Shape.Y, h.Shape.Z)
		var cols [3]string
		for c := 0; c < 3; c++ {
			cols[c] = vec([3]float64{a[c], a[4+c], a[8+c]})
		}
		fmt.Fprintf(&sb, "space directions: %s %s %s\n", cols[0], cols[1], cols[2])
		sb.WriteString("space units: \"mm\" \"mm\" \"mm\"\n")
		fmt.Fprintf(&sb, "space origin: %s\n", vec([3]float64{a[3], a[7], a[11]}))
	}
	sb.WriteString("kinds: domain domain domain\nendian: little\nencoding: raw\n\n")
	return sb.String()
}
