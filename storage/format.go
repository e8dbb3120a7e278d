package storage

// On-disk format of the file store. All integers are little-endian. Every
// checksum is CRC-32C (Castagnoli). Widths below are in bytes.
//
// Block data file "<base>.data" (base = offset of its first tile, 20
// decimal digits):
//
//	header, dataHeaderLen = 32 bytes:
//	  0  magic        4  "LDMD"
//	  4  version      4  formatVersion (1)
//	  8  base offset  8  offset of the block's first tile
//	 16  reserved    12  zero
//	 28  header crc   4  CRC-32C of bytes 0..28
//	then records back to back, each recordHeaderLen = 48 bytes + value. The
//	record header holds everything the tile's index entry holds, so the
//	data file alone is the durable record and the index can be rebuilt
//	from it:
//	  0  offset       8  the tile's offset in the volume's log
//	  8  length       4  value length in bytes
//	 12  value crc    4  CRC-32C of the value
//	 16  flags        4  bit 0: the tile has a brick key
//	 20  lod          4  brick key (zero when bit 0 is clear)
//	 24  x            4
//	 28  y            4
//	 32  z            4
//	 36  repl index   8  replication (Raft) index that wrote the tile
//	 44  header crc   4  CRC-32C of bytes 0..44
//	 48  value        length bytes
//
// Block index file "<base>.index", memory-mapped read-only:
//
//	header, indexHeaderLen = 32 bytes:
//	  0  magic        4  "LDMI"
//	  4  version      4  formatVersion (1)
//	  8  base offset  8  same as the data file's
//	 16  entry size   4  indexEntryLen (48)
//	 20  reserved     8  zero
//	 28  header crc   4  CRC-32C of bytes 0..28
//	then one entry per tile, indexEntryLen = 48 bytes; entry i is tile base+i:
//	  0  position     8  byte position of the tile's record in the data file
//	  8  length       4  value length
//	 12  value crc    4  CRC-32C of the value
//	 16  flags        4  bit 0: the tile has a brick key
//	 20  lod          4  brick key (zero when bit 0 is clear)
//	 24  x            4
//	 28  y            4
//	 32  z            4
//	 36  repl index   8  replication (Raft) index that wrote the tile
//	 44  entry crc    4  CRC-32C of bytes 0..44
//
// Volume metadata file "meta":
//
//	  0  magic        4  "LDMV"
//	  4  version      4  formatVersion (1)
//	  8  length       4  payload length
//	 12  payload crc  4  CRC-32C of the payload
//	 16  payload      length bytes of JSON (metaJSON); its codec fields
//	                  are absent for raw volumes, so files written before
//	                  codecs existed read as raw
//
// Applied-index marker ".applied" in the store directory,
// appliedLen = 24 bytes:
//
//	  0  magic        4  "LDMA"
//	  4  version      4  formatVersion (1)
//	  8  index        8  replication index
//	 16  reserved     4  zero
//	 20  crc          4  CRC-32C of bytes 0..20

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

const (
	formatVersion = 1

	magicLen   = 4
	versionLen = 4
	crcLen     = 4

	dataHeaderLen   = 32
	recordHeaderLen = 48
	indexHeaderLen  = 32
	indexEntryLen   = 48
	metaHeaderLen   = 16
	appliedLen      = 24

	// maxMetaPayload bounds the metadata JSON a decoder accepts.
	maxMetaPayload = 1 << 20

	flagHasKey = 1
)

var (
	magicData    = [magicLen]byte{'L', 'D', 'M', 'D'}
	magicIndex   = [magicLen]byte{'L', 'D', 'M', 'I'}
	magicMeta    = [magicLen]byte{'L', 'D', 'M', 'V'}
	magicApplied = [magicLen]byte{'L', 'D', 'M', 'A'}
)

var le = binary.LittleEndian

// blockHeader is the decoded header of a data or index file.
type blockHeader struct {
	Base uint64
}

func encodeBlockHeader(magic [magicLen]byte, base uint64) []byte {
	b := make([]byte, dataHeaderLen) // dataHeaderLen == indexHeaderLen
	copy(b, magic[:])
	le.PutUint32(b[4:], formatVersion)
	le.PutUint64(b[8:], base)
	if magic == magicIndex {
		le.PutUint32(b[16:], indexEntryLen)
	}
	le.PutUint32(b[28:], Checksum(b[:28]))
	return b
}

