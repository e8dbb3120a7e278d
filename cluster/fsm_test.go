package cluster

import (
	"bytes"
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/xcheng85/go-ldm/storage"
)

func TestCommand_RoundTrip(t *testing.T) {
	tiles := []storage.Tile{
		{Value: []byte("a")},
		{Value: []byte{}, HasKey: true, Key: storage.BrickKey{LOD: 1, X: 2, Y: 3, Z: 4}, CRC32C: storage.Checksum(nil)},
		{Value: bytes.Repeat([]byte{7}, 1000), CRC32C: 42},
	}
	b, err := encodeAppend("vol", tiles)
	if err != nil {
		t.Fatal(err)
	}
	c, err := decodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.typ != cmdAppend || c.volume != "vol" || len(c.tiles) != len(tiles) {
		t.Fatalf("decoded %+v", c)
	}
	for i := range tiles {
		got, want := c.tiles[i], tiles[i]
		if !bytes.Equal(got.Value, want.Value) || got.HasKey != want.HasKey || got.Key != want.Key || got.CRC32C != want.CRC32C {
			t.Fatalf("tile %d: %+v, want %+v", i, got, want)
		}
	}
	del, _ := encodeDelete("vol")
	if c, err := decodeCommand(del); err != nil || c.typ != cmdDeleteVolume || c.volume != "vol" {
		t.Fatalf("delete: %+v %v", c, err)
	}
	create, _ := encodeCreate(storage.VolumeMeta{Name: "v2", Shape: storage.Shape{X: 1, Y: 2, Z: 3}, DataType: storage.Uint16})
	if c, err := decodeCommand(create); err != nil || c.typ != cmdCreateVolume || c.meta.Name != "v2" || c.meta.Shape.Y != 2 {
		t.Fatalf("create: %+v %v", c, err)
	}
	if _, err := decodeCommand([]byte{99}); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown type: %v", err)
	}
	for n := range len(b) {
		if _, err := decodeCommand(b[:n]); err == nil {
			t.Fatalf("a command cut to %d of %d bytes decoded", n, len(b))
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	b, _ := encodeAppend("vol", []storage.Tile{{Value: []byte("x"), HasKey: true}})
	f.Add(b)
	d, _ := encodeDelete("v")
	f.Add(d)
	ids, _ := encodeAppendIDs("vol", []storage.Tile{{Value: []byte("x")}, {Value: []byte("y"), HasKey: true}}, []string{"", "request-1"})
	f.Add(ids)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil || c.typ != cmdAppend {
			return
		}
		again, err := encodeAppendIDs(c.volume, c.tiles, c.ids)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs")
		}
	})
}

// TestFSM_BatchOutcomeIndependentOfGrouping applies the same entries as
// one batch and one by one: a bad tile in a run of appends fails only its
// own command, and both stores end up identical.
func TestFSM_BatchOutcomeIndependentOfGrouping(t *testing.T) {
	entry := func(idx uint64, tiles ...storage.Tile) *raft.Log {
		b, err := encodeAppend("vol", tiles)
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: b}
	}
	create, _ := encodeCreate(storage.VolumeMeta{Name: "vol", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8})
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: create},
		entry(2, storage.Tile{Value: []byte("a")}),
		entry(3, storage.Tile{Value: []byte("b")}, storage.Tile{Value: []byte("c")}),
		entry(4, storage.Tile{Value: []byte("bad"), CRC32C: 1}), // checksum mismatch
		entry(5, storage.Tile{Value: []byte("d")}),
		{Index: 6, Type: raft.LogNoop},
		{Index: 7, Type: raft.LogCommand, Data: []byte{200}}, // unknown type
	}
	batched, single := NewMemoryStore(), NewMemoryStore()
	fb, fs := newFSM(batched, testLogger()), newFSM(single, testLogger())
	rb := fb.ApplyBatch(logs)
	var rs []any
	for _, l := range logs {
		rs = append(rs, fs.Apply(l))
	}
	for i := range logs {
		a, _ := rb[i].(*applyResult)
		b, _ := rs[i].(*applyResult)
		if (a == nil) != (b == nil) {
			t.Fatalf("entry %d: %v vs %v", i, rb[i], rs[i])
		}
		if a == nil {
			continue
		}
		if a.first != b.first || (a.err == nil) != (b.err == nil) {
			t.Fatalf("entry %d: batched %+v, single %+v", i, a, b)
		}
	}
	if r := rb[3].(*applyResult); !errors.Is(r.err, storage.ErrCorrupt) {
		t.Fatalf("bad tile: %v", r.err)
	}
	if r := rb[4].(*applyResult); r.err != nil || r.first != 3 {
		t.Fatalf("append after the bad tile: %+v", r)
	}
	if r := rb[6].(*applyResult); !errors.Is(r.err, ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", r.err)
	}
	for _, s := range []*MemoryStore{batched, single} {
		info, err := s.Volume("vol")
		if err != nil || info.NextOffset != 4 {
			t.Fatalf("volume %+v %v", info, err)
		}
		if s.AppliedIndex() != 5 {
			t.Fatalf("applied index %d, want 5", s.AppliedIndex())
		}
	}
	// Replaying entries at or below the applied index changes nothing.
	again := newFSM(batched, testLogger())
	for _, r := range again.ApplyBatch(logs[:5]) {
		if res, ok := r.(*applyResult); ok && !errors.Is(res.err, errAlreadyApplied) {
			t.Fatalf("replayed entry: %+v", res)
		}
	}
	if info, _ := batched.Volume("vol"); info.NextOffset != 4 {
		t.Fatalf("replay appended: next offset %d", info.NextOffset)
	}
}

