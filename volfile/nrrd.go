package volfile

// NRRD (https://teem.sourceforge.net/nrrd/format.html) is a text header
// followed by the voxels:
//
//	NRRD0004                    magic and version (NRRD0001..NRRD0005)
//	# comment
//	field: value                one field per line (type, dimension, sizes, ...)
//	key:=value                  free key/value pairs (ignored)
//	<blank line>                end of header; attached voxels follow
//
// With a "data file" field the voxels live in that file (a detached .nhdr
// header), and the header may end at the end of the file. "line skip" lines
// and then "byte skip" bytes precede the voxels, counted in the decompressed
// data for gzip encoding; "byte skip: -1" (raw only) means the voxels are the
// last bytes of the data file. Axis 0 is the fastest.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/xcheng85/go-ldm/storage"
)

const (
	maxNRRDHeaderBytes = 1 << 20
	nrrdSupportedTypes = "supported: uchar/uint8, short/int16, ushort/uint16, uint/uint32, float"
)

// nrrdTypes maps NRRD type names to voxel types.
var nrrdTypes = map[string]storage.DataType{}

func init() {
	add := func(d storage.DataType, names ...string) {
		for _, n := range names {
			nrrdTypes[n] = d
		}
	}
	add(storage.Uint8, "uchar", "unsigned char", "uint8", "uint8_t")
	add(storage.Int16, "short", "short int", "signed short", "signed short int", "int16", "int16_t")
	add(storage.Uint16, "ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t")
	add(storage.Uint32, "uint", "unsigned int", "uint32", "uint32_t")
	add(storage.Float32, "float")
}

// nrrdSpatialKinds are the "kinds" values of a spatial axis.
var nrrdSpatialKinds = map[string]bool{"domain": true, "space": true, "???": true, "none": true}

// parseNRRD reads a NRRD header from the start of the file at path.
func parseNRRD(r *bufio.Reader, path string) (Header, error) {
	h, n, err := ParseNRRDHeader(r)
	if err != nil {
		return Header{}, err
	}
	if h.DataFile != "" {
		if !filepath.IsAbs(h.DataFile) {
			h.DataFile = filepath.Join(filepath.Dir(path), h.DataFile)
		}
	} else {
		h.fileOffset = n
	}
	if h.skipToEnd {
		h.fileOffset = 0
	}
	return h, nil
}

