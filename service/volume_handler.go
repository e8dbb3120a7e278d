package service

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
)

type volumeHandler struct {
	ldmv1connect.UnimplementedVolumeServiceHandler
	s *Server
}

func (h *volumeHandler) CreateVolume(ctx context.Context, req *connect.Request[ldmv1.CreateVolumeRequest]) (*connect.Response[ldmv1.CreateVolumeResponse], error) {
	info, err := h.s.store.CreateVolume(ctx, apiconv.MetaFromAPI(req.Msg.GetVolume()))
	if err != nil {
		return nil, connectError(withField("volume", err))
	}
	return connect.NewResponse(&ldmv1.CreateVolumeResponse{Volume: apiconv.VolumeToAPI(info)}), nil
}

func (h *volumeHandler) GetVolume(_ context.Context, req *connect.Request[ldmv1.GetVolumeRequest]) (*connect.Response[ldmv1.GetVolumeResponse], error) {
	info, err := h.s.store.Volume(req.Msg.GetName())
	if err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&ldmv1.GetVolumeResponse{Volume: apiconv.VolumeToAPI(info)}), nil
}

func (h *volumeHandler) ListVolumes(context.Context, *connect.Request[ldmv1.ListVolumesRequest]) (*connect.Response[ldmv1.ListVolumesResponse], error) {
	infos, err := h.s.store.Volumes()
	if err != nil {
		return nil, connectError(err)
	}
	out := &ldmv1.ListVolumesResponse{Volumes: make([]*ldmv1.Volume, 0, len(infos))}
	for _, info := range infos {
		out.Volumes = append(out.Volumes, apiconv.VolumeToAPI(info))
	}
	return connect.NewResponse(out), nil
}

func (h *volumeHandler) DeleteVolume(ctx context.Context, req *connect.Request[ldmv1.DeleteVolumeRequest]) (*connect.Response[ldmv1.DeleteVolumeResponse], error) {
	if err := h.s.store.DeleteVolume(ctx, req.Msg.GetName()); err != nil {
		return nil, connectError(err)
	}
	return connect.NewResponse(&ldmv1.DeleteVolumeResponse{}), nil
}

func (h *volumeHandler) GetBrick(ctx context.Context, req *connect.Request[ldmv1.GetBrickRequest]) (*connect.Response[ldmv1.GetBrickResponse], error) {
	e, etag, err := h.getBrick(ctx, req)
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(e.Message.(*ldmv1.GetBrickResponse))
	if etag != "" {
		res.Header().Set("ETag", etag)
		res.Header().Set("Cache-Control", cacheRevalidate)
	}
	return res, nil
}

// plannedBrick is one brick of a StreamBricks plan.
type plannedBrick struct {
	key    storage.BrickKey
	offset uint64
	dist2  float64 // squared distance of the brick's centre to the focus
}