func decodeBlockHeader(magic [magicLen]byte, b []byte) (blockHeader, error) {
	if len(b) < dataHeaderLen {
		return blockHeader{}, fmt.Errorf("block header of %d bytes, want %d: %w", len(b), dataHeaderLen, ErrCorrupt)
	}
	if [magicLen]byte(b[:magicLen]) != magic {
		return blockHeader{}, fmt.Errorf("block header magic %q, want %q: %w", b[:magicLen], magic[:], ErrCorrupt)
	}
	if got := le.Uint32(b[28:]); got != Checksum(b[:28]) {
		return blockHeader{}, fmt.Errorf("block header checksum %08x does not match: %w", got, ErrCorrupt)
	}
	if v := le.Uint32(b[4:]); v != formatVersion {
		return blockHeader{}, fmt.Errorf("block format version %d, want %d: %w", v, formatVersion, ErrCorrupt)
	}
	if magic == magicIndex {
		if w := le.Uint32(b[16:]); w != indexEntryLen {
			return blockHeader{}, fmt.Errorf("index entry size %d, want %d: %w", w, indexEntryLen, ErrCorrupt)
		}
	}
	return blockHeader{Base: le.Uint64(b[8:])}, nil
}

// recordHeader is the decoded header of one record in a data file.
type recordHeader struct {
	Offset uint64
	Length uint32
	CRC    uint32
	HasKey bool
	Key    BrickKey
	Index  uint64
}

// entry returns the index entry of a record that starts at pos.
func (h recordHeader) entry(pos int64) indexEntry {
	return indexEntry{Pos: pos, Length: h.Length, CRC: h.CRC, HasKey: h.HasKey, Key: h.Key, Index: h.Index}
}

// Record headers and index entries share one 48-byte layout and differ
// only in their first field: the tile's offset or the record's position.
func putTileFields(b []byte, first uint64, length, crc uint32, hasKey bool, key BrickKey, index uint64) {
	le.PutUint64(b[0:], first)
	le.PutUint32(b[8:], length)
	le.PutUint32(b[12:], crc)
	var flags uint32
	if hasKey {
		flags = flagHasKey
	} else {
		key = BrickKey{}
	}
	le.PutUint32(b[16:], flags)
	le.PutUint32(b[20:], key.LOD)
	le.PutUint32(b[24:], key.X)
	le.PutUint32(b[28:], key.Y)
	le.PutUint32(b[32:], key.Z)
	le.PutUint64(b[36:], index)
	le.PutUint32(b[44:], Checksum(b[:44]))
}

func decodeTileFields(what string, b []byte) (first uint64, h recordHeader, err error) {
	if len(b) < indexEntryLen {
		return 0, h, fmt.Errorf("%s of %d bytes, want %d: %w", what, len(b), indexEntryLen, ErrCorrupt)
	}
	if got := le.Uint32(b[44:]); got != Checksum(b[:44]) {
		return 0, h, fmt.Errorf("%s checksum %08x does not match: %w", what, got, ErrCorrupt)
	}
	flags := le.Uint32(b[16:])
	if flags&^flagHasKey != 0 {
		return 0, h, fmt.Errorf("%s flags %#x: %w", what, flags, ErrCorrupt)
	}
	h = recordHeader{
		Length: le.Uint32(b[8:]),
		CRC:    le.Uint32(b[12:]),
		HasKey: flags&flagHasKey != 0,
		Index:  le.Uint64(b[36:]),
	}
	if h.HasKey {
		h.Key = BrickKey{LOD: le.Uint32(b[20:]), X: le.Uint32(b[24:]), Y: le.Uint32(b[28:]), Z: le.Uint32(b[32:])}
	} else if le.Uint64(b[20:]) != 0 || le.Uint64(b[28:]) != 0 {
		return 0, h, fmt.Errorf("%s has a brick key but no key flag: %w", what, ErrCorrupt)
	}
	return le.Uint64(b[0:]), h, nil
}

func putRecordHeader(b []byte, h recordHeader) {
	putTileFields(b, h.Offset, h.Length, h.CRC, h.HasKey, h.Key, h.Index)
}

func decodeRecordHeader(b []byte) (recordHeader, error) {
	off, h, err := decodeTileFields("record header", b)
	h.Offset = off
	return h, err
}

