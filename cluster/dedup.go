package cluster

// Deduplication of writes by client request id.
//
// An append command may give each tile a request id (command.go,
// flagHasRequestID). The FSM keeps a table of the most recent dedupEntries
// ids per (volume, id) with the offset the tile got. A tile whose id is in
// the table is not stored again: the command answers the original offset.
// Because the FSM decides, every replica must hold the same table after
// the same entries, so:
//
//   - the bound is a constant (dedupEntries), never a setting; eviction is
//     first in, first out in log order;
//   - only tiles that were stored insert ids (a duplicate inserts nothing);
//     deleting a volume drops its ids;
//   - snapshots carry the table (snapshot version 2: it follows the
//     header), so a node restored from one, a new node or a node that
//     restarts from its latest snapshot has it;
//   - entries Raft replays after a restart that the store already holds
//     are not applied again, but their ids are recorded again: the tiles
//     are found in the store by their Raft index (Tile.Index), so a command
//     that failed when it was first applied records nothing, as it did
//     then.

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/xcheng85/go-ldm/storage"
)

// dedupEntries is how many request ids the FSM remembers: the most recent
// ones, across all volumes. It must be the same on every node (it is a
// constant for that reason). About 100 bytes of memory per id.
const dedupEntries = 1 << 17

// MaxRequestIDBytes is the longest request id a write may carry.
const MaxRequestIDBytes = 64

type dedupKey struct{ volume, id string }

type dedupEntry struct {
	seq    uint64
	offset uint64
}

type dedupRef struct {
	key dedupKey
	seq uint64
}

// dedupTable maps (volume, request id) to the offset of the tile stored
// with it, for the most recent max ids in insertion order. It is used on
// the FSM goroutine only.
type dedupTable struct {
	max   int
	m     map[dedupKey]dedupEntry
	order []dedupRef // insertion order from head; refs whose seq differs from m's are stale
	head  int
	seq   uint64
}

func newDedupTable(max int) *dedupTable {
	return &dedupTable{max: max, m: map[dedupKey]dedupEntry{}}
}

func (t *dedupTable) get(volume, id string) (uint64, bool) {
	e, ok := t.m[dedupKey{volume, id}]
	return e.offset, ok
}

// put records id; it evicts the oldest ids beyond the bound.
func (t *dedupTable) put(volume, id string, offset uint64) {
	k := dedupKey{volume, id}
	t.seq++
	t.m[k] = dedupEntry{seq: t.seq, offset: offset}
	t.order = append(t.order, dedupRef{k, t.seq})
	for len(t.m) > t.max && t.head < len(t.order) {
		r := t.order[t.head]
		t.order[t.head] = dedupRef{}
		t.head++
		if e, ok := t.m[r.key]; ok && e.seq == r.seq {
			delete(t.m, r.key)
		}
	}
	if t.head > 1024 && t.head > len(t.order)/2 {
		t.order = append(t.order[:0], t.order[t.head:]...)
		t.head = 0
	}
}

// dropVolume forgets every id of volume (it was deleted: a retry must not
// answer an offset of the old volume).
func (t *dedupTable) dropVolume(volume string) {
	live := t.order[:0]
	for _, r := range t.order[t.head:] {
		if r.key.volume == volume {
			delete(t.m, r.key)
			continue
		}
		if e, ok := t.m[r.key]; ok && e.seq == r.seq {
			live = append(live, r)
		}
	}
	clear(t.order[len(live):])
	t.order, t.head = live, 0
}

func (t *dedupTable) len() int { return len(t.m) }

// encode writes the table, oldest first:
//
//	4  count
//	count times: 2 volume length, volume, 1 id length, id, 8 offset
func (t *dedupTable) encode() []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, uint32(len(t.m)))
	for _, r := range t.order[t.head:] {
		e, ok := t.m[r.key]
		if !ok || e.seq != r.seq {
			continue
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.key.volume)))
		b = append(b, r.key.volume...)
		b = append(b, byte(len(r.key.id)))
		b = append(b, r.key.id...)
		b = binary.LittleEndian.AppendUint64(b, e.offset)
	}
	return b
}

// decodeDedup reads what encode wrote into a new table.
func decodeDedup(b []byte, max int) (*dedupTable, error) {
	t := newDedupTable(max)
	d := decoder{b: b}
	count := d.u32()
	for i := uint32(0); i < count && d.err == nil; i++ {
		vol := string(d.take(int(d.u16())))
		idLen := d.take(1)
		if idLen == nil {
			break
		}
		id := string(d.take(int(idLen[0])))
		var off uint64
		if p := d.take(8); p != nil {
			off = binary.LittleEndian.Uint64(p)
		}
		if d.err == nil {
			t.put(vol, id, off)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: request id table: %v", ErrBadSnapshot, d.err)
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: request id table: %d trailing bytes", ErrBadSnapshot, len(d.b))
	}
	return t, nil
}

// replayCursor finds, after a restart, where the tiles of already applied
// commands are in the store, volume by volume, in log order.
type replayCursor struct {
	store Store
	next  map[string]uint64 // volume -> offset of the next tile to match
}

// locate returns the offset of the first tile that the command at Raft
// index idx stored in volume, or false if the store holds none (the
// command failed when it was applied, or the volume is gone).
func (c *replayCursor) locate(volume string, idx uint64) (uint64, bool) {
	info, err := c.store.Volume(volume)
	if err != nil {
		return 0, false
	}
	off, ok := c.next[volume]
	if !ok {
		// The first tile written at idx or later: tiles' indexes never
		// decrease with the offset.
		n := info.NextOffset
		off = uint64(sort.Search(int(n), func(i int) bool {
			t, err := c.store.Read(volume, uint64(i))
			return err != nil || t.Index >= idx
		}))
	}
	for off < info.NextOffset {
		t, err := c.store.Read(volume, off)
		if err != nil {
			return 0, false
		}
		if t.Index == idx {
			c.next[volume] = off
			return off, true
		}
		if t.Index > idx {
			c.next[volume] = off
			return 0, false
		}
		off++
	}
	c.next[volume] = off
	return 0, false
}

// advance moves volume's cursor past n tiles stored at off.
func (c *replayCursor) advance(volume string, off uint64, n int) {
	c.next[volume] = off + uint64(n)
}

func (c *replayCursor) reset(volume string) { delete(c.next, volume) }

// validRequestID checks a request id's length.
func validRequestID(id string) error {
	if len(id) > MaxRequestIDBytes {
		return fmt.Errorf("%w: request id of %d bytes, at most %d", storage.ErrInvalidArgument, len(id), MaxRequestIDBytes)
	}
	return nil
}
