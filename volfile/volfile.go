package volfile

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

// Sentinel errors. Every error Open and ReadVoxels return wraps one of these
// (or an *os.PathError from opening a file).
var (
	// ErrFormat: the file is not a well-formed file of its format.
	ErrFormat = errors.New("malformed volume file")
	// ErrUnsupported: the file is well formed but uses a feature this
	// package does not read. The error is a *FieldError.
	ErrUnsupported = errors.New("unsupported volume file")
	// ErrTruncated: the voxel data ends before the header says it should.
	ErrTruncated = errors.New("truncated volume file")
)

// maxVolumeBytes bounds the voxel bytes of one 3D volume that ReadVoxels
// allocates (64 GiB); larger headers are rejected as unsupported.
const maxVolumeBytes = 64 << 30

// FieldError names the header field that makes a file unreadable, the value
// found in it and what is supported instead.
type FieldError struct {
	Format    Format
	Field     string // header field, e.g. "datatype", "dim[4]", "encoding"
	Value     string // the value found
	Supported string // what is supported, as a phrase
	Err       error  // ErrUnsupported or ErrFormat
}

// Error returns "<format>: field <field> = <value>: <supported> (<sentinel>)".
func (e *FieldError) Error() string {
	s := fmt.Sprintf("%s: field %s = %s", e.Format, e.Field, e.Value)
	if e.Supported != "" {
		s += ": " + e.Supported
	}
	return s + " (" + e.Err.Error() + ")"
}

// Unwrap returns ErrUnsupported or ErrFormat.
func (e *FieldError) Unwrap() error { return e.Err }

func unsupported(f Format, field, value, supported string) error {
	return &FieldError{Format: f, Field: field, Value: value, Supported: supported, Err: ErrUnsupported}
}

func malformed(f Format, field, value, want string) error {
	return &FieldError{Format: f, Field: field, Value: value, Supported: want, Err: ErrFormat}
}

// Format is the kind of file a Header was read from.
type Format int

// The formats Open and OpenRaw read.
const (
	FormatRaw    Format = iota // headerless voxels (OpenRaw)
	FormatNIfTI1               // NIfTI-1: .nii, .nii.gz, .hdr/.img pairs
	FormatNRRD                 // NRRD: .nrrd, or a detached .nhdr header
)

// String returns "raw", "nifti-1" or "nrrd", the names labels and messages
// use.
func (f Format) String() string {
	switch f {
	case FormatNIfTI1:
		return "nifti-1"
	case FormatNRRD:
		return "nrrd"
	}
	return "raw"
}

// Header describes the volume in a file.
type Header struct {
	Format   Format
	Shape    storage.Shape // voxels in x, y and z
	DataType storage.DataType
	// Spacing is the voxel size in x, y and z in the file's units (NIfTI:
	// usually mm); 1 where the file gives none.
	Spacing [3]float64
	// Transform is the voxel-to-world affine in mm (see
	// storage.VolumeMeta.Transform): NIfTI's sform when sform_code > 0,
	// else its qform when qform_code > 0, else diag(Spacing); NRRD's space
	// directions and space origin, else diag(Spacing); for raw files, from
	// RawOptions. Its column lengths equal Spacing.
	Transform storage.Affine
	// Space is the world space of Transform: RAS for NIfTI with a sform or
	// qform, the NRRD space (left-anterior-superior is converted to RAS),
	// unspecified when the file gives no orientation.
	Space storage.Space
	// ByteOrder is the byte order of the voxels in the file. ReadVoxels
	// always returns little-endian voxels.
	ByteOrder binary.ByteOrder
	// TimePoints is the length of the fourth axis (1 for a 3D file).
	TimePoints uint32
	// Gzip says the voxel data is gzip-compressed in the file.
	Gzip bool
	// ScaleSlope and ScaleInter are NIfTI's scl_slope and scl_inter (value =
	// stored*slope + inter). ReadVoxels returns stored values; a slope of 0
	// means no scaling.
	ScaleSlope, ScaleInter float64
	// DataFile is the file holding the voxels, when it is not the header's
	// file (NIfTI .hdr/.img pairs, NRRD "data file").
	DataFile string

	fileOffset int64 // bytes to skip in the data file before decompressing (attached NRRD data)
	dataOffset int64 // bytes to skip in the (decompressed) data stream before voxels
	lineSkip   int   // NRRD "line skip": lines to skip before dataOffset
	skipToEnd  bool  // NRRD "byte skip: -1": voxels are the last bytes of the data file
}

// VoxelCount returns the number of voxels in one 3D volume.
func (h *Header) VoxelCount() int64 {
	return int64(h.Shape.X) * int64(h.Shape.Y) * int64(h.Shape.Z)
}

// VolumeBytes returns the byte size of one 3D volume.
func (h *Header) VolumeBytes() int64 { return h.VoxelCount() * int64(h.DataType.Size()) }

