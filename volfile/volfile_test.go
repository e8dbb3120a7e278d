package volfile

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/xcheng85/go-ldm/storage"
)

var allTypes = []storage.DataType{storage.Uint8, storage.Uint16, storage.Int16, storage.Uint32, storage.Float32}

// voxel returns the test pattern's value at (x, y, z, t), encoded in bo.
func voxel(dt storage.DataType, bo binary.ByteOrder, x, y, z, t int) []byte {
	v := x + 3*y + 7*z + 11*t
	b := make([]byte, dt.Size())
	switch dt {
	case storage.Uint8:
		b[0] = byte(v % 251)
	case storage.Uint16:
		bo.PutUint16(b, uint16(v*37))
	case storage.Int16:
		bo.PutUint16(b, uint16(int16(v-500)))
	case storage.Uint32:
		bo.PutUint32(b, uint32(v*100003))
	case storage.Float32:
		bo.PutUint32(b, math.Float32bits(float32(v)*0.5-3))
	}
	return b
}

// pattern returns the voxels of shape s and t time points in bo.
func pattern(dt storage.DataType, bo binary.ByteOrder, s storage.Shape, times int) []byte {
	var out []byte
	for t := 0; t < times; t++ {
		out = append(out, patternAt(dt, bo, s, t)...)
	}
	return out
}

func patternAt(dt storage.DataType, bo binary.ByteOrder, s storage.Shape, t int) []byte {
	var out []byte
	for z := 0; z < int(s.Z); z++ {
		for y := 0; y < int(s.Y); y++ {
			for x := 0; x < int(s.X); x++ {
				out = append(out, voxel(dt, bo, x, y, z, t)...)
			}
		}
	}
	return out
}

var niftiCode = map[storage.DataType]int16{storage.Uint8: 2, storage.Int16: 4, storage.Float32: 16, storage.Uint16: 512, storage.Uint32: 768}

// niftiHeader builds a NIfTI-1 header.
func niftiHeader(bo binary.ByteOrder, code int16, bitpix int16, dims []int16, spacing [3]float32, magic string) []byte {
	b := make([]byte, niftiHeaderSize)
	bo.PutUint32(b, niftiHeaderSize)
	bo.PutUint16(b[offDim:], uint16(len(dims)))
	for i, d := range dims {
		bo.PutUint16(b[offDim+2*(i+1):], uint16(d))
	}
	bo.PutUint16(b[offDatatype:], uint16(code))
	bo.PutUint16(b[offBitpix:], uint16(bitpix))
	bo.PutUint32(b[offPixdim:], math.Float32bits(1))
	for i, s := range spacing {
		bo.PutUint32(b[offPixdim+4*(i+1):], math.Float32bits(s))
	}
	if magic == "n+1" {
		bo.PutUint32(b[offVoxOffset:], math.Float32bits(352))
	}
	copy(b[offMagic:], magic)
	return b
}

type niftiFile struct {
	dt      storage.DataType
	bo      binary.ByteOrder
	shape   storage.Shape
	times   int
	gzip    bool
	pair    bool // .hdr + .img
	spacing [3]float32
}

// write writes the file into dir and returns the path to open.
func (n niftiFile) write(tb testing.TB, dir string) string {
	tb.Helper()
	dims := []int16{int16(n.shape.X), int16(n.shape.Y), int16(n.shape.Z)}
	if n.times > 1 {
		dims = append(dims, int16(n.times))
	}
	times := max(n.times, 1)
	data := pattern(n.dt, n.bo, n.shape, times)
	magic := "n+1"
	if n.pair {
		magic = "ni1"
	}
	hdr := niftiHeader(n.bo, niftiCode[n.dt], int16(8*n.dt.Size()), dims, n.spacing, magic)
	if n.pair {
		p := filepath.Join(dir, "vol.hdr")
		writeFile(tb, p, hdr, false)
		writeFile(tb, filepath.Join(dir, "vol.img"), data, n.gzip)
		return p
	}
	body := append(append(hdr, 0, 0, 0, 0), data...)
	p := filepath.Join(dir, "vol.nii")
	if n.gzip {
		p += ".gz"
	}
	writeFile(tb, p, body, n.gzip)
	return p
}

func writeFile(tb testing.TB, path string, b []byte, gz bool) {
	tb.Helper()
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			tb.Fatal(err)
		}
		b = buf.Bytes()
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
}

func boName(bo binary.ByteOrder) string {
	if bo == binary.BigEndian {
		return "big"
	}
	return "little"
}

