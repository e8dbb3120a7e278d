package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"connectrpc.com/connect"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
)

// Cache headers of GET reads. A tile at an offset of one generation of a
// volume never changes: the generation is part of the ETag, so a volume
// deleted and created again under the same name gets new ETags, and a GET
// that names the generation (so its URL is unique to it) is immutable. A
// GET without one may be answered by another generation of the volume at
// the same URL later, so it is revalidated. A brick key's latest tile may
// change, so GetBrick responses are always revalidated.
const (
	cacheImmutable  = "public, max-age=31536000, immutable"
	cacheRevalidate = "no-cache"
)

// ingestQueue is how many received WriteTileStream messages may wait for
// the store while the previous batch is appended.
const ingestQueue = 64

// ingestBatchBytes bounds the bytes of one Append batch of WriteTileStream
// (counted as the ingest budgets count them, see decodedBytes).
const ingestBatchBytes = 64 << 20

type tileHandler struct {
	ldmv1connect.UnimplementedTileServiceHandler
	s *Server
}

// appendError names the crc32c field when the store rejects a tile whose
// checksum does not match its bytes (the only ErrCorrupt of an append).
func appendError(err error) error {
	if errors.Is(err, storage.ErrCorrupt) {
		return withField("tile.crc32c", err)
	}
	if errors.Is(err, storage.ErrTooLarge) {
		return withField("tile.value", err)
	}
	return err
}

func (h *tileHandler) WriteTile(ctx context.Context, req *connect.Request[ldmv1.WriteTileRequest]) (*connect.Response[ldmv1.WriteTileResponse], error) {
	var ids []string
	if id := req.Msg.GetRequestId(); id != "" {
		ids = []string{id}
	}
	// A zstd tile's content is counted in the ingest budget before it is
	// decoded (see acquireUnaryIngest).
	release, err := h.s.acquireUnaryIngest(ctx, req.Msg.GetVolume(), req.Msg.GetTile())
	if err != nil {
		return nil, connectError(err)
	}
	defer release()
	tiles := []storage.Tile{apiconv.TileFromAPI(req.Msg.GetTile())}
	if err := h.s.ingestTiles(req.Msg.GetVolume(), tiles, []ldmv1.Codec{req.Msg.GetTile().GetCodec()}); err != nil {
		return nil, connectError(err)
	}
	off, _, err := h.s.appendTiles(ctx, req.Msg.GetVolume(), tiles, ids)
	if err != nil {
		return nil, connectError(appendError(err))
	}
	return connect.NewResponse(&ldmv1.WriteTileResponse{Offset: off}), nil
}

// readBarrier makes a CONSISTENCY_LINEARIZABLE read linearizable when the
// store can (see ReadBarrier); a single node serves it locally.
func (s *Server) readBarrier(ctx context.Context, c ldmv1.Consistency) error {
	if c != ldmv1.Consistency_CONSISTENCY_LINEARIZABLE {
		return nil
	}
	if rb, ok := s.store.(ReadBarrier); ok {
		return rb.ReadBarrier(ctx)
	}
	return nil
}

// readInto reads a tile for a stream, into buf when the store can (see
// ReaderInto). The caller may reuse the returned Value's array for the
// next read once the tile has been sent.
func (s *Server) readInto(volume string, offset uint64, buf []byte) (storage.Tile, error) {
	if r, ok := s.store.(ReaderInto); ok {
		return r.ReadInto(volume, offset, buf)
	}
	return s.store.Read(volume, offset)
}

// tileETag is the entity tag of the tile at offset in a volume created at
// createdNanos.
func tileETag(createdNanos int64, offset uint64) string {
	return `"` + strconv.FormatInt(createdNanos, 36) + "-" + strconv.FormatUint(offset, 10) + `"`
}

// etagMatches reports whether an If-None-Match header value lists etag.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, part := range splitComma(header) {
		if part == "*" || part == etag || part == "W/"+etag {
			return true
		}
	}
	return false
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			p := s[start:i]
			for len(p) > 0 && (p[0] == ' ' || p[0] == '\t') {
				p = p[1:]
			}
			for len(p) > 0 && (p[len(p)-1] == ' ' || p[len(p)-1] == '\t') {
				p = p[:len(p)-1]
			}
			if p != "" {
				out = append(out, p)
			}
			start = i + 1
		}
	}
	return out
}

