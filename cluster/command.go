package cluster

// Command encoding. Every Raft log entry of type LogCommand that go-ldm
// writes is one command. Integers are little-endian.
//
//	offset  width  field
//	0       1      command type (cmdAppend, cmdCreateVolume, cmdDeleteVolume)
//	1       ...    body, by type:
//
//	cmdAppend:
//	  2   volume name length N
//	  N   volume name
//	  4   tile count T
//	  T times:
//	    1   flags (bit 0: the tile has a brick key; bit 1: a request id)
//	    16  brick key lod, x, y, z (4 bytes each; present only with bit 0)
//	    1   request id length R (1..MaxRequestIDBytes; only with bit 1)
//	    R   request id (see dedup.go)
//	    4   CRC-32C of the value (0: not given by the writer)
//	    4   value length L
//	    L   value
//
//	cmdCreateVolume:
//	  rest  JSON of storage.VolumeMeta (CreatedAt already set by the leader,
//	        so every replica stores the same time)
//
//	cmdDeleteVolume:
//	  2   volume name length N
//	  N   volume name
//
// A decoder that meets another type byte fails with ErrUnknownCommand.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/xcheng85/go-ldm/storage"
)

// ErrUnknownCommand: a log entry carries a command type this version does
// not know. It is a bug (or a newer peer), never a silent no-op.
var ErrUnknownCommand = errors.New("unknown command type")

// errMalformed: a command's bytes do not parse.
var errMalformed = errors.New("malformed command")

type cmdType uint8

const (
	cmdAppend       cmdType = 1
	cmdCreateVolume cmdType = 2
	cmdDeleteVolume cmdType = 3
)

const (
	typeWidth     = 1
	nameLenWidth  = 2
	countWidth    = 4
	flagsWidth    = 1
	keyWidth      = 16
	crcWidth      = 4
	valueLenWidth = 4

	flagHasKey       = 1 << 0
	flagHasRequestID = 1 << 1
)

// command is a decoded log entry.
type command struct {
	typ    cmdType
	volume string
	tiles  []storage.Tile     // cmdAppend; values alias the entry's bytes
	ids    []string           // cmdAppend: request id per tile ("" none); nil when no tile has one
	meta   storage.VolumeMeta // cmdCreateVolume
}

func encodeAppend(volume string, tiles []storage.Tile) ([]byte, error) {
	return encodeAppendIDs(volume, tiles, nil)
}

// encodeAppendIDs encodes an append whose tile i carries request id ids[i]
// ("" for none); ids is nil or as long as tiles.
func encodeAppendIDs(volume string, tiles []storage.Tile, ids []string) ([]byte, error) {
	if len(volume) > 0xffff {
		return nil, fmt.Errorf("%w: volume name of %d bytes", storage.ErrInvalidName, len(volume))
	}
	if ids != nil && len(ids) != len(tiles) {
		return nil, fmt.Errorf("%w: %d request ids for %d tiles", storage.ErrInvalidArgument, len(ids), len(tiles))
	}
	n := typeWidth + nameLenWidth + len(volume) + countWidth
	for i := range tiles {
		n += flagsWidth + crcWidth + valueLenWidth + len(tiles[i].Value)
		if tiles[i].HasKey {
			n += keyWidth
		}
		if ids != nil && ids[i] != "" {
			if err := validRequestID(ids[i]); err != nil {
				return nil, err
			}
			n += 1 + len(ids[i])
		}
	}
	b := make([]byte, 0, n)
	b = append(b, byte(cmdAppend))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(volume)))
	b = append(b, volume...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(tiles)))
	for i := range tiles {
		t := &tiles[i]
		var flags byte
		if t.HasKey {
			flags |= flagHasKey
		}
		hasID := ids != nil && ids[i] != ""
		if hasID {
			flags |= flagHasRequestID
		}
		b = append(b, flags)
		if t.HasKey {
			b = binary.LittleEndian.AppendUint32(b, t.Key.LOD)
			b = binary.LittleEndian.AppendUint32(b, t.Key.X)
			b = binary.LittleEndian.AppendUint32(b, t.Key.Y)
			b = binary.LittleEndian.AppendUint32(b, t.Key.Z)
		}
		if hasID {
			b = append(b, byte(len(ids[i])))
			b = append(b, ids[i]...)
		}
		b = binary.LittleEndian.AppendUint32(b, t.CRC32C)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Value)))
		b = append(b, t.Value...)
	}
	return b, nil
}