// Options chooses what Open reads from a file. The zero value reads a 3D
// file and rejects a 4D one.
type Options struct {
	// HasTimePoint says TimePoint was chosen. A 4D file needs one.
	HasTimePoint bool
	// TimePoint is the index (from 0) of the 3D volume to read from a 4D file.
	TimePoint uint32
}

// Image is an open volume file: its parsed Header, and where and how to
// read its voxels. It holds no open file; ReadVoxels opens the data file
// each time it is called. An Image is not safe for concurrent use.
type Image struct {
	Header
	path string
	opts Options
}

// Path returns the path the image was opened with (the header's file; see
// Header.DataFile for the voxels).
func (im *Image) Path() string { return im.path }

// Options returns the options the image was opened with: the time point
// ReadVoxels reads.
func (im *Image) Options() Options { return im.opts }

// Open reads the header of the volume file at path, detecting NIfTI-1 (also
// gzip-compressed) and NRRD from the content. Raw files have no header; use
// OpenRaw for them. The returned error wraps ErrFormat or ErrUnsupported, or
// is an *os.PathError.
func Open(path string, opts Options) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(4)
	var h Header
	switch {
	case bytes.HasPrefix(magic, []byte("NRRD")):
		h, err = parseNRRD(br, path)
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, zerr := gzip.NewReader(br)
		if zerr != nil {
			return nil, fmt.Errorf("%s: gzip: %v: %w", path, zerr, ErrFormat)
		}
		h, err = readNIfTI1(zr, path)
		if h.DataFile == "" {
			h.Gzip = true
		}
	default:
		h, err = readNIfTI1(br, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return newImage(h, path, opts)
}

func newImage(h Header, path string, opts Options) (*Image, error) {
	if h.TimePoints > 1 && !opts.HasTimePoint {
		field := "dim[4]"
		if h.Format == FormatNRRD {
			field = "sizes[3]"
		}
		return nil, fmt.Errorf("%s: %w", path, unsupported(h.Format, field, fmt.Sprint(h.TimePoints),
			"a 4D image is read one time point at a time: choose one (0.."+fmt.Sprint(h.TimePoints-1)+")"))
	}
	if opts.HasTimePoint && opts.TimePoint >= h.TimePoints {
		return nil, fmt.Errorf("%s: time point %d: the file has %d: %w", path, opts.TimePoint, h.TimePoints, storage.ErrInvalidArgument)
	}
	if !fitsBytes(uint64(h.DataType.Size()), maxVolumeBytes, uint64(h.Shape.X), uint64(h.Shape.Y), uint64(h.Shape.Z)) {
		return nil, fmt.Errorf("%s: %w", path, unsupported(h.Format, "dim", fmt.Sprintf("%dx%dx%d", h.Shape.X, h.Shape.Y, h.Shape.Z),
			fmt.Sprintf("at most %d GiB per volume", maxVolumeBytes>>30)))
	}
	// The whole data (all time points and the skipped bytes) must be
	// addressable with int64 offsets.
	if !fitsBytes(uint64(h.VolumeBytes()), maxDataBytes, uint64(h.TimePoints)) {
		return nil, fmt.Errorf("%s: %w", path, malformed(h.Format, "dim", fmt.Sprintf("%dx%dx%dx%d", h.Shape.X, h.Shape.Y, h.Shape.Z, h.TimePoints),
			"the 4D data is too large"))
	}
	return &Image{Header: h, path: path, opts: opts}, nil
}

// maxDataBytes bounds the bytes of all time points of a file (4 EiB), so that
// offsets computed from the header cannot overflow an int64.
const maxDataBytes = 1 << 62

// fitsBytes reports whether size times every factor is at most limit,
// without overflowing.
func fitsBytes(size, limit uint64, factors ...uint64) bool {
	if size > limit {
		return false
	}
	for _, f := range factors {
		if f != 0 && size > limit/f {
			return false
		}
		size *= f
	}
	return true
}

// readVolume reads exactly n bytes from r. It allocates as the data arrives
// (doubling from 16 MiB), so a short or compressed stream that declares a
// large volume costs memory in proportion to what it holds, not to what the
// header claims.
func readVolume(r io.Reader, n int64) ([]byte, int64, error) {
	const first = 16 << 20
	c := n
	if c > first {
		c = first
	}
	buf := make([]byte, c)
	var got int64
	for {
		m, err := io.ReadFull(r, buf[got:])
		got += int64(m)
		if err != nil {
			return nil, got, err
		}
		if got == n {
			return buf, got, nil
		}
		c = 2 * int64(len(buf))
		if c > n {
			c = n
		}
		nb := make([]byte, c)
		copy(nb, buf)
		buf = nb
	}
}

// ReadVoxels reads the chosen 3D volume: VolumeBytes little-endian voxels,
// x fastest. It fails with ErrTruncated if the data ends early and ErrFormat
// if compressed data is corrupt. It reads through Voxels, allocating as
// the data arrives.
func (im *Image) ReadVoxels() ([]byte, error) {
	r, err := im.Voxels()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf, _, err := readVolume(r, im.VolumeBytes())
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// Voxels opens the chosen 3D volume as a stream of VolumeBytes
// little-endian voxels, x fastest, then io.EOF: one sequential pass over
// the file (gzip included), with memory of a few buffers whatever the
// volume's size. Errors are those of ReadVoxels: an uncompressed file too
// short for the volume fails here, before any voxel is read; data that ends
// early fails the Read that reaches the end with ErrTruncated, corrupt
// compressed data with ErrFormat, and data longer than the header declares
// (NIfTI-1, NRRD) fails the Read that would deliver the last voxels. The
// caller closes the stream; it is not safe for concurrent use.
func (im *Image) Voxels() (io.ReadCloser, error) {
	name := im.path
	if im.DataFile != "" {
		name = im.DataFile
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	s, err := im.openVoxels(f, name)
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (im *Image) openVoxels(f *os.File, name string) (*voxelStream, error) {
	n := im.VolumeBytes()
	skip := im.dataOffset
	if im.fileOffset > 0 {
		if _, err := f.Seek(im.fileOffset, io.SeekStart); err != nil {
			return nil, err
		}
	}
	var r io.Reader = bufio.NewReaderSize(f, 1<<20)
	if im.skipToEnd {
		st, err := f.Stat()
		if err != nil {
			return nil, err
		}
		total := n * int64(im.TimePoints) // newImage bounds it by maxDataBytes
		if st.Size() < total {
			return nil, fmt.Errorf("%s: %d bytes, want at least %d: %w", name, st.Size(), total, ErrTruncated)
		}
		skip = st.Size() - total
	}
	if im.Gzip {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%s: gzip: %v: %w", name, err, ErrFormat)
		}
		r = zr
	}
	br := bufio.NewReader(r)
	for i := 0; i < im.lineSkip; i++ {
		// ReadSlice, not ReadString: a long line is discarded piece by
		// piece instead of being held in memory.
		for {
			_, err := br.ReadSlice('\n')
			if err == nil {
				break
			}
			if err != bufio.ErrBufferFull {
				return nil, fmt.Errorf("%s: line skip %d: %w", name, im.lineSkip, readErr(err))
			}
		}
	}
	if im.opts.HasTimePoint {
		skip += int64(im.opts.TimePoint) * n
	}
	if m, err := io.CopyN(io.Discard, br, skip); err != nil {
		return nil, fmt.Errorf("%s: %d bytes before the voxels, want %d: %w", name, m, skip, readErr(err))
	}
	have := int64(-1) // bytes from the voxels to the end of the data, when known
	if !im.Gzip && im.lineSkip == 0 {
		// Uncompressed: the file must hold the volume after the skipped
		// bytes; check before reading it.
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
			if have = st.Size() - im.fileOffset - skip; have < n {
				return nil, fmt.Errorf("%s: %d voxel bytes, want %d: %w", name, max(have, 0), n, ErrTruncated)
			}
		}
	}
	return &voxelStream{im: im, f: f, r: br, name: name, n: n, have: have}, nil
}

// voxelStream is the stream Voxels returns.
type voxelStream struct {
	im   *Image
	f    *os.File
	r    *bufio.Reader
	name string
	n    int64  // voxel bytes of the volume
	got  int64  // voxel bytes read so far
	have int64  // bytes from the voxels to the end of the data; -1 unknown
	part []byte // swapped bytes of a voxel split by a short read
	err  error
}

func (s *voxelStream) Close() error { return s.f.Close() }

func (s *voxelStream) Read(p []byte) (int, error) {
	if len(s.part) > 0 {
		c := copy(p, s.part)
		s.part = s.part[c:]
		return c, nil
	}
	if s.err != nil {
		return 0, s.err
	}
	left := s.n - s.got
	if left == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	vs := s.im.DataType.Size()
	buf := p
	if int64(len(buf)) > left {
		buf = buf[:left]
	}
	short := len(buf) < vs
	if short {
		buf = make([]byte, vs) // one voxel, so it can be swapped whole
	} else {
		buf = buf[:len(buf)/vs*vs]
	}
	m, err := io.ReadFull(s.r, buf)
	s.got += int64(m)
	if err != nil {
		s.err = fmt.Errorf("%s: %d voxel bytes, want %d: %w", s.name, s.got, s.n, readErr(err))
		return 0, s.err
	}
	if s.got == s.n {
		if err := s.checkEnd(); err != nil {
			s.err = err
			return 0, err
		}
	}
	if s.im.ByteOrder == binary.BigEndian {
		swap(buf, vs)
	}
	if short {
		c := copy(p, buf)
		s.part = buf[c:]
		return c, nil
	}
	return m, nil
}

// checkEnd fails when the data holds more bytes than the header declares
// (e.g. a data type or shape that does not match the voxels): the header
// cannot be trusted.
func (s *voxelStream) checkEnd() error {
	im := s.im
	if im.Format == FormatRaw || im.skipToEnd {
		return nil
	}
	n := s.n
	tp := int64(0)
	if im.opts.HasTimePoint {
		tp = int64(im.opts.TimePoint)
	}
	rest := (int64(im.TimePoints) - 1 - tp) * n
	extra := s.have - n - rest
	if s.have < 0 {
		k, _ := io.CopyN(io.Discard, s.r, rest+1)
		extra = k - rest
	}
	if extra > 0 {
		field := "dim"
		if im.Format == FormatNRRD {
			field = "sizes"
		}
		return fmt.Errorf("%s: %w", s.name, malformed(im.Format, field, fmt.Sprintf("%dx%dx%dx%d %s", im.Shape.X, im.Shape.Y, im.Shape.Z, im.TimePoints, im.DataType),
			"the data holds more bytes than the header declares"))
	}
	return nil
}

func readErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return ErrTruncated
	}
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || strings.Contains(err.Error(), "flate") {
		return fmt.Errorf("%v: %w", err, ErrFormat)
	}
	return err
}