func (h *tileHandler) ReadTile(ctx context.Context, req *connect.Request[ldmv1.ReadTileRequest]) (*connect.Response[ldmv1.ReadTileResponse], error) {
	e, etag, cache, err := h.readTile(ctx, req)
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(e.Message.(*ldmv1.ReadTileResponse))
	if etag != "" {
		res.Header().Set("ETag", etag)
		res.Header().Set("Cache-Control", cache)
	}
	return res, nil
}

// readTileEncoded is ReadTile answered with the tile's kept encoding (see
// encodedTile).
func (h *tileHandler) readTileEncoded(ctx context.Context, req *connect.Request[ldmv1.ReadTileRequest]) (*connect.Response[encodedTile], error) {
	e, etag, cache, err := h.readTile(ctx, req)
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(e)
	if etag != "" {
		res.Header().Set("ETag", etag)
		res.Header().Set("Cache-Control", cache)
	}
	return res, nil
}

// readTile reads the tile of a ReadTile request. Every error (a missing
// volume, an offset past the end, a checksum that fails) is decided here,
// before connect-go writes any byte of the response. A GET's response
// headers are the entity tag and cache control it returns (etag is empty
// otherwise).
func (h *tileHandler) readTile(ctx context.Context, req *connect.Request[ldmv1.ReadTileRequest]) (e *encodedTile, etag, cache string, err error) {
	if err := h.s.readBarrier(ctx, req.Msg.GetConsistency()); err != nil {
		return nil, "", "", connectError(err)
	}
	vol, off, gen := req.Msg.GetVolume(), req.Msg.GetOffset(), req.Msg.GetGeneration()
	get := req.HTTPMethod() == http.MethodGet
	cache = cacheRevalidate
	if gen != 0 {
		cache = cacheImmutable
	}
	if get || gen != 0 {
		info, err := h.s.store.Volume(vol)
		if err != nil {
			return nil, "", "", connectError(err)
		}
		if err := checkGeneration(info, gen); err != nil {
			return nil, "", "", connectError(err)
		}
		etag = tileETag(info.CreatedAt.UnixNano(), off)
		if get && off < info.NextOffset && etagMatches(req.Header().Get("If-None-Match"), etag) {
			hdr := http.Header{}
			hdr.Set("ETag", etag)
			hdr.Set("Cache-Control", cache)
			return nil, "", "", connect.NewNotModifiedError(hdr)
		}
	}
	if !get {
		etag = ""
	}
	t, err := h.s.readForResponse(ctx, func(v TileViewer) (storage.Tile, func(), error) { return v.ReadView(vol, off) },
		func(r ReaderInto, buf []byte) (storage.Tile, error) { return r.ReadInto(vol, off, buf) },
		func() (storage.Tile, error) { return h.s.store.Read(vol, off) })
	if errors.Is(err, storage.ErrOutOfRange) {
		err = withField("offset", err)
	}
	if err != nil {
		// A damaged tile is DataLoss, not a bad offset.
		return nil, "", "", connectError(err)
	}
	return encodeReadTile(t, h.s.volumeCodec(vol)), etag, cache, nil
}

// readForResponse reads the tile of a unary read, which connect-go writes
// after the handler returns: the tile's bytes stay valid, and count against
// the read budget, until the response is written (see afterResponse). It
// takes a view of the store's memory when the store has them (view),
// otherwise it reads into a pooled buffer (into) or a new one (read).
func (s *Server) readForResponse(ctx context.Context,
	view func(TileViewer) (storage.Tile, func(), error),
	into func(ReaderInto, []byte) (storage.Tile, error),
	read func() (storage.Tile, error),
) (storage.Tile, error) {
	if v := s.viewer(ctx); v != nil {
		t, release, err := view(v)
		if err != nil {
			return storage.Tile{}, err
		}
		afterResponse(ctx, release)
		// The view holds no memory of ours; the budget bounds connect-go's
		// encoded copies of the responses in flight.
		held, err := s.reads.acquire(ctx, int64(len(t.Value)))
		if err != nil {
			return storage.Tile{}, err
		}
		afterResponse(ctx, func() { s.reads.release(held) })
		return t, nil
	}
	// The tile is read into a pooled buffer that goes back to the pool,
	// with the read budget it holds, once connect-go has written the
	// response (see withCalls).
	if r, ok := s.store.(ReaderInto); ok && into != nil {
		buf, keep := borrowBuffer(ctx)
		rb := &readBuf{budget: s.reads, buf: buf}
		t, err := rb.read(ctx, func(b []byte) (storage.Tile, error) { return into(r, b) })
		if err == nil {
			keep(t.Value)
		}
		afterResponse(ctx, func() { rb.budget.release(rb.held) })
		return t, err
	}
	rb := &readBuf{budget: s.reads}
	t, err := rb.read(ctx, func([]byte) (storage.Tile, error) { return read() })
	afterResponse(ctx, rb.release)
	return t, err
}