func mustRead(tb testing.TB, path string, opts Options) (*Image, []byte) {
	tb.Helper()
	im, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	b, err := im.ReadVoxels()
	if err != nil {
		tb.Fatalf("ReadVoxels: %v", err)
	}
	return im, b
}

func TestOpen_nifti(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 5, Y: 4, Z: 3}
	for _, dt := range allTypes {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, gz := range []bool{false, true} {
				for _, pair := range []bool{false, true} {
					name := fmt.Sprintf("%s_%s_gzip=%v_pair=%v", dt, boName(bo), gz, pair)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						p := niftiFile{dt: dt, bo: bo, shape: shape, gzip: gz, pair: pair, spacing: [3]float32{0.5, 0.75, 2}}.write(t, t.TempDir())
						im, got := mustRead(t, p, Options{})
						if im.Format != FormatNIfTI1 || im.Shape != shape || im.DataType != dt || im.ByteOrder != bo || im.TimePoints != 1 {
							t.Fatalf("header = %+v", im.Header)
						}
						if im.Spacing != [3]float64{0.5, 0.75, 2} {
							t.Fatalf("spacing = %v", im.Spacing)
						}
						if want := pattern(dt, binary.LittleEndian, shape, 1); !bytes.Equal(got, want) {
							t.Fatalf("voxels differ:\n got %x\nwant %x", got[:16], want[:16])
						}
					})
				}
			}
		}
	}
}

func TestOpen_nifti_4d(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 4, Y: 3, Z: 2}
	p := niftiFile{dt: storage.Int16, bo: binary.BigEndian, shape: shape, times: 3, gzip: true}.write(t, t.TempDir())

	_, err := Open(p, Options{})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "dim[4]" || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Open without a time point: %v, want an unsupported dim[4] error", err)
	}
	im, got := mustRead(t, p, Options{HasTimePoint: true, TimePoint: 2})
	if im.TimePoints != 3 {
		t.Fatalf("TimePoints = %d", im.TimePoints)
	}
	if want := patternAt(storage.Int16, binary.LittleEndian, shape, 2); !bytes.Equal(got, want) {
		t.Fatal("time point 2 differs")
	}
	if _, err := Open(p, Options{HasTimePoint: true, TimePoint: 3}); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Fatalf("time point 3 of 3: %v", err)
	}
}

func TestOpen_nifti_unsupported(t *testing.T) {
	t.Parallel()
	le := binary.LittleEndian
	nifti2 := make([]byte, 540)
	le.PutUint32(nifti2, 540)
	for _, tc := range []struct {
		name, field string
		hdr         []byte
	}{
		{"nifti2", "sizeof_hdr", nifti2},
		{"float64", "datatype", niftiHeader(le, 64, 64, []int16{2, 2, 2}, [3]float32{1, 1, 1}, "n+1")},
		{"int8", "datatype", niftiHeader(le, 256, 8, []int16{2, 2, 2}, [3]float32{1, 1, 1}, "n+1")},
		{"5d", "dim[5]", niftiHeader(le, 2, 8, []int16{2, 2, 2, 1, 3}, [3]float32{1, 1, 1}, "n+1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.nii")
			writeFile(t, p, append(tc.hdr, make([]byte, 64)...), false)
			_, err := Open(p, Options{})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Open: %v, want unsupported field %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field) || !strings.Contains(err.Error(), "upported") {
				t.Fatalf("message %q does not name the field and what is supported", err)
			}
		})
	}
}

func TestOpen_nifti_malformed(t *testing.T) {
	t.Parallel()
	le := binary.LittleEndian
	badBitpix := niftiHeader(le, 512, 8, []int16{2, 2, 2}, [3]float32{1, 1, 1}, "n+1")
	zeroDim := niftiHeader(le, 2, 8, []int16{2, 0, 2}, [3]float32{1, 1, 1}, "n+1")
	badMagic := niftiHeader(le, 2, 8, []int16{2, 2, 2}, [3]float32{1, 1, 1}, "abc")
	badVox := niftiHeader(le, 2, 8, []int16{2, 2, 2}, [3]float32{1, 1, 1}, "n+1")
	le.PutUint32(badVox[offVoxOffset:], math.Float32bits(12))
	for _, tc := range []struct {
		name, field string
		hdr         []byte
	}{{"bitpix", "bitpix", badBitpix}, {"dim", "dim[2]", zeroDim}, {"magic", "magic", badMagic}, {"vox_offset", "vox_offset", badVox}} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.nii")
			writeFile(t, p, append(tc.hdr, make([]byte, 64)...), false)
			_, err := Open(p, Options{})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrFormat) {
				t.Fatalf("Open: %v, want malformed field %s", err, tc.field)
			}
		})
	}
	t.Run("not_a_volume", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "x.txt")
		writeFile(t, p, []byte(strings.Repeat("hello world\n", 40)), false)
		if _, err := Open(p, Options{}); !errors.Is(err, ErrFormat) {
			t.Fatalf("Open: %v, want ErrFormat", err)
		}
	})
}

