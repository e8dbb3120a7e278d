package storage

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/edsrzf/mmap-go"
)

// openVolume opens the directory dir as volume name and recovers it:
//
//  1. Read and check meta.
//  2. List the blocks (data files; an index file without its data file is
//     removed).
//  3. Check the last block as the active one: cut the index back to its
//     last entry that is whole, has a valid checksum, follows the previous
//     record, lies inside the data file and whose record header matches
//     (and, for a tile past DurableIndex, whose record is whole: header
//     and value checksum);
//     then rebuild entries for the whole records after it (the index lags
//     the data by design) and cut the data file after the last whole
//     record. If the last block is left empty and is not the only one,
//     remove it and repeat with the block before it.
//  4. Check every sealed block: its entry count must reach the next block's
//     base. Its committed end stops at its data file's size: records the
//     index describes past the end of the file (a power cut that kept the
//     index and not the data) read as ErrCorrupt, and no view maps them.
//  5. Rebuild the brick index from the index entries (no tile data is
//     read beyond the active block's records past DurableIndex and its
//     unindexed tail).
func openVolume(s *Store, name, dir string) (*volume, error) {
	v := &volume{
		s:    s,
		name: name,
		dir:  dir,
		log:  s.log.With("volume", name),
		gone: make(chan struct{}),
	}
	mb, err := os.ReadFile(filepath.Join(dir, metaName))
	if err != nil {
		return nil, fmt.Errorf("storage: volume %q: %w", name, err)
	}
	meta, err := decodeMeta(mb)
	if err != nil {
		return nil, fmt.Errorf("storage: volume %q: %w", name, err)
	}
	if meta.Name != name {
		return nil, fmt.Errorf("storage: volume directory %q holds volume %q: %w", name, meta.Name, ErrCorrupt)
	}
	v.meta = meta

	bases, err := listBlocks(v)
	if err != nil {
		return nil, err
	}
	if bases, err = v.recoverShortBlocks(bases); err != nil {
		return nil, err
	}
	var blocks []*block
	fail := func(err error) (*volume, error) {
		for _, b := range blocks {
			b.release()
		}
		return nil, err
	}
	// Step 3: the active block.
	var active *block
	var activeCount uint64
	for {
		if len(bases) == 0 {
			if err := createBlockFiles(s.fs, dir, 0); err != nil {
				return fail(err)
			}
			bases = []uint64{0}
		}
		base := bases[len(bases)-1]
		b, n, err := v.recoverActive(base)
		if err != nil {
			return fail(err)
		}
		if n == 0 && len(bases) > 1 {
			b.release()
			v.log.Warn("recovery: removing empty last block", "base", base)
			for _, ext := range []string{"data", "index"} {
				if err := s.fs.Remove(filepath.Join(dir, blockFileName(base, ext))); err != nil {
					return fail(fmt.Errorf("storage: %w", err))
				}
			}
			if err := syncDir(s.fs, dir); err != nil {
				return fail(err)
			}
			bases = bases[:len(bases)-1]
			continue
		}
		active, activeCount = b, n
		break
	}
	// Step 4: sealed blocks.
	for i, base := range bases[:len(bases)-1] {
		b, err := v.openBlockFiles(base, false)
		if err != nil {
			return fail(err)
		}
		blocks = append(blocks, b)
		if err := checkHeaders(b); err != nil {
			return fail(fmt.Errorf("storage: volume %q block %d: %w", name, base, err))
		}
		n := uint64(len(b.idx)-indexHeaderLen) / indexEntryLen
		if want := bases[i+1] - base; n != want {
			return fail(fmt.Errorf("storage: volume %q sealed block %d has %d index entries, want %d: %w", name, base, n, want, ErrCorrupt))
		}
		b.idxCount = n
	}
	blocks = append(blocks, active)

	// Step 5: the published state and the brick index.
	st := &volState{changed: make(chan struct{})}
	// Size the brick index once: count the entries whose key flag is set
	// (a plain read of one word per entry) so the map never grows.
	keyed := 0
	for i, b := range blocks {
		n := b.idxCount
		if i == len(blocks)-1 {
			n = activeCount
		}
		for j := range n {
			if le.Uint32(b.idx[indexHeaderLen+j*indexEntryLen+16:])&flagHasKey != 0 {
				keyed++
			}
		}
	}
	v.bricks = newBrickIndex(keyed)
	for i, b := range blocks {
		n := b.idxCount
		if i == len(blocks)-1 {
			n = activeCount
		}
		bv := blockView{b: b, count: n, end: dataHeaderLen}
		// A sealed block's committed end comes from its entries; it must
		// not pass the end of its data file (a data file cut short, say by
		// a power cut that kept the index and not the data). Records past
		// it stay out of the committed bytes, so their tiles read as
		// ErrCorrupt and no view maps bytes the file does not hold.
		limit := int64(math.MaxInt64)
		if i < len(blocks)-1 {
			fi, err := b.data.Stat()
			if err != nil {
				return fail(fmt.Errorf("storage: %w", err))
			}
			limit = fi.Size()
		}
		short := 0
		for j := uint64(0); j < n; j++ {
			e, err := b.entry(j)
			if err != nil {
				// Only a sealed block can get here (the active block was
				// cut back); the tile reads as ErrCorrupt and Verify
				// reports it.
				v.log.Error("recovery: damaged index entry in sealed block", "offset", b.base+j, "err", err)
				continue
			}
			st.size += uint64(e.Length)
			st.lastIndex = max(st.lastIndex, e.Index)
			if e.HasKey {
				v.bricks.set(e.Key, b.base+j)
			}
			if end := e.Pos + recordHeaderLen + int64(e.Length); end <= limit {
				bv.end = end
			} else {
				short++
			}
		}
		if short > 0 {
			v.log.Error("recovery: sealed block's data file ends before its index; the tiles past its end read as corrupt",
				"base", b.base, "data_bytes", limit, "tiles_past_end", short)
		}
		st.blocks = append(st.blocks, bv)
		st.next = b.base + n
		b.wCount = n
		b.wEnd = bv.end
	}
	v.state.Store(st)
	v.wblocks = blocks
	v.wNext = st.next
	return v, nil
}

