package volfile

// NIfTI-1 header, 348 bytes, in the file's byte order (detected from
// sizeof_hdr, which is 348 in the file's order). Only the fields this package
// reads are listed; offsets are from the start of the file:
//
//	offset  type        field
//	0       int32       sizeof_hdr    348 (540 means NIfTI-2)
//	40      int16[8]    dim           dim[0] = number of dims (1..7), dim[1..7] sizes
//	70      int16       datatype      DT_* code (see niftiTypes)
//	72      int16       bitpix        bits per voxel
//	76      float32[8]  pixdim        pixdim[1..3] voxel spacing
//	108     float32     vox_offset    byte offset of the voxels in a .nii file
//	112     float32     scl_slope     value = stored*scl_slope + scl_inter
//	116     float32     scl_inter
//	252     int16       qform_code    > 0: the qform is used (when sform_code is not)
//	254     int16       sform_code    > 0: the sform is used
//	256     float32[3]  quatern_b/c/d qform rotation (a = sqrt(1-b^2-c^2-d^2))
//	268     float32[3]  qoffset_x/y/z qform translation (mm)
//	280     float32[12] srow_x/y/z    sform rows (mm); see orient.go
//	344     char[4]     magic         "n+1\0" (single .nii) or "ni1\0" (.hdr + .img)
//
// Voxels are stored x fastest, then y, z, t; a .nii file keeps them at
// vox_offset, a .hdr file's at vox_offset (usually 0) of the .img beside it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

const (
	niftiHeaderSize  = 348
	nifti2HeaderSize = 540
	offDim           = 40
	offDatatype      = 70
	offBitpix        = 72
	offPixdim        = 76
	offVoxOffset     = 108
	offSclSlope      = 112
	offSclInter      = 116
	offMagic         = 344
)

// niftiTypes maps the NIfTI datatype codes this package reads to voxel types.
var niftiTypes = map[int16]storage.DataType{
	2:   storage.Uint8,   // DT_UINT8
	4:   storage.Int16,   // DT_INT16
	16:  storage.Float32, // DT_FLOAT32
	512: storage.Uint16,  // DT_UINT16
	768: storage.Uint32,  // DT_UINT32
}

// niftiTypeNames names the codes a file may hold, for error messages.
var niftiTypeNames = map[int16]string{
	1: "binary", 2: "uint8", 4: "int16", 8: "int32", 16: "float32", 32: "complex64",
	64: "float64", 128: "rgb24", 256: "int8", 512: "uint16", 768: "uint32",
	1024: "int64", 1280: "uint64", 1536: "float128", 1792: "complex128", 2048: "complex256", 2304: "rgba32",
}

const niftiSupportedTypes = "supported: 2 (uint8), 4 (int16), 512 (uint16), 768 (uint32), 16 (float32)"

// readNIfTI1 reads a NIfTI-1 header from r (the start of the file, already
// decompressed) and resolves the .img of a .hdr/.img pair.
func readNIfTI1(r io.Reader, path string) (Header, error) {
	var b [niftiHeaderSize]byte
	if n, err := io.ReadFull(r, b[:]); err != nil {
		if _, perr := ParseNIfTI1Header(b[:n]); perr != nil && !errors.Is(perr, ErrTruncated) {
			return Header{}, perr
		}
		return Header{}, fmt.Errorf("nifti-1: header is %d bytes, want %d: %w", n, niftiHeaderSize, ErrTruncated)
	}
	h, err := ParseNIfTI1Header(b[:])
	if err != nil {
		return Header{}, err
	}
	if string(b[offMagic:offMagic+3]) == "ni1" {
		h.DataFile = pairImage(path)
		if h.DataFile == "" {
			return Header{}, fmt.Errorf("nifti-1: magic \"ni1\" says the voxels are in a .img file beside %s, found none: %w", path, ErrFormat)
		}
		h.Gzip = isGzipFile(h.DataFile)
	}
	return h, nil
}

// isGzipFile reports whether the file at path starts with the gzip magic.
func isGzipFile(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var m [2]byte
	_, err = io.ReadFull(f, m[:])
	return err == nil && m[0] == 0x1f && m[1] == 0x8b
}

