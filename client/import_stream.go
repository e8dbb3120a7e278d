package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/pyramid"
	"github.com/xcheng85/go-ldm/storage"
)

// importQueue is how many cut bricks wait for the sender: the bytes in
// flight between the pyramid builder and WriteTileStream are at most this
// many bricks (plus the one being sent).
const importQueue = 16

// errStopped ends the builder when sending has failed.
var errStopped = errors.New("import stopped")

func runImport(ctx context.Context, t importTarget, src io.Reader, vol *ldmv1.Volume, opts ImportOptions) (ImportStats, error) {
	var stats ImportStats
	if opts.Codec != ldmv1.Codec_CODEC_UNSPECIFIED {
		vol = proto.Clone(vol).(*ldmv1.Volume)
		vol.Codec, vol.CodecLevel = opts.Codec, opts.CodecLevel
	}
	created, err := t.create(ctx, vol)
	resumed := false
	if err != nil {
		if !opts.Resume || connect.CodeOf(err) != connect.CodeAlreadyExists {
			return stats, &ImportError{Volume: vol.GetName(), Err: err}
		}
		if created, err = t.get(ctx, vol.GetName()); err != nil {
			return stats, &ImportError{Volume: vol.GetName(), Err: err}
		}
		if err := sameLayout(created, vol); err != nil {
			return stats, &ImportError{Volume: vol.GetName(), Err: err}
		}
		resumed = true
	}
	stats.Volume = created
	meta := apiconv.MetaFromAPI(created)
	err = meta.Normalize()
	var have map[storage.BrickKey]bool
	if err == nil && resumed {
		have, err = listBricks(ctx, t.volumes(), meta.Name)
	}
	if err == nil {
		err = send(ctx, t.tiles(), src, meta, have, opts.Progress, &stats)
	}
	if err == nil {
		return stats, nil
	}
	ie := &ImportError{Volume: meta.Name, Created: !resumed, Resumed: resumed, Err: err, BrickShape: meta.BrickShape, BrickBytes: stats.BrickBytes}
	if resumed || interrupted(ctx, err) {
		ie.Kept = true
		return stats, ie
	}
	timeout := opts.CleanupTimeout
	if timeout <= 0 {
		timeout = DefaultCleanupTimeout
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if derr := t.remove(dctx, meta.Name); derr != nil && connect.CodeOf(derr) != connect.CodeNotFound {
		ie.DeleteErr = derr
	}
	return stats, ie
}

// interrupted reports whether an import failed because it was cut short
// rather than because of its source or its bricks: its context ended, or
// the connection to the server failed. Such a volume is kept for a resume.
func interrupted(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	switch connect.CodeOf(err) {
	case connect.CodeCanceled, connect.CodeDeadlineExceeded, connect.CodeUnavailable:
		return true
	}
	return false
}

// sameLayout checks that an existing volume is what importing vol would
// create, so that resuming it makes the same volume as a fresh import.
func sameLayout(have, vol *ldmv1.Volume) error {
	h, w := apiconv.MetaFromAPI(have), apiconv.MetaFromAPI(vol)
	if err := h.Normalize(); err != nil {
		return err
	}
	if err := w.Normalize(); err != nil {
		return err
	}
	if h.Shape != w.Shape || h.DataType != w.DataType || h.BrickShape != w.BrickShape || h.LODCount != w.LODCount {
		return fmt.Errorf("%w: volume %s exists as %s, this import makes %s: resume only the import that made it, or delete it first",
			storage.ErrInvalidArgument, h.Name, layout(h), layout(w))
	}
	return nil
}

func layout(m storage.VolumeMeta) string {
	return fmt.Sprintf("%dx%dx%d %s in %dx%dx%d bricks with %d levels", m.Shape.X, m.Shape.Y, m.Shape.Z, m.DataType,
		m.BrickShape.X, m.BrickShape.Y, m.BrickShape.Z, m.LODCount)
}

// listBricks returns the keys of the bricks the volume holds, read
// linearizably (from the leader), so that no acknowledged brick is missed.
func listBricks(ctx context.Context, volumes ldmv1connect.VolumeServiceClient, name string) (map[storage.BrickKey]bool, error) {
	if volumes == nil {
		return nil, ErrNoServers
	}
	s, err := volumes.ListBricks(ctx, connect.NewRequest(&ldmv1.ListBricksRequest{Volume: name, Consistency: ldmv1.Consistency_CONSISTENCY_LINEARIZABLE}))
	if err != nil {
		return nil, fmt.Errorf("list the bricks of %s: %w", name, err)
	}
	defer s.Close()
	have := map[storage.BrickKey]bool{}
	for s.Receive() {
		for _, k := range s.Msg().GetKeys() {
			have[apiconv.KeyFromAPI(k)] = true
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("list the bricks of %s: %w", name, err)
	}
	return have, nil
}

// send builds the pyramid of src and sends the bricks of meta that have
// does not hold with one WriteTileStream, counting acknowledgements into
// stats. Four stages run at once: the builder's (read, downsample, cut),
// the encoder's workers (compress for a zstd volume, checksum; one per
// core), this goroutine's (send, in the builder's order) and the
// acknowledgements' receiver; between the builder and the sender, the
// bricks and frames held are at most importQueue bricks' bytes.
func send(ctx context.Context, tiles ldmv1connect.TileServiceClient, src io.Reader, meta storage.VolumeMeta, have map[storage.BrickKey]bool, progress func(Progress), stats *ImportStats) error {
	if tiles == nil {
		return ErrNoServers
	}
	skipped := 0
	for lod := range meta.LODCount {
		g := meta.BrickGrid(lod)
		for k := range have {
			if k.LOD == lod && k.X < g.X && k.Y < g.Y && k.Z < g.Z {
				skipped++
			}
		}
	}
	count := pyramid.BrickCount(meta) - skipped
	var skip func(storage.BrickKey) bool
	if len(have) > 0 {
		skip = func(k storage.BrickKey) bool { return have[k] }
	}
	b, err := pyramid.NewBuilder(meta, pyramid.BuildOptions{Skip: skip, RecycledBricks: importQueue + 4})
	if err != nil {
		return err
	}
	brickBytes := int64(b.BrickBytes())
	stats.Levels = meta.LODCount
	stats.BrickBytes = brickBytes
	stats.Skipped = skipped
	if progress == nil {
		progress = func(Progress) {}
	}
	progress(Progress{Volume: meta.Name, Bricks: count, Bytes: int64(count) * brickBytes})
	if count == 0 {
		return nil // the volume holds every brick
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream := tiles.WriteTileStream(sctx)
	start := time.Now()
	// Acknowledgements arrive while bricks are sent; the receiver owns the
	// counts until it reports on done.
	type result struct {
		n       int
		sent    int64
		elapsed time.Duration
		err     error
	}
	var sent sentLog
	done := make(chan result, 1)
	go func() {
		n := 0
		var bytesSent int64
		for n < count {
			if _, err := stream.Receive(); err != nil {
				done <- result{n, bytesSent, time.Since(start), fmt.Errorf("after %d of %d bricks: %w", n, count, err)}
				return
			}
			n++
			bytesSent += sent.pop()
			progress(Progress{Volume: meta.Name, Bricks: count, BricksDone: n, Bytes: int64(count) * brickBytes,
				BytesDone: int64(n) * brickBytes, BytesSent: bytesSent, Elapsed: time.Since(start)})
		}
		done <- result{n, bytesSent, time.Since(start), nil}
	}()

	enc := newEncoder(b, meta.Codec)
	stop := make(chan struct{})
	var buildErr error
	go func() {
		defer enc.close()
		buildErr = b.Build(src, func(br pyramid.Brick) error {
			if !enc.put(br, stop) {
				return errStopped
			}
			return nil
		})
	}()
	first := true
	var sendErr error
	for j := range enc.order {
		if sendErr != nil {
			continue // the builder stops at its next brick
		}
		<-j.ready
		req := &ldmv1.WriteTileStreamRequest{Tile: enc.tile(j), RequestId: NewRequestID()}
		req.Tile.Key = apiconv.KeyToAPI(j.key)
		if first {
			req.Volume = meta.Name
			first = false
		}
		sent.push(int64(len(j.value)))
		if sendErr = stream.Send(req); sendErr != nil {
			close(stop)
			enc.stop()
			continue
		}
		enc.done(j) // Send has marshalled it
	}
	enc.wait()
	if sendErr == nil && buildErr != nil {
		sendErr = fmt.Errorf("read the source: %w", buildErr)
	}
	if errors.Is(sendErr, io.EOF) {
		sendErr = nil // the server ended the stream; Receive has its error
	}
	// Half-close in any case: the server acknowledges what it received and
	// ends the stream, so the receiver does not wait for bricks that were
	// never sent, and the stats count every brick the server stored.
	if err := stream.CloseRequest(); sendErr == nil {
		sendErr = err
	}
	// The receiver always finishes: every brick acknowledged, or Receive
	// failed (the server ended the stream, or the context ended).
	res := <-done
	_ = stream.CloseResponse()
	stats.Bricks = res.n
	stats.Bytes = int64(res.n) * brickBytes
	stats.BytesSent = res.sent
	stats.Elapsed = res.elapsed
	switch {
	case sendErr != nil:
		return sendErr
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return res.err
}