// recoverShortBlocks handles a crash between a rollover and the commit
// that completes the previous block's index: a block, not the last, whose
// index holds fewer entries than the next block's base implies. Its
// entries are rebuilt from its records; if its data is short too, nothing
// after it can have been acknowledged (a commit fsyncs a block's index
// before it writes any entry of the next one), so the blocks after it are
// removed and it becomes the last. It returns the remaining bases.
func (v *volume) recoverShortBlocks(bases []uint64) ([]uint64, error) {
	for i := 0; i+1 < len(bases); i++ {
		base, want := bases[i], bases[i+1]-bases[i]
		fi, err := os.Stat(filepath.Join(v.dir, blockFileName(base, "index")))
		if err == nil && fi.Size() >= indexHeaderLen && uint64(fi.Size()-indexHeaderLen)/indexEntryLen == want {
			continue
		}
		b, got, err := v.recoverActive(base)
		if err != nil {
			return nil, err
		}
		b.release()
		switch {
		case got == want:
			continue
		case got > want:
			return nil, fmt.Errorf("storage: volume %q block %d holds %d tiles, the next block starts after %d: %w", v.name, base, got, want, ErrCorrupt)
		}
		v.log.Warn("recovery: block is short of the next block's base; removing the blocks after it",
			"base", base, "tiles", got, "want", want, "blocks_removed", len(bases)-i-1)
		for _, later := range bases[i+1:] {
			for _, ext := range []string{"index", "data"} {
				if err := v.s.fs.Remove(filepath.Join(v.dir, blockFileName(later, ext))); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, fmt.Errorf("storage: %w", err)
				}
			}
		}
		if err := syncDir(v.s.fs, v.dir); err != nil {
			return nil, err
		}
		return bases[:i+1], nil
	}
	return bases, nil
}

// listBlocks returns the bases of the volume's data files in order and
// removes index files that have no data file and temporary files.
func listBlocks(v *volume) ([]uint64, error) {
	ents, err := os.ReadDir(v.dir)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	data := map[uint64]bool{}
	var index []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			if err := v.s.fs.Remove(filepath.Join(v.dir, name)); err != nil {
				return nil, fmt.Errorf("storage: %w", err)
			}
			continue
		}
		stem, ext, ok := strings.Cut(name, ".")
		if !ok || len(stem) != 20 {
			continue
		}
		base, err := strconv.ParseUint(stem, 10, 64)
		if err != nil {
			continue
		}
		switch ext {
		case "data":
			data[base] = true
		case "index":
			index = append(index, base)
		}
	}
	for _, base := range index {
		if !data[base] {
			v.log.Warn("recovery: removing index file without data file", "base", base)
			if err := v.s.fs.Remove(filepath.Join(v.dir, blockFileName(base, "index"))); err != nil {
				return nil, fmt.Errorf("storage: %w", err)
			}
		}
	}
	bases := make([]uint64, 0, len(data))
	for base := range data {
		bases = append(bases, base)
	}
	slices.Sort(bases)
	return bases, nil
}

