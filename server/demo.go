package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/service"
	"github.com/xcheng85/go-ldm/storage"
)

// demoBatch is how many bricks ensureDemo appends at once.
const demoBatch = 16

// EnsureDemo creates the demo phantom (pyramid.Phantom) as volume
// DemoVolume in tiles, unless a volume of that name exists. It writes
// through tiles directly, in batches of demoBatch bricks.
func EnsureDemo(ctx context.Context, tiles service.Tiles, logger *slog.Logger) error {
	if _, err := tiles.Volume(DemoVolume); err == nil {
		logger.Info("demo volume present", "volume", DemoVolume)
		return nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	start := time.Now()
	meta := pyramid.PhantomMeta(DemoVolume)
	if _, err := tiles.CreateVolume(ctx, meta); err != nil {
		return err
	}
	var batch []storage.Tile
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := tiles.Append(ctx, DemoVolume, batch...)
		batch = batch[:0]
		return err
	}
	err := pyramid.Cut(pyramid.Phantom(), meta, func(b pyramid.Brick) error {
		batch = append(batch, storage.Tile{Value: b.Value, HasKey: true, Key: b.Key})
		if len(batch) == demoBatch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("write the demo bricks: %w", err)
	}
	logger.Info("created the demo volume", "volume", DemoVolume, "bricks", pyramid.BrickCount(meta), "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}