// swap reverses the bytes of each size-byte element of b in place.
func swap(b []byte, size int) {
	switch size {
	case 2:
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	case 4:
		for i := 0; i+3 < len(b); i += 4 {
			b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
		}
	}
}

// RawOptions describes a headerless raw file.
type RawOptions struct {
	Shape    storage.Shape
	DataType storage.DataType
	Spacing  [3]float64 // zero means 1 in each axis
	// BigEndian says the file's voxels are big-endian.
	BigEndian bool
	// Offset is the number of bytes to skip before the voxels.
	Offset int64
	// Gzip says the file is gzip-compressed.
	Gzip bool
	// Orientation is a three-letter code saying which way each voxel axis
	// (x, y, z) points in patient terms, e.g. "RAS" (x towards the right,
	// y anterior, z superior) or "LPS", "LPI", "PIR"; each of R/L, A/P and
	// S/I once. Empty means no orientation is known (the volume's space is
	// unspecified and its transform diag(Spacing) plus Origin).
	Orientation string
	// Space is the world space Origin is given in and the transform is
	// stored in: storage.SpaceRAS (the default when Orientation is set) or
	// storage.SpaceLPS.
	Space storage.Space
	// Origin is the world position in mm of the centre of voxel (0, 0, 0).
	Origin [3]float64
}