func checkHeaders(b *block) error {
	var hb [dataHeaderLen]byte
	if _, err := b.data.ReadAt(hb[:], 0); err != nil {
		return fmt.Errorf("data header: %v: %w", err, ErrCorrupt)
	}
	h, err := decodeBlockHeader(magicData, hb[:])
	if err != nil {
		return fmt.Errorf("data file: %w", err)
	}
	if h.Base != b.base {
		return fmt.Errorf("data header base %d, file name says %d: %w", h.Base, b.base, ErrCorrupt)
	}
	if len(b.idx) < indexHeaderLen {
		return fmt.Errorf("index file of %d bytes: %w", len(b.idx), ErrCorrupt)
	}
	ih, err := decodeBlockHeader(magicIndex, b.idx[:indexHeaderLen])
	if err != nil {
		return fmt.Errorf("index file: %w", err)
	}
	if ih.Base != b.base {
		return fmt.Errorf("index header base %d, file name says %d: %w", ih.Base, b.base, ErrCorrupt)
	}
	return nil
}

// recoverActive opens the block at base as the active block, cuts its
// damaged or unacknowledged tail, and returns it with its tile count.
func (v *volume) recoverActive(base uint64) (*block, uint64, error) {
	idxPath := filepath.Join(v.dir, blockFileName(base, "index"))
	if _, err := os.Stat(idxPath); errors.Is(err, os.ErrNotExist) {
		// The data file's rename reached the disk and the index's did not:
		// the block never held an acknowledged tile.
		v.log.Warn("recovery: recreating missing index file", "base", base)
		if err := writeFileAtomic(v.s.fs, v.dir, blockFileName(base, "index"), encodeBlockHeader(magicIndex, base)); err != nil {
			return nil, 0, err
		}
	}
	b, err := v.openBlockFiles(base, true)
	if err != nil {
		return nil, 0, err
	}
	if err := checkHeaders(b); err != nil {
		b.release()
		return nil, 0, fmt.Errorf("storage: volume %q block %d: %w", v.name, base, err)
	}
	dfi, err := b.data.Stat()
	if err != nil {
		b.release()
		return nil, 0, fmt.Errorf("storage: %w", err)
	}
	ifi, err := b.index.Stat()
	if err != nil {
		b.release()
		return nil, 0, fmt.Errorf("storage: %w", err)
	}
	dataSize, idxSize := dfi.Size(), ifi.Size()
	total := uint64(idxSize-indexHeaderLen) / indexEntryLen
	if maxEntries := uint64(len(b.idx)-indexHeaderLen) / indexEntryLen; total > maxEntries {
		total = maxEntries
	}
	// Forward pass: the longest prefix of well-formed, contiguous entries
	// whose records are whole. A record of a deferred append past the
	// durable marker (its Index above DurableIndex) may have an index entry
	// on disk without its bytes: nothing ordered the index write after the
	// data's, and writeback is out of order, so a power cut can leave a
	// zero-filled gap under a valid entry. Those records (only the tail
	// since the last Sync) are read and checked whole.
	durable := v.s.applied.Load()
	var rec []byte
	var n uint64
	end := int64(dataHeaderLen)
	reason := ""
	for ; n < total; n++ {
		e, err := b.entry(n)
		if err != nil {
			reason = err.Error()
			break
		}
		if e.Pos != end {
			reason = fmt.Sprintf("entry %d at position %d, want %d", n, e.Pos, end)
			break
		}
		next := e.Pos + recordHeaderLen + int64(e.Length)
		if next > dataSize {
			reason = fmt.Sprintf("entry %d ends at %d past the data file's %d bytes", n, next, dataSize)
			break
		}
		if e.Index > durable {
			if bad := checkRecord(b.data, e, base+n, &rec); bad != "" {
				reason = fmt.Sprintf("entry %d: %s", n, bad)
				break
			}
		}
		end = next
	}
	// Backward pass: the record headers of the last entries must match.
	for n > 0 {
		e, _ := b.entry(n - 1)
		var hb [recordHeaderLen]byte
		_, rerr := b.data.ReadAt(hb[:], e.Pos)
		h, herr := decodeRecordHeader(hb[:])
		if rerr == nil && herr == nil && e.matches(h, base+n-1) {
			break
		}
		reason = fmt.Sprintf("record header of offset %d does not match its index entry", base+n-1)
		n--
		end = e.Pos
	}
	kept := n
	// Forward scan of the data after the last indexed record: whole
	// records (header and value checksums hold, offsets in sequence) get
	// their index entries back; the first bad one ends the log.
	rebuilt, end, scanReason := scanRecords(b.data, base+n, end, dataSize)
	if len(rebuilt) > 0 {
		need := int(indexHeaderLen + (n+uint64(len(rebuilt)))*indexEntryLen)
		if need > len(b.idx) {
			if err := b.idx.Unmap(); err != nil {
				b.release()
				return nil, 0, fmt.Errorf("storage: %w", err)
			}
			m, err := mmap.MapRegion(b.index, need, mmap.RDONLY, 0, 0)
			if err != nil {
				b.idx = nil
				b.release()
				return nil, 0, fmt.Errorf("storage: mmap %s: %w", b.index.Name(), err)
			}
			b.idx = m
		}
		buf := make([]byte, len(rebuilt)*indexEntryLen)
		for i, e := range rebuilt {
			putIndexEntry(buf[i*indexEntryLen:], e)
		}
		if err := v.s.fs.Pwritev(b.index, [][]byte{buf}, indexHeaderLen+int64(n)*indexEntryLen); err != nil {
			b.release()
			return nil, 0, fmt.Errorf("storage: rebuilding index: %w", err)
		}
		n += uint64(len(rebuilt))
	}
	switch {
	case scanReason != "" && reason != "":
		reason += "; " + scanReason
	case scanReason != "":
		reason = scanReason
	}
	wantIdx := int64(indexHeaderLen) + int64(n)*indexEntryLen
	if idxSize != wantIdx || dataSize != end || len(rebuilt) > 0 {
		switch {
		case reason == "" && len(rebuilt) > 0:
			reason = "index behind the data file"
		case reason == "":
			reason = "partial index entry"
		}
		v.log.Warn("recovery: repaired active block",
			"base", base, "reason", reason,
			"tiles", n, "index_entries_rebuilt", len(rebuilt),
			"index_entries_removed", max(0, (idxSize-indexHeaderLen)/indexEntryLen-int64(kept)),
			"data_bytes_removed", dataSize-end)
		if err := truncateSync(v.s.fs, b.index, wantIdx); err != nil {
			b.release()
			return nil, 0, err
		}
		if err := truncateSync(v.s.fs, b.data, end); err != nil {
			b.release()
			return nil, 0, err
		}
	}
	// Tiles that a process wrote and died before fsyncing are visible now,
	// so they must not vanish in a later power loss, and this block's index
	// must be durable before a next block's entries are written.
	if err := fdatasync(v.s.fs, b.data); err != nil {
		b.release()
		return nil, 0, err
	}
	if err := fdatasync(v.s.fs, b.index); err != nil {
		b.release()
		return nil, 0, err
	}
	b.idxCount = n
	return b, n, nil
}