// TestFSM_RequestIDsIndependentOfGrouping applies appends with request ids
// (repeated across commands of one batch, within a command, and after a
// failed command) as one batch and one by one: both give every tile the
// same offset and store the same tiles, and a replay after a restart
// rebuilds the same table.
func TestFSM_RequestIDsIndependentOfGrouping(t *testing.T) {
	entry := func(idx uint64, values []string, ids ...string) *raft.Log {
		tiles := make([]storage.Tile, len(values))
		for i, v := range values {
			tiles[i] = storage.Tile{Value: []byte(v)}
			if v == "bad" {
				tiles[i].CRC32C = 1
			}
		}
		b, err := encodeAppendIDs("vol", tiles, ids)
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: idx, Type: raft.LogCommand, Data: b}
	}
	create, _ := encodeCreate(storage.VolumeMeta{Name: "vol", Shape: storage.Shape{X: 8, Y: 8, Z: 8}, DataType: storage.Uint8})
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: create},
		entry(2, []string{"a", "b"}, "ra", "rb"),
		entry(3, []string{"a", "c"}, "ra", "rc"),            // ra repeats a tile of the same batch
		entry(4, []string{"d", "d"}, "rd", "rd"),            // repeated within the command
		entry(5, []string{"bad"}, "re"),                     // fails: re is not recorded
		entry(6, []string{"e", "x"}, "re", ""),              // so re is stored here
		entry(7, []string{"b", "e", "f"}, "rb", "re", "rf"), // two known, one new
	}
	want := [][]uint64{nil, {0, 1}, {0, 2}, {3, 3}, nil, {4, 5}, {1, 4, 6}}
	batched, single := NewMemoryStore(), NewMemoryStore()
	fb, fs := newFSM(batched, testLogger()), newFSM(single, testLogger())
	rb := fb.ApplyBatch(logs)
	for i, l := range logs {
		rs := fs.Apply(l).(*applyResult)
		a := rb[i].(*applyResult)
		if want[i] == nil {
			continue
		}
		for name, r := range map[string]*applyResult{"batched": a, "single": rs} {
			if r.err != nil || !equalU64(r.offsets, want[i]) {
				t.Fatalf("entry %d %s: offsets %v err %v, want %v", l.Index, name, r.offsets, r.err, want[i])
			}
		}
	}
	for _, st := range []*MemoryStore{batched, single} {
		if info, _ := st.Volume("vol"); info.NextOffset != 7 {
			t.Fatalf("%d tiles stored, want 7", info.NextOffset)
		}
	}
	if got, want := fb.dedup.encode(), fs.dedup.encode(); !bytes.Equal(got, want) {
		t.Fatal("the request id tables differ between batched and single application")
	}
	// A restart replays the entries the store holds: the table is rebuilt.
	again := newFSM(batched, testLogger())
	again.ApplyBatch(logs)
	if got, want := again.dedup.encode(), fb.dedup.encode(); !bytes.Equal(got, want) {
		t.Fatal("replay rebuilt another request id table")
	}
}

func equalU64(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