func TestOpen_truncated(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 16, Y: 16, Z: 8}
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("nifti_gzip=%v", gz), func(t *testing.T) {
			dir := t.TempDir()
			p := niftiFile{dt: storage.Uint16, bo: binary.LittleEndian, shape: shape, gzip: gz}.write(t, dir)
			cut(t, p, 0.7)
			im, err := Open(p, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if _, err := im.ReadVoxels(); !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrFormat) {
				t.Fatalf("ReadVoxels of a truncated file: %v, want ErrTruncated", err)
			}
		})
		t.Run(fmt.Sprintf("nrrd_gzip=%v", gz), func(t *testing.T) {
			dir := t.TempDir()
			p := nrrdFile{dt: storage.Float32, bo: binary.BigEndian, shape: shape, gzip: gz}.write(t, dir)
			cut(t, p, 0.7)
			im, err := Open(p, Options{})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if _, err := im.ReadVoxels(); !errors.Is(err, ErrTruncated) {
				t.Fatalf("ReadVoxels of a truncated file: %v, want ErrTruncated", err)
			}
		})
	}
	t.Run("nifti_header", func(t *testing.T) {
		p := niftiFile{dt: storage.Uint8, bo: binary.BigEndian, shape: shape}.write(t, t.TempDir())
		if err := os.Truncate(p, 200); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(p, Options{}); !errors.Is(err, ErrTruncated) {
			t.Fatalf("Open of a cut header: %v, want ErrTruncated", err)
		}
	})
}

// cut truncates the file at path to frac of its size.
func cut(tb testing.TB, path string, frac float64) {
	tb.Helper()
	st, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(path, int64(float64(st.Size())*frac)); err != nil {
		tb.Fatal(err)
	}
}

var nrrdName = map[storage.DataType]string{storage.Uint8: "uchar", storage.Uint16: "unsigned short", storage.Int16: "int16", storage.Uint32: "uint", storage.Float32: "float"}

type nrrdFile struct {
	dt       storage.DataType
	bo       binary.ByteOrder
	shape    storage.Shape
	times    int
	gzip     bool
	detached bool
	extra    string // more header lines
	prefix   []byte // bytes before the voxels (for byte/line skip)
}

func (n nrrdFile) write(tb testing.TB, dir string) string {
	tb.Helper()
	times := max(n.times, 1)
	var hdr strings.Builder
	hdr.WriteString("NRRD0004\n# made by a test\n")
	fmt.Fprintf(&hdr, "type: %s\n", nrrdName[n.dt])
	sizes := fmt.Sprintf("%d %d %d", n.shape.X, n.shape.Y, n.shape.Z)
	dim := 3
	if n.times > 1 {
		sizes += fmt.Sprintf(" %d", n.times)
		dim = 4
	}
	fmt.Fprintf(&hdr, "dimension: %d\nsizes: %s\n", dim, sizes)
	fmt.Fprintf(&hdr, "endian: %s\n", boName(n.bo))
	enc := "raw"
	if n.gzip {
		enc = "gzip"
	}
	fmt.Fprintf(&hdr, "encoding: %s\nspace: left-posterior-superior\nmeta key:=meta value\n", enc)
	hdr.WriteString(n.extra)
	data := append(append([]byte{}, n.prefix...), pattern(n.dt, n.bo, n.shape, times)...)
	if n.detached {
		fmt.Fprintf(&hdr, "data file: vol.raw%s\n", map[bool]string{true: ".gz"}[n.gzip])
		p := filepath.Join(dir, "vol.nhdr")
		writeFile(tb, p, []byte(hdr.String()), false)
		writeFile(tb, filepath.Join(dir, "vol.raw"+map[bool]string{true: ".gz"}[n.gzip]), data, n.gzip)
		return p
	}
	hdr.WriteString("\n")
	if n.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(data)
		zw.Close()
		data = buf.Bytes()
	}
	p := filepath.Join(dir, "vol.nrrd")
	writeFile(tb, p, append([]byte(hdr.String()), data...), false)
	return p
}