// ParseNRRDHeader parses a NRRD header from r and returns it with the number
// of bytes it occupies (the offset of attached data). A "data file" field is
// returned as written (relative to the header's directory).
func ParseNRRDHeader(r *bufio.Reader) (Header, int64, error) {
	const f = FormatNRRD
	var consumed int64
	// readLine reads one line, never buffering more than the header limit
	// (ReadString would hold a whole newline-free file in memory).
	readLine := func() (string, bool, error) {
		var line []byte
		var err error
		for {
			var frag []byte
			frag, err = r.ReadSlice('\n')
			consumed += int64(len(frag))
			if consumed > maxNRRDHeaderBytes {
				return "", false, malformed(f, "header", fmt.Sprintf("over %d bytes", maxNRRDHeaderBytes), "no blank line ends the header")
			}
			line = append(line, frag...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err == io.EOF {
			return strings.TrimRight(string(line), "\r\n"), len(line) == 0, nil
		}
		if err != nil {
			return "", false, err
		}
		return strings.TrimRight(string(line), "\r\n"), false, nil
	}
	magic, eof, err := readLine()
	if err != nil {
		return Header{}, 0, err
	}
	if eof || len(magic) != 8 || !strings.HasPrefix(magic, "NRRD000") || magic[7] < '1' || magic[7] > '5' {
		return Header{}, 0, malformed(f, "magic", strconv.Quote(magic), "want NRRD0001..NRRD0005")
	}
	fields := map[string]string{}
	ended := false // a blank line ended the header
	for {
		line, eof, err := readLine()
		if err != nil {
			return Header{}, 0, err
		}
		if eof {
			break
		}
		if line == "" {
			ended = true
			break
		}
		if strings.HasPrefix(line, "#") || strings.Contains(line, ":=") {
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			return Header{}, 0, malformed(f, "header line", strconv.Quote(line), `want "field: value"`)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if k == "datafile" {
			k = "data file"
		}
		if _, dup := fields[k]; dup {
			return Header{}, 0, malformed(f, k, strconv.Quote(v), "the field appears twice")
		}
		fields[k] = strings.TrimSpace(v)
	}
	h := Header{Format: f, TimePoints: 1, ByteOrder: binary.LittleEndian}

	tname, ok := fields["type"]
	if !ok {
		return Header{}, 0, malformed(f, "type", "missing", "the field is required")
	}
	dt, ok := nrrdTypes[strings.ToLower(tname)]
	if !ok {
		return Header{}, 0, unsupported(f, "type", strconv.Quote(tname), nrrdSupportedTypes)
	}
	h.DataType = dt

	dimS, ok := fields["dimension"]
	if !ok {
		return Header{}, 0, malformed(f, "dimension", "missing", "the field is required")
	}
	dim, err := strconv.Atoi(dimS)
	if err != nil || dim < 1 {
		return Header{}, 0, malformed(f, "dimension", strconv.Quote(dimS), "want a positive integer")
	}
	if dim > 4 {
		return Header{}, 0, unsupported(f, "dimension", dimS, "supported: 1 to 3 spatial axes, plus one time axis last")
	}
	sizesS, ok := fields["sizes"]
	if !ok {
		return Header{}, 0, malformed(f, "sizes", "missing", "the field is required")
	}
	sz := strings.Fields(sizesS)
	if len(sz) != dim {
		return Header{}, 0, malformed(f, "sizes", strconv.Quote(sizesS), fmt.Sprintf("want %d sizes (dimension)", dim))
	}
	sizes := [4]int64{1, 1, 1, 1}
	for i, s := range sz {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 1 || v > math.MaxUint32 {
			return Header{}, 0, malformed(f, fmt.Sprintf("sizes[%d]", i), strconv.Quote(s), "want 1..4294967295")
		}
		sizes[i] = v
	}
	// Every axis but a fourth must be spatial: a colour or vector axis
	// (e.g. "RGB-color domain domain") is not a volume axis.
	if kinds, ok := fields["kinds"]; ok {
		ks := strings.Fields(kinds)
		if len(ks) == dim {
			for i := 0; i < dim && i < 3; i++ {
				if !nrrdSpatialKinds[strings.ToLower(ks[i])] {
					return Header{}, 0, unsupported(f, fmt.Sprintf("kinds[%d]", i), strconv.Quote(ks[i]),
						"supported: up to three spatial axes (domain/space) first and, in 4D, a non-spatial axis (time, list, ...) last")
				}
			}
		}
	}
	if dim == 4 {
		h.TimePoints = uint32(sizes[3])
	}
	if h.Shape, err = checkShape(f, "sizes", [3]int64{sizes[0], sizes[1], sizes[2]}); err != nil {
		return Header{}, 0, err
	}

	h.Spacing = [3]float64{1, 1, 1}
	if sp, ok := fields["spacings"]; ok {
		for i, s := range strings.Fields(sp) {
			if i < 3 {
				v, err := strconv.ParseFloat(s, 64)
				if err != nil && strings.ToLower(s) != "nan" {
					return Header{}, 0, malformed(f, "spacings", strconv.Quote(sp), "want numbers")
				}
				h.Spacing[i] = cleanSpacing(v)
			}
		}
	} else if sd, ok := fields["space directions"]; ok {
		vecs, err := parseDirections(sd)
		if err != nil {
			return Header{}, 0, malformed(f, "space directions", strconv.Quote(sd), err.Error())
		}
		for i := 0; i < 3 && i < len(vecs); i++ {
			if vecs[i] != nil {
				var s float64
				for _, c := range vecs[i] {
					s += c * c
				}
				h.Spacing[i] = cleanSpacing(math.Sqrt(s))
			}
		}
	}

	if err := nrrdTransform(&h, fields, dim); err != nil {
		return Header{}, 0, err
	}

	enc, ok := fields["encoding"]
	if !ok {
		return Header{}, 0, malformed(f, "encoding", "missing", "the field is required")
	}
	switch strings.ToLower(enc) {
	case "raw":
	case "gzip", "gz":
		h.Gzip = true
	default:
		return Header{}, 0, unsupported(f, "encoding", strconv.Quote(enc), "supported: raw, gzip")
	}

	if dt.Size() > 1 {
		e, ok := fields["endian"]
		switch {
		case !ok:
			return Header{}, 0, malformed(f, "endian", "missing", "required for multi-byte types: little or big")
		case e == "little":
		case e == "big":
			h.ByteOrder = binary.BigEndian
		default:
			return Header{}, 0, malformed(f, "endian", strconv.Quote(e), "want little or big")
		}
	}

	if s, ok := fields["line skip"]; ok {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 1<<20 {
			return Header{}, 0, malformed(f, "line skip", strconv.Quote(s), "want 0 or more")
		}
		h.lineSkip = v
	}
	if s, ok := fields["byte skip"]; ok {
		v, err := strconv.ParseInt(s, 10, 64)
		switch {
		case err == nil && v == -1 && !h.Gzip:
			h.skipToEnd = true
		case err == nil && v == -1:
			return Header{}, 0, unsupported(f, "byte skip", "-1", "supported with raw encoding only")
		case err != nil || v < 0 || v > 1<<40:
			return Header{}, 0, malformed(f, "byte skip", strconv.Quote(s), "want -1 or more")
		default:
			h.dataOffset = v
		}
	}

	if df, ok := fields["data file"]; ok {
		if strings.HasPrefix(df, "LIST") || strings.Contains(df, "%") || len(strings.Fields(df)) > 1 {
			return Header{}, 0, unsupported(f, "data file", strconv.Quote(df), "supported: one data file")
		}
		h.DataFile = df
	} else if !ended {
		return Header{}, 0, malformed(f, "header", "no blank line", "attached data must follow a blank line")
	}
	return h, consumed, nil
}

// parseDirections parses "(1,0,0) (0,1,0) none" into vectors (nil for none).
func parseDirections(s string) ([][]float64, error) {
	var out [][]float64
	for rest := strings.TrimSpace(s); rest != ""; rest = strings.TrimSpace(rest) {
		if strings.HasPrefix(rest, "none") {
			out = append(out, nil)
			rest = rest[4:]
			continue
		}
		if rest[0] != '(' {
			return nil, fmt.Errorf("want (x,y,z) vectors or none")
		}
		end := strings.IndexByte(rest, ')')
		if end < 0 {
			return nil, fmt.Errorf("unclosed vector")
		}
		var v []float64
		for _, c := range strings.Split(rest[1:end], ",") {
			x, err := strconv.ParseFloat(strings.TrimSpace(c), 64)
			if err != nil {
				return nil, fmt.Errorf("bad number %q", c)
			}
			v = append(v, x)
		}
		out = append(out, v)
		rest = rest[end+1:]
		if len(out) > 16 {
			return nil, fmt.Errorf("too many vectors")
		}
	}
	return out, nil
}