// pairImage returns the .img (or .img.gz) file beside a .hdr file, or "".
func pairImage(hdr string) string {
	base := strings.TrimSuffix(strings.TrimSuffix(hdr, ".gz"), ".hdr")
	for _, c := range []string{base + ".img", base + ".img.gz"} {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	return ""
}

// ParseNIfTI1Header parses a 348-byte NIfTI-1 header. It detects the byte
// order from sizeof_hdr and returns ErrUnsupported for NIfTI-2, data types
// other than uint8, int16, uint16, uint32 and float32, more than four
// dimensions, and ErrFormat for inconsistent fields.
func ParseNIfTI1Header(b []byte) (Header, error) {
	const f = FormatNIfTI1
	if len(b) < 4 {
		return Header{}, fmt.Errorf("nifti-1: header is %d bytes, want %d: %w", len(b), niftiHeaderSize, ErrTruncated)
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint32(b) == niftiHeaderSize:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint32(b) == niftiHeaderSize:
		bo = binary.BigEndian
	case binary.LittleEndian.Uint32(b) == nifti2HeaderSize || binary.BigEndian.Uint32(b) == nifti2HeaderSize:
		return Header{}, unsupported(f, "sizeof_hdr", "540 (NIfTI-2)", "only NIfTI-1 (sizeof_hdr 348) is supported")
	default:
		return Header{}, malformed(f, "sizeof_hdr", fmt.Sprint(binary.LittleEndian.Uint32(b)), "want 348 (NIfTI-1) in either byte order; the file is not NIfTI or NRRD")
	}
	if len(b) < niftiHeaderSize {
		return Header{}, fmt.Errorf("nifti-1: header is %d bytes, want %d: %w", len(b), niftiHeaderSize, ErrTruncated)
	}
	magic := string(b[offMagic : offMagic+4])
	if magic != "n+1\x00" && magic != "ni1\x00" {
		return Header{}, malformed(f, "magic", fmt.Sprintf("%q", magic), `want "n+1\0" or "ni1\0"`)
	}
	var dim [8]int64
	for i := range dim {
		dim[i] = int64(int16(bo.Uint16(b[offDim+2*i:])))
	}
	if dim[0] < 1 || dim[0] > 7 {
		return Header{}, malformed(f, "dim[0]", fmt.Sprint(dim[0]), "want 1..7")
	}
	sizes := [7]int64{1, 1, 1, 1, 1, 1, 1}
	for i := 1; i <= int(dim[0]); i++ {
		if dim[i] < 1 {
			return Header{}, malformed(f, fmt.Sprintf("dim[%d]", i), fmt.Sprint(dim[i]), "want 1 or more")
		}
		sizes[i-1] = dim[i]
	}
	for i := 5; i <= 7; i++ {
		if sizes[i-1] > 1 {
			return Header{}, unsupported(f, fmt.Sprintf("dim[%d]", i), fmt.Sprint(sizes[i-1]), "supported: 3D images and 4D images (one time point at a time); dimensions 5-7 must be 1")
		}
	}
	code := int16(bo.Uint16(b[offDatatype:]))
	dt, ok := niftiTypes[code]
	if !ok {
		name := niftiTypeNames[code]
		if name == "" {
			name = "unknown"
		}
		return Header{}, unsupported(f, "datatype", fmt.Sprintf("%d (%s)", code, name), niftiSupportedTypes)
	}
	if bitpix := int(int16(bo.Uint16(b[offBitpix:]))); bitpix != 8*dt.Size() {
		return Header{}, malformed(f, "bitpix", fmt.Sprint(bitpix), fmt.Sprintf("datatype %d has %d bits", code, 8*dt.Size()))
	}
	shape, err := checkShape(f, "dim", [3]int64{sizes[0], sizes[1], sizes[2]})
	if err != nil {
		return Header{}, err
	}
	if sizes[3] > math.MaxUint32 {
		return Header{}, malformed(f, "dim[4]", fmt.Sprint(sizes[3]), "too large")
	}
	h := Header{Format: f, Shape: shape, DataType: dt, ByteOrder: bo, TimePoints: uint32(sizes[3])}
	for i := 0; i < 3; i++ {
		h.Spacing[i] = cleanSpacing(float64(math.Float32frombits(bo.Uint32(b[offPixdim+4*(i+1):]))))
	}
	qcode, scode := int16(bo.Uint16(b[offQformCode:])), int16(bo.Uint16(b[offSformCode:]))
	if err := niftiTransform(&h, b, bo, qcode, scode); err != nil {
		return Header{}, err
	}
	vox := float64(math.Float32frombits(bo.Uint32(b[offVoxOffset:])))
	if magic == "n+1\x00" {
		if math.IsNaN(vox) || vox < niftiHeaderSize || vox > 1<<30 || vox != math.Trunc(vox) {
			return Header{}, malformed(f, "vox_offset", fmt.Sprint(vox), "want a whole number of bytes, at least 348")
		}
		h.dataOffset = int64(vox)
	} else if vox > 0 && vox <= 1<<30 && vox == math.Trunc(vox) {
		// A .hdr/.img pair: the voxels start vox_offset bytes into the
		// .img (usually 0; other values are taken as 0, as ANALYZE 7.5
		// headers may hold anything there).
		h.dataOffset = int64(vox)
	}
	slope := float64(math.Float32frombits(bo.Uint32(b[offSclSlope:])))
	inter := float64(math.Float32frombits(bo.Uint32(b[offSclInter:])))
	if slope != 0 && !math.IsNaN(slope) && !math.IsInf(slope, 0) && !math.IsNaN(inter) && !math.IsInf(inter, 0) {
		h.ScaleSlope, h.ScaleInter = slope, inter
	}
	return h, nil
}