func TestOpen_nrrd(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 6, Y: 5, Z: 4}
	for _, dt := range allTypes {
		for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, gz := range []bool{false, true} {
				for _, detached := range []bool{false, true} {
					name := fmt.Sprintf("%s_%s_gzip=%v_detached=%v", dt, boName(bo), gz, detached)
					t.Run(name, func(t *testing.T) {
						t.Parallel()
						p := nrrdFile{dt: dt, bo: bo, shape: shape, gzip: gz, detached: detached,
							extra: "space directions: (0.5,0,0) (0, 0.8, 0) (0,0,3)\n"}.write(t, t.TempDir())
						im, got := mustRead(t, p, Options{})
						wantBO := bo
						if dt == storage.Uint8 {
							wantBO = binary.LittleEndian // endian is irrelevant for one byte
						}
						if im.Format != FormatNRRD || im.Shape != shape || im.DataType != dt || im.ByteOrder != wantBO || im.Gzip != gz {
							t.Fatalf("header = %+v", im.Header)
						}
						if im.Spacing != [3]float64{0.5, 0.8, 3} {
							t.Fatalf("spacing = %v", im.Spacing)
						}
						if want := pattern(dt, binary.LittleEndian, shape, 1); !bytes.Equal(got, want) {
							t.Fatal("voxels differ")
						}
					})
				}
			}
		}
	}
}

func TestOpen_nrrd_skips(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 3, Y: 3, Z: 3}
	want := pattern(storage.Uint16, binary.LittleEndian, shape, 1)
	for _, tc := range []struct {
		name string
		f    nrrdFile
	}{
		{"byte_skip", nrrdFile{extra: "byte skip: 7\nspacings: 2 2 2\n", prefix: []byte("1234567")}},
		{"line_skip", nrrdFile{extra: "line skip: 2\n", prefix: []byte("first\nsecond\n")}},
		{"line_and_byte_skip_gzip", nrrdFile{gzip: true, extra: "line skip: 1\nbyte skip: 2\n", prefix: []byte("x\nab")}},
		{"byte_skip_end", nrrdFile{detached: true, extra: "byte skip: -1\n", prefix: []byte("a leading header of some other format")}},
		{"byte_skip_end_attached", nrrdFile{extra: "byte skip: -1\n", prefix: []byte("junk")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			f.dt, f.bo, f.shape = storage.Uint16, binary.BigEndian, shape
			_, got := mustRead(t, f.write(t, t.TempDir()), Options{})
			if !bytes.Equal(got, want) {
				t.Fatalf("voxels differ:\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestOpen_nrrd_4d(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 3, Y: 2, Z: 2}
	p := nrrdFile{dt: storage.Float32, bo: binary.LittleEndian, shape: shape, times: 4, gzip: true, extra: "kinds: domain domain domain time\n"}.write(t, t.TempDir())
	_, err := Open(p, Options{})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "sizes[3]" {
		t.Fatalf("Open without a time point: %v", err)
	}
	_, got := mustRead(t, p, Options{HasTimePoint: true, TimePoint: 1})
	if want := patternAt(storage.Float32, binary.LittleEndian, shape, 1); !bytes.Equal(got, want) {
		t.Fatal("time point 1 differs")
	}
}

func TestOpen_nrrd_unsupported(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, header, field string }{
		{"ascii", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: ascii\n\n", "encoding"},
		{"bzip2", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: bzip2\n\n", "encoding"},
		{"double", "NRRD0004\ntype: double\ndimension: 3\nsizes: 2 2 2\nencoding: raw\nendian: little\n\n", "type"},
		{"int8", "NRRD0004\ntype: signed char\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n", "type"},
		{"5d", "NRRD0004\ntype: uchar\ndimension: 5\nsizes: 2 2 2 2 2\nencoding: raw\n\n", "dimension"},
		{"vector_first", "NRRD0004\ntype: uchar\ndimension: 4\nsizes: 3 2 2 2\nkinds: RGB-color domain domain domain\nencoding: raw\n\n", "kinds[0]"},
		{"color_2d", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 3 2 2\nkinds: RGB-color domain domain\nencoding: raw\n\n", "kinds[0]"},
		{"data_file_list", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: LIST\n\n", "data file"},
		{"gzip_byte_skip_end", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: gzip\nbyte skip: -1\n\n", "byte skip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.nrrd")
			writeFile(t, p, []byte(tc.header+"01234567"), false)
			_, err := Open(p, Options{})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Open: %v, want unsupported field %q", err, tc.field)
			}
			if !strings.Contains(err.Error(), "supported") {
				t.Fatalf("message %q does not say what is supported", err)
			}
		})
	}
}

func TestOpen_nrrd_malformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, header, field string }{
		{"no_endian", "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n", "endian"},
		{"sizes_count", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2\nencoding: raw\n\n", "sizes"},
		{"zero_size", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 0 2\nencoding: raw\n\n", "sizes[1]"},
		{"no_type", "NRRD0004\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n", "type"},
		{"bad_magic", "NRRD0009\ntype: uchar\n\n", "magic"},
		{"no_blank_line", "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n", "header"},
		{"duplicate", "NRRD0004\ntype: uchar\ntype: uchar\n\n", "type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.nrrd")
			writeFile(t, p, []byte(tc.header), false)
			_, err := Open(p, Options{})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrFormat) {
				t.Fatalf("Open: %v, want malformed field %q", err, tc.field)
			}
		})
	}
	t.Run("missing_data_file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "x.nhdr")
		writeFile(t, p, []byte("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: gone.raw\n"), false)
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.ReadVoxels(); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("ReadVoxels: %v, want a missing-file error", err)
		}
	})
}

