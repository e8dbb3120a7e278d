package service

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/storage"
)

// listBricksBatch is the most keys one ListBricksResponse carries.
const listBricksBatch = 4096

// ListBricks streams the keys of the bricks a volume holds over a range of
// levels, level by level from min_lod, then by z, y and x, at most
// listBricksBatch keys per response; the first response also carries the
// number of bricks the levels have in all. It reads like GetBrick: locally,
// after a read barrier when the request asks for a linearizable read.
func (h *volumeHandler) ListBricks(ctx context.Context, req *connect.Request[ldmv1.ListBricksRequest], stream *connect.ServerStream[ldmv1.ListBricksResponse]) error {
	if err := h.s.readBarrier(ctx, req.Msg.GetConsistency()); err != nil {
		return connectError(err)
	}
	info, err := h.s.store.Volume(req.Msg.GetVolume())
	if err != nil {
		return connectError(err)
	}
	lods := max(info.LODCount, 1)
	minLOD, maxLOD := uint32(0), lods-1
	if req.Msg.MinLod != nil {
		minLOD = req.Msg.GetMinLod()
	}
	if req.Msg.MaxLod != nil {
		maxLOD = min(req.Msg.GetMaxLod(), lods-1)
	}
	if minLOD >= lods {
		return connectError(withField("min_lod", fmt.Errorf("%w: min_lod %d, the volume has %d levels", storage.ErrInvalidArgument, minLOD, lods)))
	}
	if minLOD > maxLOD {
		return connectError(withField("min_lod", fmt.Errorf("%w: min_lod %d is above max_lod %d", storage.ErrInvalidArgument, minLOD, maxLOD)))
	}
	meta := info.VolumeMeta
	meta.LODCount = lods
	var expected uint64
	for l := minLOD; l <= maxLOD; l++ {
		g := meta.BrickGrid(l)
		expected += uint64(g.X) * uint64(g.Y) * uint64(g.Z)
	}
	msg := &ldmv1.ListBricksResponse{Expected: expected}
	flush := func() error {
		if err := stream.Send(msg); err != nil {
			return connectError(err)
		}
		msg = &ldmv1.ListBricksResponse{Keys: msg.Keys[:0]}
		return nil
	}
	for l := minLOD; l <= maxLOD; l++ {
		bricks, err := h.s.store.Bricks(info.Name, l)
		if err != nil {
			return connectError(err)
		}
		keys := make([]storage.BrickKey, 0, len(bricks))
		for k := range bricks {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b storage.BrickKey) int {
			return cmp.Or(cmp.Compare(a.Z, b.Z), cmp.Compare(a.Y, b.Y), cmp.Compare(a.X, b.X))
		})
		for _, k := range keys {
			if ctx.Err() != nil {
				return connectError(ctx.Err())
			}
			msg.Keys = append(msg.Keys, apiconv.KeyToAPI(k))
			if len(msg.Keys) == listBricksBatch {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	if len(msg.Keys) > 0 || msg.Expected != 0 {
		return flush()
	}
	return nil
}
