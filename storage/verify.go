package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Damage is one tile that failed verification.
type Damage struct {
	Volume string
	Offset uint64
	Err    error // wraps ErrCorrupt
}

func (d Damage) String() string {
	return fmt.Sprintf("volume %q offset %d: %v", d.Volume, d.Offset, d.Err)
}

// Verify scrubs every committed tile of every volume: the index entry's
// checksum, the record header in the data file and the value's checksum.
// It returns every damaged tile (nil when all are sound) and stops early
// only if ctx ends. It runs concurrently with appends and reads.
func (s *Store) Verify(ctx context.Context) ([]Damage, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	names := make([]string, 0, len(s.volumes()))
	for n := range s.volumes() {
		names = append(names, n)
	}
	slices.SortFunc(names, strings.Compare)
	var out []Damage
	for _, n := range names {
		d, err := s.VerifyVolume(ctx, n)
		if err != nil && !isNotFound(err) {
			return out, err
		}
		out = append(out, d...)
	}
	return out, nil
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// VerifyVolume scrubs one volume like Verify.
func (s *Store) VerifyVolume(ctx context.Context, name string) ([]Damage, error) {
	v, err := s.acquire(name)
	if err != nil {
		return nil, err
	}
	defer v.release()
	st := v.state.Load()
	var out []Damage
	var buf []byte
	for _, bv := range st.blocks {
		b := bv.b
		for i := range bv.count {
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return out, err
				}
			}
			off := b.base + i
			if err := bv.verifyTile(i, &buf); err != nil {
				out = append(out, Damage{Volume: name, Offset: off, Err: err})
				b.view.forget(i) // the next ReadView checks it again
			}
		}
	}
	return out, nil
}

// verifyTile checks tile i of the block; buf is scratch space.
func (bv blockView) verifyTile(i uint64, buf *[]byte) error {
	b := bv.b
	e, err := bv.entry(i)
	if err != nil {
		return err
	}
	n := recordHeaderLen + int(e.Length)
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	rec := (*buf)[:n]
	if _, err := b.data.ReadAt(rec, e.Pos); err != nil {
		return fmt.Errorf("reading record: %v: %w", err, ErrCorrupt)
	}
	h, err := decodeRecordHeader(rec)
	if err != nil {
		return err
	}
	if !e.matches(h, b.base+i) {
		return fmt.Errorf("record header (offset %d, %d bytes, crc %08x) does not match the index: %w", h.Offset, h.Length, h.CRC, ErrCorrupt)
	}
	if Checksum(rec[recordHeaderLen:]) != e.CRC {
		return fmt.Errorf("value checksum mismatch: %w", ErrCorrupt)
	}
	return nil
}