// OpenRaw opens a headerless raw file described by o. The file must hold at
// least Offset + the volume's bytes (checked by ReadVoxels).
func OpenRaw(path string, o RawOptions) (*Image, error) {
	if o.Shape.X == 0 || o.Shape.Y == 0 || o.Shape.Z == 0 {
		return nil, fmt.Errorf("%w: shape %dx%dx%d must be positive", storage.ErrInvalidArgument, o.Shape.X, o.Shape.Y, o.Shape.Z)
	}
	if o.DataType.Size() == 0 {
		return nil, fmt.Errorf("%w: data type %d", storage.ErrInvalidArgument, o.DataType)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	h := Header{Format: FormatRaw, Shape: o.Shape, DataType: o.DataType, Spacing: o.Spacing,
		ByteOrder: binary.LittleEndian, TimePoints: 1, Gzip: o.Gzip, dataOffset: o.Offset}
	if o.BigEndian {
		h.ByteOrder = binary.BigEndian
	}
	for i, s := range h.Spacing {
		if s == 0 {
			h.Spacing[i] = 1
		}
	}
	a, space, err := OrientationAffine(o.Orientation, o.Space, h.Spacing, o.Origin)
	if err != nil {
		return nil, err
	}
	h.Transform, h.Space = a, space
	return newImage(h, path, Options{})
}

// checkShape converts header dimensions to a Shape, rejecting values that do
// not fit.
func checkShape(f Format, field string, dims [3]int64) (storage.Shape, error) {
	for i, d := range dims {
		if d < 1 || d > math.MaxUint32 {
			return storage.Shape{}, malformed(f, fmt.Sprintf("%s[%d]", field, i+boolInt(f == FormatNIfTI1)), fmt.Sprint(d), "each axis needs 1 or more voxels")
		}
	}
	return storage.Shape{X: uint32(dims[0]), Y: uint32(dims[1]), Z: uint32(dims[2])}, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func cleanSpacing(v float64) float64 {
	v = math.Abs(v)
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	return v
}