func TestOpen_raw(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 7, Y: 3, Z: 2}
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		for _, gz := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s_gzip=%v", boName(bo), gz), func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "v.raw")
				writeFile(t, p, append([]byte("hdr"), pattern(storage.Int16, bo, shape, 1)...), gz)
				im, err := OpenRaw(p, RawOptions{Shape: shape, DataType: storage.Int16, BigEndian: bo == binary.BigEndian, Offset: 3, Gzip: gz})
				if err != nil {
					t.Fatal(err)
				}
				got, err := im.ReadVoxels()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, pattern(storage.Int16, binary.LittleEndian, shape, 1)) || im.Spacing != [3]float64{1, 1, 1} {
					t.Fatal("voxels or spacing differ")
				}
			})
		}
	}
	p := filepath.Join(t.TempDir(), "short.raw")
	writeFile(t, p, make([]byte, 10), false)
	im, err := OpenRaw(p, RawOptions{Shape: shape, DataType: storage.Uint8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadVoxels(); !errors.Is(err, ErrTruncated) {
		t.Fatalf("ReadVoxels: %v, want ErrTruncated", err)
	}
}

// TestOpen_nrrd_sizeOverflow: sizes whose product overflows 64 bits must be
// rejected, not wrap to a small (here zero) volume.
func TestOpen_nrrd_sizeOverflow(t *testing.T) {
	t.Parallel()
	for _, sizes := range []string{"4194304 4194304 1048576", "2097152 2097152 2097152", "4294967295 4294967295 4294967295"} {
		p := filepath.Join(t.TempDir(), "x.nrrd")
		writeFile(t, p, []byte("NRRD0004\ntype: uchar\ndimension: 3\nsizes: "+sizes+"\nencoding: raw\n\n"), false)
		im, err := Open(p, Options{})
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("sizes %s: Open = %+v, %v; want ErrUnsupported", sizes, im, err)
		}
	}
	// The same for a 4D file whose time axis makes the total overflow.
	p := filepath.Join(t.TempDir(), "t.nrrd")
	writeFile(t, p, []byte("NRRD0004\ntype: uchar\ndimension: 4\nsizes: 1024 1024 1024 4294967295\nencoding: raw\nbyte skip: -1\n\n"), false)
	if im, err := Open(p, Options{HasTimePoint: true, TimePoint: 4294967294}); err == nil {
		if _, err := im.ReadVoxels(); !errors.Is(err, ErrTruncated) {
			t.Fatalf("ReadVoxels: %v, want ErrTruncated", err)
		}
	}
}

// TestReadVoxels_boundedAllocation: a small file whose header claims a large
// volume fails without allocating that volume.
func TestReadVoxels_boundedAllocation(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			dir := t.TempDir()
			// 512^3 uint32 = 512 MiB claimed, 64 bytes present.
			writeFile(t, filepath.Join(dir, "v.raw"), make([]byte, 64), gz)
			enc := "raw"
			if gz {
				enc = "gzip"
			}
			p := filepath.Join(dir, "v.nhdr")
			writeFile(t, p, []byte("NRRD0004\ntype: uint\ndimension: 3\nsizes: 512 512 512\nendian: little\nencoding: "+enc+"\ndata file: v.raw\n"), false)
			readTruncatedWithin(t, p, 256<<20, "for a 64-byte file")
		})
	}
}