// indexEntry is the decoded form of one index entry.
type indexEntry struct {
	Pos    int64
	Length uint32
	CRC    uint32
	HasKey bool
	Key    BrickKey
	Index  uint64
}

// matches reports whether a record header describes the same tile as e.
func (e indexEntry) matches(h recordHeader, offset uint64) bool {
	return h.Offset == offset && h.Length == e.Length && h.CRC == e.CRC && h.HasKey == e.HasKey && h.Key == e.Key && h.Index == e.Index
}

func putIndexEntry(b []byte, e indexEntry) {
	putTileFields(b, uint64(e.Pos), e.Length, e.CRC, e.HasKey, e.Key, e.Index)
}

func decodeIndexEntry(b []byte) (indexEntry, error) {
	pos, h, err := decodeTileFields("index entry", b)
	if err != nil {
		return indexEntry{}, err
	}
	if pos < dataHeaderLen || pos > 1<<62 {
		return indexEntry{}, fmt.Errorf("index entry position %d: %w", pos, ErrCorrupt)
	}
	return h.entry(int64(pos)), nil
}

// metaJSON is the stable JSON form of VolumeMeta in the meta file.
type metaJSON struct {
	Name       string            `json:"name"`
	Shape      [3]uint32         `json:"shape"`
	DataType   uint8             `json:"data_type"`
	BrickShape [3]uint32         `json:"brick_shape"`
	LODCount   uint32            `json:"lod_count"`
	Spacing    []float64         `json:"spacing,omitempty"`
	Transform  []float64         `json:"transform,omitempty"`
	Space      string            `json:"space,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Codec and CodecLevel are absent in volumes written before codecs
	// existed, which read as raw.
	Codec      string    `json:"codec,omitempty"`
	CodecLevel int       `json:"codec_level,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	Index      uint64    `json:"index"`
}

func encodeMeta(m VolumeMeta) ([]byte, error) {
	payload, err := json.Marshal(metaJSON{
		Name:       m.Name,
		Shape:      [3]uint32{m.Shape.X, m.Shape.Y, m.Shape.Z},
		DataType:   uint8(m.DataType),
		BrickShape: [3]uint32{m.BrickShape.X, m.BrickShape.Y, m.BrickShape.Z},
		LODCount:   m.LODCount,
		Spacing:    m.Spacing,
		Transform:  m.Transform,
		Space:      string(m.Space),
		Labels:     m.Labels,
		CreatedAt:  m.CreatedAt,
		Index:      m.Index,
		Codec:      codecJSONName(m.Codec),
		CodecLevel: m.Codec.Level,
	})
	if err != nil {
		// Only a NaN or infinite spacing fails to encode.
		return nil, fmt.Errorf("%w: volume metadata: %v", ErrInvalidArgument, err)
	}
	b := make([]byte, metaHeaderLen+len(payload))
	copy(b, magicMeta[:])
	le.PutUint32(b[4:], formatVersion)
	le.PutUint32(b[8:], uint32(len(payload)))
	le.PutUint32(b[12:], Checksum(payload))
	copy(b[metaHeaderLen:], payload)
	return b, nil
}