func (h *tileHandler) ReadTileStream(ctx context.Context, req *connect.Request[ldmv1.ReadTileStreamRequest], stream *connect.ServerStream[ldmv1.ReadTileStreamResponse]) error {
	msg := &ldmv1.ReadTileStreamResponse{}
	codec := h.s.volumeCodec(req.Msg.GetVolume())
	return h.readTileStream(ctx, req.Msg, func() error { return stream.Send(nil) }, func(t storage.Tile) error {
		msg.Tile = tileToAPI(t, codec)
		return stream.Send(msg)
	})
}

// readTileStreamEncoded is ReadTileStream answered with each tile's kept
// encoding (see encodedTile).
func (h *tileHandler) readTileStreamEncoded(ctx context.Context, req *connect.Request[ldmv1.ReadTileStreamRequest], stream *connect.ServerStream[encodedTile]) error {
	e := new(encodedTile)
	codec := h.s.volumeCodec(req.Msg.GetVolume())
	return h.readTileStream(ctx, req.Msg, func() error { return stream.Send(nil) }, func(t storage.Tile) error {
		e.setTile(&ldmv1.ReadTileStreamResponse{Tile: tileToAPI(t, codec)}, t)
		return stream.Send(e)
	})
}

// readTileStream serves a ReadTileStream request: sendHeaders sends the
// response headers, send one tile (whose bytes are valid until send
// returns).
func (h *tileHandler) readTileStream(ctx context.Context, req *ldmv1.ReadTileStreamRequest, sendHeaders func() error, send func(storage.Tile) error) error {
	vol, off, follow := req.GetVolume(), req.GetOffset(), req.GetFollow()
	info, err := h.s.store.Volume(vol)
	if err != nil {
		return connectError(err)
	}
	if !follow && off > info.NextOffset {
		return connectError(withField("offset", fmt.Errorf("%w: offset %d is past the end of volume %q (next offset %d)", storage.ErrOutOfRange, off, vol, info.NextOffset)))
	}
	end := info.NextOffset // without follow, the stream ends here
	ctx, release := h.s.streamContext(ctx)
	defer release()
	defer h.s.trackStream(ctx)()
	if follow {
		// Send the response headers now: a client's call returns once
		// they arrive, and a follower may wait long for its first tile.
		if err := sendHeaders(); err != nil {
			return nil // the client went away
		}
	}
	// A view of the store's memory per tile, or one pooled buffer for
	// every tile (see streamReader); the reader lets go of what it holds
	// before the stream waits for new tiles.
	r := h.s.newStreamReader(ctx)
	defer r.close()
	for {
		if !follow && off >= end {
			return nil
		}
		t, sent, err := r.read(vol, off)
		if errors.Is(err, storage.ErrOutOfRange) && follow {
			// Tail: sleep until the log grows past off, without polling,
			// holding no buffer and no read budget.
			r.letGo()
			if err := h.s.store.Wait(ctx, vol, off); err != nil {
				if ctx.Err() != nil || errors.Is(err, storage.ErrClosed) {
					// The client went away or the server is draining:
					// end the stream cleanly.
					return nil
				}
				return connectError(err)
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
		err = send(t)
		sent()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return connectError(err)
		}
		off++
	}
}

func (h *tileHandler) WriteTileStream(ctx context.Context, stream *connect.BidiStream[ldmv1.WriteTileStreamRequest, ldmv1.WriteTileStreamResponse]) error {
	// A receiver goroutine reads messages into a queue bounded in messages
	// and in bytes (per stream and server-wide: the receiver stops reading,
	// and HTTP/2 flow control holds the client back, while the queue is
	// full); this goroutine appends whatever has queued up (same volume, up
	// to ingestBatchBytes) in one Append, so the store commits many tiles
	// per sync, then answers each tile with its offset, in order.
	defer h.s.trackStream(ctx)()
	ctx, cancel := context.WithCancel(ctx)
	type item struct {
		volume string
		tile   storage.Tile
		codec  ldmv1.Codec // the tile's codec as sent (see ingestTiles)
		id     string      // request id
		held   [2]int64    // bytes taken from the stream's and the server's budget
		cost   int64       // bytes sent plus the decoded content or compressed copy (ingest_cost.go)
	}
	own := newByteBudget(h.s.streamIngest)
	releaseItem := func(it item) {
		own.release(it.held[0])
		h.s.ingest.release(it.held[1])
	}
	queue := make(chan item, ingestQueue)
	recvErr := make(chan error, 1)
	var pending *item // taken from the queue, for the next batch
	defer func() {
		cancel()
		if pending != nil {
			releaseItem(*pending)
		}
		// Give back the budget of tiles still queued; the receiver closes
		// the queue once connect has closed the request body.
		go func() {
			for it := range queue {
				releaseItem(it)
			}
		}()
	}()
	go func() {
		defer close(queue)
		volume := ""
		for {
			msg, err := stream.Receive()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				recvErr <- err
				return
			}
			if msg.GetVolume() != "" {
				volume = msg.GetVolume()
			}
			// A zstd tile counts with the content its frame declares, a
			// raw tile for a zstd volume with the largest frame it
			// compresses to, taken before it is converted (see
			// ingest_cost.go); one that cannot fit ends the stream after
			// the tiles before it.
			extra, compressed, err := h.s.ingestExtra(volume, msg.GetTile())
			n := int64(len(msg.GetTile().GetValue())) + extra
			if err == nil {
				err = h.s.tooLargeToIngest(extra, n, compressed, own)
			}
			if err != nil {
				recvErr <- err
				return
			}
			it := item{volume: volume, tile: apiconv.TileFromAPI(msg.GetTile()), codec: msg.GetTile().GetCodec(), id: msg.GetRequestId(), cost: n}
			var aerr error
			if it.held[0], aerr = own.acquire(ctx, n); aerr == nil {
				if it.held[1], aerr = h.s.ingest.acquire(ctx, n); aerr != nil {
					own.release(it.held[0])
				}
			}
			if aerr != nil {
				recvErr <- nil
				return
			}
			select {
			case queue <- it:
			case <-ctx.Done():
				releaseItem(it)
				recvErr <- nil
				return
			}
		}
	}()

	batch := make([]storage.Tile, 0, ingestQueue)
	batchIDs := make([]string, 0, ingestQueue)
	batchCodecs := make([]ldmv1.Codec, 0, ingestQueue)
	held := make([]item, 0, ingestQueue)
	res := &ldmv1.WriteTileStreamResponse{}
	for {
		var first item
		if pending != nil {
			first, pending = *pending, nil
		} else {
			var it item
			var ok bool
			select {
			case it, ok = <-queue:
			case <-h.s.drain.Done():
				// Shutting down: the tiles acknowledged so far are
				// stored; the client resends the rest elsewhere or later.
				return connect.NewError(connect.CodeUnavailable, errors.New("the server is shutting down: tiles acknowledged so far are stored, send the rest again later or to another server"))
			}
			if !ok {
				break
			}
			first = it
		}
		batch = append(batch[:0], first.tile)
		batchIDs = append(batchIDs[:0], first.id)
		batchCodecs = append(batchCodecs[:0], first.codec)
		held = append(held[:0], first)
		size := first.cost // decoded bytes and compressed copies included
	fill:
		for size < ingestBatchBytes {
			select {
			case it, ok := <-queue:
				if !ok {
					break fill
				}
				if it.volume != first.volume {
					pending = &it
					break fill
				}
				batch = append(batch, it.tile)
				batchIDs = append(batchIDs, it.id)
				batchCodecs = append(batchCodecs, it.codec)
				held = append(held, it)
				size += it.cost
			default:
				break fill
			}
		}
		err := h.s.ingestTiles(first.volume, batch, batchCodecs)
		var off uint64
		var offs []uint64
		if err == nil {
			off, offs, err = h.s.appendTiles(ctx, first.volume, batch, batchIDs)
		}
		clear(batch) // drop references to tile bytes
		for _, it := range held {
			releaseItem(it)
		}
		clear(held)
		if err != nil {
			// The receiver may still be blocked in Receive; connect closes
			// the request body when this handler returns, which ends it.
			return connectError(appendError(err))
		}
		for i := range batch {
			res.Offset = off + uint64(i)
			if offs != nil {
				res.Offset = offs[i]
			}
			if err := stream.Send(res); err != nil {
				return connectError(err)
			}
		}
	}
	if err := <-recvErr; err != nil {
		return connectError(err)
	}
	return nil
}