func encodeCreate(m storage.VolumeMeta) ([]byte, error) {
	js, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode volume %q: %w", m.Name, err)
	}
	return append([]byte{byte(cmdCreateVolume)}, js...), nil
}

func encodeDelete(volume string) ([]byte, error) {
	if len(volume) > 0xffff {
		return nil, fmt.Errorf("%w: volume name of %d bytes", storage.ErrInvalidName, len(volume))
	}
	b := make([]byte, 0, typeWidth+nameLenWidth+len(volume))
	b = append(b, byte(cmdDeleteVolume))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(volume)))
	return append(b, volume...), nil
}

// decoder reads fixed-width fields and remembers the first short read.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = fmt.Errorf("%w: need %d bytes, have %d", errMalformed, n, len(d.b))
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func decodeCommand(b []byte) (command, error) {
	if len(b) < typeWidth {
		return command{}, fmt.Errorf("%w: empty entry", errMalformed)
	}
	c := command{typ: cmdType(b[0])}
	d := decoder{b: b[typeWidth:]}
	switch c.typ {
	case cmdAppend:
		c.volume = string(d.take(int(d.u16())))
		count := d.u32()
		if d.err == nil && uint64(count) > uint64(len(d.b)) {
			return command{}, fmt.Errorf("%w: %d tiles in %d bytes", errMalformed, count, len(d.b))
		}
		c.tiles = make([]storage.Tile, 0, count)
		for i := uint32(0); i < count && d.err == nil; i++ {
			var t storage.Tile
			flags := d.take(flagsWidth)
			if flags != nil && flags[0]&^(flagHasKey|flagHasRequestID) != 0 {
				return command{}, fmt.Errorf("%w: tile %d has unknown flags %#x", errMalformed, i, flags[0])
			}
			if flags != nil && flags[0]&flagHasKey != 0 {
				t.HasKey = true
				t.Key = storage.BrickKey{LOD: d.u32(), X: d.u32(), Y: d.u32(), Z: d.u32()}
			}
			if flags != nil && flags[0]&flagHasRequestID != 0 {
				if c.ids == nil {
					c.ids = make([]string, i, count)
				}
				var idLen int
				if p := d.take(1); p != nil {
					idLen = int(p[0])
				}
				if d.err == nil && (idLen == 0 || idLen > MaxRequestIDBytes) {
					return command{}, fmt.Errorf("%w: tile %d: request id of %d bytes", errMalformed, i, idLen)
				}
				c.ids = append(c.ids, string(d.take(idLen)))
			} else if c.ids != nil {
				c.ids = append(c.ids, "")
			}
			t.CRC32C = d.u32()
			t.Value = d.take(int(d.u32()))
			c.tiles = append(c.tiles, t)
		}
	case cmdCreateVolume:
		if err := json.Unmarshal(d.b, &c.meta); err != nil {
			return command{}, fmt.Errorf("%w: volume: %v", errMalformed, err)
		}
		c.volume = c.meta.Name
		d.b = nil
	case cmdDeleteVolume:
		c.volume = string(d.take(int(d.u16())))
	default:
		return command{}, fmt.Errorf("%w: %d", ErrUnknownCommand, b[0])
	}
	if d.err != nil {
		return command{}, d.err
	}
	if len(d.b) != 0 {
		return command{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	return c, nil
}