func decodeMeta(b []byte) (VolumeMeta, error) {
	if len(b) < metaHeaderLen {
		return VolumeMeta{}, fmt.Errorf("meta file of %d bytes: %w", len(b), ErrCorrupt)
	}
	if [magicLen]byte(b[:magicLen]) != magicMeta {
		return VolumeMeta{}, fmt.Errorf("meta magic %q: %w", b[:magicLen], ErrCorrupt)
	}
	if v := le.Uint32(b[4:]); v != formatVersion {
		return VolumeMeta{}, fmt.Errorf("meta format version %d: %w", v, ErrCorrupt)
	}
	n := le.Uint32(b[8:])
	if n > maxMetaPayload || int(n) != len(b)-metaHeaderLen {
		return VolumeMeta{}, fmt.Errorf("meta payload length %d, file has %d: %w", n, len(b)-metaHeaderLen, ErrCorrupt)
	}
	payload := b[metaHeaderLen:]
	if got := le.Uint32(b[12:]); got != Checksum(payload) {
		return VolumeMeta{}, fmt.Errorf("meta checksum %08x does not match: %w", got, ErrCorrupt)
	}
	var j metaJSON
	if err := json.Unmarshal(payload, &j); err != nil {
		return VolumeMeta{}, fmt.Errorf("meta payload: %v: %w", err, ErrCorrupt)
	}
	codec, err := codecFromJSON(j.Codec, j.CodecLevel)
	if err != nil {
		return VolumeMeta{}, fmt.Errorf("meta: %v: %w", err, ErrCorrupt)
	}
	m := VolumeMeta{
		Name:       j.Name,
		Shape:      Shape{j.Shape[0], j.Shape[1], j.Shape[2]},
		DataType:   DataType(j.DataType),
		BrickShape: Shape{j.BrickShape[0], j.BrickShape[1], j.BrickShape[2]},
		LODCount:   j.LODCount,
		Spacing:    j.Spacing,
		Transform:  j.Transform,
		Space:      Space(j.Space),
		Labels:     j.Labels,
		Codec:      codec,
		CreatedAt:  j.CreatedAt,
		Index:      j.Index,
	}
	if m.Labels == nil {
		m.Labels = map[string]string{}
	}
	if err := m.Normalize(); err != nil {
		return VolumeMeta{}, fmt.Errorf("meta: %v: %w", err, ErrCorrupt)
	}
	return m, nil
}

func encodeApplied(idx uint64) []byte {
	b := make([]byte, appliedLen)
	copy(b, magicApplied[:])
	le.PutUint32(b[4:], formatVersion)
	le.PutUint64(b[8:], idx)
	le.PutUint32(b[20:], Checksum(b[:20]))
	return b
}

func decodeApplied(b []byte) (uint64, error) {
	if len(b) != appliedLen || [magicLen]byte(b[:magicLen]) != magicApplied {
		return 0, fmt.Errorf("applied marker of %d bytes: %w", len(b), ErrCorrupt)
	}
	if le.Uint32(b[20:]) != Checksum(b[:20]) || le.Uint32(b[4:]) != formatVersion {
		return 0, fmt.Errorf("applied marker checksum or version: %w", ErrCorrupt)
	}
	return le.Uint64(b[8:]), nil
}

// decodeIndexFile decodes a whole index file: the header and every whole,
// well-formed entry. It stops at the first entry that fails its checksum
// and returns the entries before it with an error wrapping ErrCorrupt;
// trailing bytes shorter than an entry are ignored.
func decodeIndexFile(b []byte) (blockHeader, []indexEntry, error) {
	h, err := decodeBlockHeader(magicIndex, b)
	if err != nil {
		return blockHeader{}, nil, err
	}
	n := (len(b) - indexHeaderLen) / indexEntryLen
	out := make([]indexEntry, 0, n)
	for i := range n {
		at := indexHeaderLen + i*indexEntryLen
		e, err := decodeIndexEntry(b[at : at+indexEntryLen])
		if err != nil {
			return h, out, fmt.Errorf("entry %d: %w", i, err)
		}
		out = append(out, e)
	}
	return h, out, nil
}

// decodeDataFile decodes a whole data file: the header and every record
// whose header and value checksums hold and whose offsets follow the
// block's base in order. It stops at the first bad record and returns the
// records before it with an error wrapping ErrCorrupt.
func decodeDataFile(b []byte) (blockHeader, []recordHeader, error) {
	h, err := decodeBlockHeader(magicData, b)
	if err != nil {
		return blockHeader{}, nil, err
	}
	var out []recordHeader
	pos := dataHeaderLen
	for pos < len(b) {
		r, err := decodeRecordHeader(b[pos:])
		if err != nil {
			return h, out, fmt.Errorf("record at %d: %w", pos, err)
		}
		if want := h.Base + uint64(len(out)); r.Offset != want {
			return h, out, fmt.Errorf("record at %d has offset %d, want %d: %w", pos, r.Offset, want, ErrCorrupt)
		}
		end := pos + recordHeaderLen + int(r.Length)
		if end > len(b) || end < pos {
			return h, out, fmt.Errorf("record at %d runs past the end: %w", pos, ErrCorrupt)
		}
		if Checksum(b[pos+recordHeaderLen:end]) != r.CRC {
			return h, out, fmt.Errorf("record at %d: value checksum: %w", pos, ErrCorrupt)
		}
		out = append(out, r)
		pos = end
	}
	return h, out, nil
}