// TestReadVoxels_moreDataThanDeclared: a header whose data type or shape
// does not match the voxels that follow (here uint16 voxels under a uint8
// header) is rejected, not imported as garbage; a 4D file's later time
// points are not extra data.
func TestReadVoxels_moreDataThanDeclared(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 4, Y: 3, Z: 2}
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		n := niftiFile{bo: binary.LittleEndian, dt: storage.Uint8, shape: shape, times: 1, gzip: gz}
		p := n.write(t, dir)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, p, append(b, pattern(storage.Uint8, binary.LittleEndian, shape, 1)...), gz)
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var fe *FieldError
		if _, err := im.ReadVoxels(); !errors.Is(err, ErrFormat) || !errors.As(err, &fe) || fe.Field != "dim" {
			t.Fatalf("gzip=%v: ReadVoxels: %v, want ErrFormat naming dim", gz, err)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "v.nrrd")
	writeFile(t, p, append([]byte("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 3 2\nencoding: raw\n\n"), make([]byte, 25)...), false)
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.ReadVoxels(); !errors.Is(err, ErrFormat) {
		t.Fatalf("nrrd: ReadVoxels: %v, want ErrFormat", err)
	}
}

// TestOpen_nrrd_longLine: a NRRD header line with no newline is rejected
// once it passes the header limit, without reading the rest into memory.
func TestOpen_nrrd_longLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.nrrd")
	writeFile(t, p, append([]byte("NRRD0004\ntype: "), bytes.Repeat([]byte("a"), 64<<20)...), false)
	var err error
	d := allocatedBy(func() { _, err = Open(p, Options{}) })
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "header" || !errors.Is(err, ErrFormat) {
		t.Fatalf("Open: %v, want a malformed header", err)
	}
	if d > 16<<20 {
		t.Fatalf("Open allocated %d MiB for the header", d>>20)
	}
}

// TestReadVoxels_lineSkipLongLine: a skipped line with no newline in the
// data (here 64 MiB of gzip-compressed zeros) is discarded as it is read,
// not held in memory, and the file is reported truncated.
func TestReadVoxels_lineSkipLongLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "v.raw.gz"), make([]byte, 64<<20), true)
	p := filepath.Join(dir, "v.nhdr")
	writeFile(t, p, []byte("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: gzip\nline skip: 1\ndata file: v.raw.gz\n"), false)
	readTruncatedWithin(t, p, 16<<20, "skipping one line")
}

// readTruncatedWithin opens the file at p and fails the test unless
// ReadVoxels reports ErrTruncated having allocated at most limit bytes
// (what names the case in the message).
func readTruncatedWithin(t *testing.T, p string, limit uint64, what string) {
	t.Helper()
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := allocatedBy(func() { _, err = im.ReadVoxels() })
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("ReadVoxels: %v, want ErrTruncated", err)
	}
	if d > limit {
		t.Fatalf("ReadVoxels allocated %d MiB %s", d>>20, what)
	}
}

// TestOpen_nifti_pairVoxOffset: in a .hdr/.img pair, vox_offset is where the
// voxels start in the .img (NIfTI-1 allows bytes before them there too).
func TestOpen_nifti_pairVoxOffset(t *testing.T) {
	t.Parallel()
	shape := storage.Shape{X: 5, Y: 4, Z: 3}
	for _, gz := range []bool{false, true} {
		dir := t.TempDir()
		hdr := niftiHeader(binary.BigEndian, niftiCode[storage.Int16], 16, []int16{5, 4, 3}, [3]float32{1, 1, 1}, "ni1")
		binary.BigEndian.PutUint32(hdr[offVoxOffset:], math.Float32bits(16))
		p := filepath.Join(dir, "vol.hdr")
		writeFile(t, p, hdr, false)
		writeFile(t, filepath.Join(dir, "vol.img"), append(bytes.Repeat([]byte{0xee}, 16), pattern(storage.Int16, binary.BigEndian, shape, 1)...), gz)
		_, got := mustRead(t, p, Options{})
		if !bytes.Equal(got, pattern(storage.Int16, binary.LittleEndian, shape, 1)) {
			t.Fatalf("gzip=%v: voxels differ: vox_offset was not applied in the .img", gz)
		}
	}
}

// allocatedBy returns the bytes fn allocates (the whole process's, so callers
// are not parallel tests).
func allocatedBy(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}
