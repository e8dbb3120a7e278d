package storage

import (
	"context"
	"errors"
)

// Iterate calls fn for every tile of volume from offset from on, in order.
// With follow false it stops at the end of the log and returns nil; with
// follow true it waits for new appends (without polling, see LDM.Wait) until
// ctx ends or the volume goes away. It stops at the first error from fn or
// from the store (ErrCorrupt for a damaged tile, ErrNotFound once the
// volume is deleted) and returns it. It works with any LDM.
func Iterate(ctx context.Context, l LDM, volume string, from uint64, follow bool, fn func(Tile) error) error {
	for off := from; ; off++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		t, err := l.Read(volume, off)
		if errors.Is(err, ErrOutOfRange) {
			if !follow {
				return nil
			}
			if err := l.Wait(ctx, volume, off); err != nil {
				return err
			}
			t, err = l.Read(volume, off)
		}
		if err != nil {
			return err
		}
		if err := fn(t); err != nil {
			return err
		}
	}
}
