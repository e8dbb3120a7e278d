package storage

import (
	"fmt"
	"strconv"
	"strings"
)

// Codec is how a volume's tiles are stored: every tile of a volume is in
// its codec. The store itself never looks inside a tile (its checksums
// cover the stored bytes); the layers above compress at ingest and decode
// where they need voxels. The zero Codec is raw, so volumes created
// before codecs existed read as raw.
type Codec struct {
	Kind CodecKind
	// Level is the zstd level (1..22, zstd's own scale) a zstd volume's
	// tiles are compressed with; 0 means DefaultZstdLevel. Raw volumes
	// have level 0.
	Level int
}

// CodecKind names a compression format.
type CodecKind uint8

const (
	// CodecRaw: a tile is the brick's voxels as they are.
	CodecRaw CodecKind = 0
	// CodecZstd: a tile is one Zstandard frame (RFC 8878) whose header
	// holds the content size, which is the brick's size in bytes.
	CodecZstd CodecKind = 1
)

// DefaultZstdLevel is the level of a zstd volume created without one.
const DefaultZstdLevel = 3

// MaxZstdLevel is the highest zstd level.
const MaxZstdLevel = 22

func (k CodecKind) String() string {
	switch k {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("CodecKind(%d)", k)
}

// String returns "raw" or "zstd:LEVEL", the form ParseCodec reads.
func (c Codec) String() string {
	if c.Kind == CodecZstd {
		return "zstd:" + strconv.Itoa(c.Level)
	}
	return c.Kind.String()
}

// ParseCodec parses "raw", "zstd" or "zstd:LEVEL" into a normalized codec.
func ParseCodec(s string) (Codec, error) {
	name, level, hasLevel := strings.Cut(s, ":")
	var c Codec
	switch name {
	case "raw":
		if hasLevel {
			return Codec{}, fmt.Errorf("%w: codec %q: raw takes no level (write raw or zstd:LEVEL)", ErrInvalidArgument, s)
		}
		return c, nil
	case "zstd":
		c.Kind = CodecZstd
		if hasLevel {
			n, err := strconv.Atoi(level)
			if err != nil || n < 1 {
				return Codec{}, fmt.Errorf("%w: codec %q: the zstd level must be a number from 1 to %d", ErrInvalidArgument, s, MaxZstdLevel)
			}
			c.Level = n
		}
	default:
		return Codec{}, fmt.Errorf("%w: codec %q (want raw, zstd or zstd:LEVEL)", ErrInvalidArgument, s)
	}
	if err := c.normalize(); err != nil {
		return Codec{}, err
	}
	return c, nil
}

// normalize fills the default zstd level and validates c.
func (c *Codec) normalize() error {
	switch c.Kind {
	case CodecRaw:
		if c.Level != 0 {
			return fmt.Errorf("%w: a raw volume has no codec level (got %d)", ErrInvalidArgument, c.Level)
		}
	case CodecZstd:
		if c.Level == 0 {
			c.Level = DefaultZstdLevel
		}
		if c.Level < 1 || c.Level > MaxZstdLevel {
			return fmt.Errorf("%w: zstd level %d (want 1 to %d)", ErrInvalidArgument, c.Level, MaxZstdLevel)
		}
	default:
		return fmt.Errorf("%w: codec %d (want raw or zstd)", ErrInvalidArgument, c.Kind)
	}
	return nil
}

// codecFromJSON decodes the codec fields of the meta file; absent fields
// (a volume written before codecs existed) give raw.
func codecFromJSON(name string, level int) (Codec, error) {
	switch name {
	case "", "raw":
		return Codec{Level: level}, nil
	case "zstd":
		return Codec{Kind: CodecZstd, Level: level}, nil
	}
	return Codec{}, fmt.Errorf("%w: codec %q", ErrInvalidArgument, name)
}

// codecJSONName is the meta file's name of c's kind: empty for raw, so a
// raw volume's meta file is byte for byte what it was before codecs.
func codecJSONName(c Codec) string {
	if c.Kind == CodecRaw {
		return ""
	}
	return c.Kind.String()
}

// zstdMagic is the first four bytes of a Zstandard frame.
var zstdMagic = [4]byte{0x28, 0xb5, 0x2f, 0xfd}

// zstdContentSize parses the header of the Zstandard frame b starts with
// (RFC 8878, 3.1.1) and returns the content size it declares; ok is false
// when b does not start with a frame header that declares one.
func zstdContentSize(b []byte) (size uint64, ok bool) {
	if len(b) < 5 || [4]byte(b[:4]) != zstdMagic {
		return 0, false
	}
	fhd := b[4]
	if fhd&0x08 != 0 { // reserved bit
		return 0, false
	}
	single := fhd&0x20 != 0
	at := 5
	if !single {
		at++ // window descriptor
	}
	at += [4]int{0, 1, 2, 4}[fhd&3] // dictionary id
	n := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		n = 1
	}
	if n == 0 || len(b) < at+n {
		return 0, false
	}
	var v [8]byte
	copy(v[:], b[at:at+n])
	size = le.Uint64(v[:])
	if n == 2 {
		size += 256
	}
	return size, true
}

// checkCodec returns an error wrapping ErrInvalidArgument unless every
// tile is in the codec of the volume m describes: for a zstd volume, a
// frame header that declares a content size, which is the brick's size for
// a brick. It looks at headers only (the layers above check whole frames
// when tiles arrive); it keeps raw bytes out of a zstd volume whatever path
// they take to the store.
func checkCodec(m *VolumeMeta, tiles []Tile) error {
	if m.Codec.Kind != CodecZstd {
		return nil
	}
	bs := m.BrickShape
	brick := uint64(bs.X) * uint64(bs.Y) * uint64(bs.Z) * uint64(m.DataType.Size())
	for i := range tiles {
		n, ok := zstdContentSize(tiles[i].Value)
		if !ok {
			return fmt.Errorf("%w: tile %d of a batch for zstd volume %q is not a zstd frame with its content size", ErrInvalidArgument, i, m.Name)
		}
		if tiles[i].HasKey && n != brick {
			return fmt.Errorf("%w: brick %v of zstd volume %q declares %d bytes of content, a brick has %d", ErrInvalidArgument, tiles[i].Key, m.Name, n, brick)
		}
	}
	return nil
}
