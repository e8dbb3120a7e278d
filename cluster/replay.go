package cluster

import (
	"context"
	"errors"
	"fmt"
)

// reapply applies the command at Raft index index, which the store may
// already hold in whole or in part: the FSM applied it before a crash,
// after the store's last Sync (index is above DurableIndex and at most
// the AppliedIndex the store recovered). The store keeps, per volume, a
// prefix of what was applied, so what is missing is always at the end of
// a volume's log; reapply adds exactly that and leaves the store and the
// request id table as if the command had been applied once.
//
//   - A volume's creation is present when the volume exists with that
//     index or a later one (a later creation under the same name).
//   - A deletion left no trace: it is applied again unless the volume is
//     gone or was created after it.
//   - An append is found by its Raft index (the tiles carry it): tiles of
//     the command that are present are kept, the missing ones appended;
//     nothing is appended to a volume created after the command or whose
//     log already holds a later command's tiles (the append failed then).
func (f *fsm) reapply(pos int, index uint64, c command) *applyResult {
	info, err := f.store.Volume(c.volume)
	exists := err == nil
	switch c.typ {
	case cmdCreateVolume:
		f.replay.reset(c.volume)
		if exists && info.Index >= index {
			return &applyResult{info: info}
		}
		return f.applyOther(index, c)
	case cmdDeleteVolume:
		f.replay.reset(c.volume)
		if !exists || info.Index > index {
			f.dedup.dropVolume(c.volume)
			return &applyResult{}
		}
		return f.applyOther(index, c)
	case cmdAppend:
		p := f.prepareAppend(pos, index, c)
		if exists && info.Index > index {
			return &applyResult{err: fmt.Errorf("raft index %d: %w", index, errAlreadyApplied)}
		}
		if !exists || (len(p.tiles) == 0 && p.offsets != nil) {
			out := make([]any, pos+1)
			f.applyAppends(c.volume, []pendingAppend{p}, out)
			return out[pos].(*applyResult)
		}
		first, found := f.replay.locate(c.volume, index)
		if !found {
			if last, ok := f.lastIndex(c.volume); ok && last > index {
				// A later command's tiles follow: this one stored none.
				return &applyResult{err: fmt.Errorf("raft index %d: %w", index, errAlreadyApplied)}
			}
			out := make([]any, pos+1)
			f.applyAppends(c.volume, []pendingAppend{p}, out)
			f.replay.reset(c.volume)
			return out[pos].(*applyResult)
		}
		have := 0
		for have < len(p.tiles) {
			t, err := f.store.Read(c.volume, first+uint64(have))
			if err != nil || t.Index != index {
				break
			}
			have++
		}
		if have < len(p.tiles) {
			at, err := f.store.Append(context.Background(), c.volume, p.tiles[have:]...)
			f.checkErr(index, err)
			if err == nil && at != first+uint64(have) {
				err = fmt.Errorf("raft index %d: the rest of a partly applied command landed at offset %d, want %d: %w", index, at, first+uint64(have), errReplayDiverged)
				f.log.Error("store failed to apply a committed entry; this replica may diverge", "index", index, "error", err)
			}
			if err != nil {
				return &applyResult{err: err}
			}
			f.noteApplied(tileBytes(p.tiles[have:]))
		}
		f.replay.advance(c.volume, first, len(p.tiles))
		return f.finishAppend(c.volume, p, first)
	}
	return &applyResult{err: fmt.Errorf("%w: %d", ErrUnknownCommand, c.typ)}
}

// errReplayDiverged: re-applying a command after a crash found the store
// in a state that a prefix of the log cannot produce.
var errReplayDiverged = errors.New("store diverged from the log during replay")

// lastIndex returns the Raft index of the last tile of volume.
func (f *fsm) lastIndex(volume string) (uint64, bool) {
	info, err := f.store.Volume(volume)
	if err != nil || info.NextOffset == 0 {
		return 0, false
	}
	t, err := f.store.Read(volume, info.NextOffset-1)
	if err != nil {
		return 0, false
	}
	return t.Index, true
}