// planBricks lists the bricks StreamBricks sends, in order: levels from
// coarsest to finest (or the reverse), and within a level by distance of
// the brick's centre to the focus point, ties broken by key. Only bricks
// that exist and intersect the region are listed.
func planBricks(store Tiles, info storage.VolumeInfo, req *ldmv1.StreamBricksRequest) ([]plannedBrick, error) {
	if info.LODCount == 0 {
		info.LODCount = 1
	}
	minLOD, maxLOD := uint32(0), info.LODCount-1
	if req.MinLod != nil {
		minLOD = req.GetMinLod()
	}
	if req.MaxLod != nil {
		maxLOD = req.GetMaxLod()
	}
	if minLOD >= info.LODCount {
		return nil, withField("min_lod", fmt.Errorf("%w: min_lod %d, the volume has %d levels", storage.ErrInvalidArgument, minLOD, info.LODCount))
	}
	if maxLOD >= info.LODCount {
		maxLOD = info.LODCount - 1
	}
	if minLOD > maxLOD {
		return nil, withField("min_lod", fmt.Errorf("%w: min_lod %d is above max_lod %d", storage.ErrInvalidArgument, minLOD, maxLOD))
	}
	lo := [3]float64{0, 0, 0}
	hi := [3]float64{float64(info.Shape.X), float64(info.Shape.Y), float64(info.Shape.Z)}
	if rg := req.GetRegion(); rg != nil {
		lo = [3]float64{float64(rg.GetMin().GetX()), float64(rg.GetMin().GetY()), float64(rg.GetMin().GetZ())}
		hi = [3]float64{float64(rg.GetMax().GetX()), float64(rg.GetMax().GetY()), float64(rg.GetMax().GetZ())}
	}
	focus := [3]float64{(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2}
	if f := req.GetFocus(); f != nil {
		focus = [3]float64{f.GetX(), f.GetY(), f.GetZ()}
	}
	lods := make([]uint32, 0, maxLOD-minLOD+1)
	for l := maxLOD; ; l-- {
		lods = append(lods, l)
		if l == minLOD {
			break
		}
	}
	if req.GetOrder() == ldmv1.BrickOrder_BRICK_ORDER_FINE_TO_COARSE {
		slices.Reverse(lods)
	}
	var plan []plannedBrick
	for _, lod := range lods {
		bricks, err := store.Bricks(info.Name, lod)
		if err != nil {
			return nil, err
		}
		scale := float64(uint64(1) << lod)
		size := [3]float64{
			float64(info.BrickShape.X) * scale,
			float64(info.BrickShape.Y) * scale,
			float64(info.BrickShape.Z) * scale,
		}
		start := len(plan)
		for k, off := range bricks {
			pos := [3]float64{float64(k.X), float64(k.Y), float64(k.Z)}
			var d2 float64
			inside := true
			for i := range 3 {
				bLo := pos[i] * size[i]
				bHi := bLo + size[i]
				if bHi <= lo[i] || bLo >= hi[i] {
					inside = false
					break
				}
				d := (bLo+bHi)/2 - focus[i]
				d2 += d * d
			}
			if inside {
				plan = append(plan, plannedBrick{key: k, offset: off, dist2: d2})
			}
		}
		level := plan[start:]
		slices.SortFunc(level, func(a, b plannedBrick) int {
			if a.dist2 != b.dist2 {
				if a.dist2 < b.dist2 {
					return -1
				}
				return 1
			}
			return compareKeys(a.key, b.key)
		})
	}
	return plan, nil
}

func compareKeys(a, b storage.BrickKey) int {
	for _, d := range [][2]uint32{{a.Z, b.Z}, {a.Y, b.Y}, {a.X, b.X}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// maxStreamKeys bounds StreamBricksRequest.keys.
const maxStreamKeys = 4096

// checkStreamKeys validates StreamBricksRequest.keys: at most
// maxStreamKeys, each at a level the volume has.
func checkStreamKeys(info storage.VolumeInfo, keys []*ldmv1.BrickKey) error {
	if len(keys) > maxStreamKeys {
		return withField("keys", fmt.Errorf("%w: %d keys, at most %d per request: split the set over several requests", storage.ErrInvalidArgument, len(keys), maxStreamKeys))
	}
	lods := max(info.LODCount, 1)
	for i, k := range keys {
		if k.GetLod() >= lods {
			return withField("keys", fmt.Errorf("%w: keys[%d] has lod %d, the volume has %d levels", storage.ErrInvalidArgument, i, k.GetLod(), lods))
		}
	}
	return nil
}

// streamKeys sends the bricks of keys in their order; a key with no brick
// is sent as a response with missing set.
func (h *volumeHandler) streamKeys(ctx context.Context, info storage.VolumeInfo, keys []*ldmv1.BrickKey, send func(*ldmv1.StreamBricksResponse, storage.Tile) error) error {
	ctx, release := h.s.streamContext(ctx)
	defer release()
	defer h.s.trackStream(ctx)()
	r := h.s.newStreamReader(ctx)
	defer r.close()
	for i, k := range keys {
		if ctx.Err() != nil {
			return nil // the client went away or the server is draining
		}
		msg := &ldmv1.StreamBricksResponse{Total: uint32(len(keys)), Index: uint32(i)}
		t, sent, err := r.brick(info.Name, apiconv.KeyFromAPI(k))
		switch {
		case errors.Is(err, storage.ErrNotFound):
			msg.Missing = k
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		default:
			msg.Tile = tileToAPI(t, apiconv.CodecToAPI(info.Codec.Kind))
		}
		err = send(msg, t)
		sent()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
	}
	return nil
}

func (h *volumeHandler) StreamBricks(ctx context.Context, req *connect.Request[ldmv1.StreamBricksRequest], stream *connect.ServerStream[ldmv1.StreamBricksResponse]) error {
	return h.streamBricks(ctx, req.Msg, func(m *ldmv1.StreamBricksResponse, _ storage.Tile) error { return stream.Send(m) })
}

// streamBricksEncoded is StreamBricks answered with each brick's kept
// encoding (see encodedTile).
func (h *volumeHandler) streamBricksEncoded(ctx context.Context, req *connect.Request[ldmv1.StreamBricksRequest], stream *connect.ServerStream[encodedTile]) error {
	e := new(encodedTile)
	return h.streamBricks(ctx, req.Msg, func(m *ldmv1.StreamBricksResponse, t storage.Tile) error {
		e.setBricks(m, t)
		return stream.Send(e)
	})
}

// streamBricks serves a StreamBricks request; send sends one message and
// the tile it carries (whose bytes are valid until send returns).
func (h *volumeHandler) streamBricks(ctx context.Context, req *ldmv1.StreamBricksRequest, send func(*ldmv1.StreamBricksResponse, storage.Tile) error) error {
	info, err := h.s.store.Volume(req.GetVolume())
	if err != nil {
		return connectError(err)
	}
	if keys := req.GetKeys(); len(keys) > 0 {
		if err := checkStreamKeys(info, keys); err != nil {
			return connectError(err)
		}
		return h.streamKeys(ctx, info, keys, send)
	}
	plan, err := planBricks(h.s.store, info, req)
	if err != nil {
		return connectError(err)
	}
	ctx, release := h.s.streamContext(ctx)
	defer release()
	defer h.s.trackStream(ctx)()
	msg := &ldmv1.StreamBricksResponse{Total: uint32(len(plan))}
	r := h.s.newStreamReader(ctx)
	defer r.close()
	for i, b := range plan {
		if ctx.Err() != nil {
			return nil // the client went away or the server is draining
		}
		// Each Send blocks while the client's flow-control window is
		// full, so a slow reader holds at most one brick here.
		t, sent, err := r.read(info.Name, b.offset)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
		msg.Tile = tileToAPI(t, apiconv.CodecToAPI(info.Codec.Kind))
		msg.Index = uint32(i)
		err = send(msg, t)
		sent()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
	}
	return nil
}

type clusterHandler struct {
	ldmv1connect.UnimplementedClusterServiceHandler
	s *Server
}

func (h *clusterHandler) GetServers(ctx context.Context, _ *connect.Request[ldmv1.GetServersRequest]) (*connect.Response[ldmv1.GetServersResponse], error) {
	if m, ok := h.s.store.(Membership); ok {
		servers, err := m.Servers(ctx)
		if err != nil {
			return nil, connectError(err)
		}
		return connect.NewResponse(&ldmv1.GetServersResponse{Servers: servers}), nil
	}
	return connect.NewResponse(&ldmv1.GetServersResponse{Servers: []*ldmv1.Server{{
		Id:       h.s.id,
		RpcAddr:  h.s.addr,
		IsLeader: true,
		RaftAddr: h.s.addr,
		Status:   "alive",
		Voter:    true,
	}}}), nil
}

func (h *clusterHandler) RemoveServer(ctx context.Context, req *connect.Request[ldmv1.RemoveServerRequest]) (*connect.Response[ldmv1.RemoveServerResponse], error) {
	m, ok := h.s.store.(Membership)
	if !ok {
		return nil, notClustered(req.Spec().Procedure)
	}
	if err := m.RemoveServer(ctx, req.Msg.GetId()); err != nil {
		return nil, connectError(withField("id", err))
	}
	return connect.NewResponse(&ldmv1.RemoveServerResponse{}), nil
}

func (h *clusterHandler) TransferLeader(ctx context.Context, req *connect.Request[ldmv1.TransferLeaderRequest]) (*connect.Response[ldmv1.TransferLeaderResponse], error) {
	m, ok := h.s.store.(Membership)
	if !ok {
		return nil, notClustered(req.Spec().Procedure)
	}
	id, err := m.TransferLeader(ctx, req.Msg.GetId())
	if err != nil {
		return nil, connectError(withField("id", err))
	}
	return connect.NewResponse(&ldmv1.TransferLeaderResponse{LeaderId: id}), nil
}