// checkRecord reads the record e points at (offset off) into *buf and
// returns why it is not whole ("" if it is): its header must match e and
// its value's checksum must hold.
func checkRecord(f *os.File, e indexEntry, off uint64, buf *[]byte) string {
	n := recordHeaderLen + int(e.Length)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := f.ReadAt(b, e.Pos); err != nil {
		return fmt.Sprintf("reading record at %d: %v", e.Pos, err)
	}
	h, err := decodeRecordHeader(b[:recordHeaderLen])
	if err != nil {
		return fmt.Sprintf("record at %d: %v", e.Pos, err)
	}
	if !e.matches(h, off) {
		return fmt.Sprintf("record header at %d does not match its index entry", e.Pos)
	}
	if Checksum(b[recordHeaderLen:]) != e.CRC {
		return fmt.Sprintf("record at %d: value checksum mismatch", e.Pos)
	}
	return ""
}

// scanRecords reads whole records from f starting at pos (offset first),
// up to size. It returns their index entries, the end of the last whole
// record, and why it stopped if it stopped before size.
func scanRecords(f *os.File, first uint64, pos, size int64) ([]indexEntry, int64, string) {
	var out []indexEntry
	var hb [recordHeaderLen]byte
	var val []byte
	for pos < size {
		if size-pos < recordHeaderLen {
			return out, pos, fmt.Sprintf("%d bytes after the last whole record", size-pos)
		}
		if _, err := f.ReadAt(hb[:], pos); err != nil {
			return out, pos, fmt.Sprintf("reading record header at %d: %v", pos, err)
		}
		h, err := decodeRecordHeader(hb[:])
		if err != nil {
			return out, pos, fmt.Sprintf("record at %d: %v", pos, err)
		}
		want := first + uint64(len(out))
		next := pos + recordHeaderLen + int64(h.Length)
		if h.Offset != want || next > size {
			return out, pos, fmt.Sprintf("record at %d: offset %d (want %d), ends at %d of %d", pos, h.Offset, want, next, size)
		}
		if cap(val) < int(h.Length) {
			val = make([]byte, h.Length)
		}
		val = val[:h.Length]
		if _, err := f.ReadAt(val, pos+recordHeaderLen); err != nil {
			return out, pos, fmt.Sprintf("reading record value at %d: %v", pos, err)
		}
		if Checksum(val) != h.CRC {
			return out, pos, fmt.Sprintf("record at %d: value checksum mismatch", pos)
		}
		out = append(out, h.entry(pos))
		pos = next
	}
	return out, pos, ""
}
