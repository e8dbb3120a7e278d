package service

import (
	"context"
	"errors"
	"net/http"
	"runtime/debug"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/xcheng85/go-ldm/apiconv"
	ldmv1 "github.com/xcheng85/go-ldm/gen/ldm/v1"
	"github.com/xcheng85/go-ldm/gen/ldm/v1/ldmv1connect"
	"github.com/xcheng85/go-ldm/storage"
)

// The tile reads (ReadTile, GetBrick, ReadTileStream) answer with
// encodedTile messages: the protobuf encoding of the response is known
// before it is marshaled except for the tile's bytes, so it is kept as a
// few header bytes, the value (which aliases the store's mapping of its
// data file, see TileViewer) and a few trailing bytes. tileCodec writes
// the three parts one after another into connect-go's send buffer, which
// is the one copy of the tile's bytes between the page cache and the
// HTTP/2 framer: no read into a buffer of ours and no protobuf marshal.
//
// encodedTile embeds the response message it encodes, so every other codec
// (Connect JSON) and every interceptor sees an ordinary proto.Message; the
// embedded message's Value aliases the same bytes.

// TileViewer is an optional capability of a Tiles value: reads whose value
// aliases the store's memory instead of a copy (storage.Store.ReadView).
// The caller calls release once it no longer uses the value and never
// writes to it. The errors are those of Read and Brick.
type TileViewer interface {
	ReadView(volume string, offset uint64) (t storage.Tile, release func(), err error)
	BrickView(volume string, key storage.BrickKey) (t storage.Tile, release func(), err error)
}

var _ TileViewer = (*storage.Store)(nil)

// encodedTile is a response message (ReadTileResponse, GetBrickResponse,
// ReadTileStreamResponse) whose field 1 is a tile, with its protobuf
// encoding split around the tile's value: head, value, tail. Build it with
// set; it is not safe for concurrent use.
type encodedTile struct {
	proto.Message // the same response, for other codecs and interceptors

	head  []byte // response tag and length, the tile's value tag and length
	value []byte
	tail  []byte // the tile's other fields, then the response's after the tile
	plain bool   // no kept encoding: marshal Message

	buf [80]byte // backing of head and tail
}

// setTile encodes msg, whose field 1 is set to tile (both built from t),
// byte for byte as proto.Marshal does (fields in number order, zero
// values omitted).
func (e *encodedTile) setTile(msg proto.Message, t storage.Tile) { e.setTileAfter(msg, t, nil) }

// setTileAfter is setTile for a response with fields after the tile,
// encoded in after.
func (e *encodedTile) setTileAfter(msg proto.Message, t storage.Tile, after []byte) {
	e.Message, e.plain = msg, false
	e.value = t.Value
	b := e.buf[:0]
	// The tile's fields after its value: offset (2), key (3), crc32c (4).
	if t.Offset != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, t.Offset)
	}
	if t.HasKey {
		var k [24]byte
		kb := k[:0]
		for i, v := range [4]uint32{t.Key.LOD, t.Key.X, t.Key.Y, t.Key.Z} {
			if v != 0 {
				kb = protowire.AppendTag(kb, protowire.Number(i+1), protowire.VarintType)
				kb = protowire.AppendVarint(kb, uint64(v))
			}
		}
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendBytes(b, kb)
	}
	if t.CRC32C != 0 {
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(t.CRC32C))
	}
	// The tile's codec (5), which msg's tile carries (see codec.go).
	if m, ok := msg.(interface{ GetTile() *ldmv1.Tile }); ok && m.GetTile().GetCodec() != 0 {
		b = protowire.AppendTag(b, 5, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.GetTile().GetCodec()))
	}
	tileLen := len(b)
	b = append(b, after...)
	tailLen := len(b)
	if len(t.Value) > 0 { // proto3 omits empty bytes
		tileLen += 1 + protowire.SizeVarint(uint64(len(t.Value))) + len(t.Value)
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(tileLen))
	if len(t.Value) > 0 {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(t.Value)))
	}
	e.tail, e.head = b[:tailLen:tailLen], b[tailLen:]
}

// setBricks encodes a StreamBricksResponse: with its tile t kept (m.Tile
// built from t), or, without a tile (a missing brick), as an ordinary
// message.
func (e *encodedTile) setBricks(m *ldmv1.StreamBricksResponse, t storage.Tile) {
	if m.Tile == nil {
		e.Message, e.head, e.value, e.tail = m, nil, nil, nil
		e.plain = true
		return
	}
	// The response's fields after the tile: total (2), index (3); missing
	// (4) is only set without a tile.
	var after [12]byte
	b := after[:0]
	if m.Total != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Total))
	}
	if m.Index != 0 {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(m.Index))
	}
	e.setTileAfter(m, t, b)
}

// size is the length of the encoding.
func (e *encodedTile) size() int { return len(e.head) + len(e.value) + len(e.tail) }

// appendTo appends the encoding to dst, growing it at most once.
func (e *encodedTile) appendTo(dst []byte) []byte {
	if n := len(dst) + e.size(); n > cap(dst) {
		dst = append(make([]byte, 0, n), dst...)
	}
	dst = append(dst, e.head...)
	dst = append(dst, e.value...)
	return append(dst, e.tail...)
}

// errMappedFault: a tile's bytes could not be read from the mapped data
// file while the response was encoded.
var errMappedFault = errors.New("service: reading the tile's data file failed (the file was cut short or the disk failed); retry, and run a verify of the store")

// appendGuarded is appendTo for a value that may alias a mapped data file
// (storage.Store.ReadView): the store checked the bytes, but if the file is
// cut short afterwards by something outside the store, or a page cannot be
// read, touching it raises SIGBUS, which would kill the process. Under
// debug.SetPanicOnFault (per goroutine; the previous setting is restored)
// the fault becomes errMappedFault.
func (e *encodedTile) appendGuarded(dst []byte) (out []byte, err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			out, err = nil, errMappedFault
		}
	}()
	return e.appendTo(dst), nil
}

// tileCodec is connect-go's protobuf binary codec ("proto") with a pass
// through for encodedTile: its MarshalAppend appends the kept encoding.
// Every other message is marshaled and unmarshaled as connect-go's own
// codec does.
type tileCodec struct{}

func (tileCodec) Name() string { return "proto" }

func (c tileCodec) Marshal(m any) ([]byte, error) { return c.MarshalAppend(nil, m) }

// MarshalAppend is the codec method connect-go prefers: it appends to a
// buffer from its pool, so the encoding is copied once and nothing is
// allocated once the pool's buffers are large enough.
func (tileCodec) MarshalAppend(dst []byte, m any) ([]byte, error) {
	if e, ok := m.(*encodedTile); ok && !e.plain {
		return e.appendGuarded(dst)
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errNotProto
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, pm)
}

func (tileCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errNotProto
	}
	return proto.Unmarshal(b, pm)
}

var errNotProto = errors.New("service: message is not a protobuf message")

// tileReadHandlers returns the handlers of ReadTile, GetBrick,
// ReadTileStream and StreamBricks that answer with encodedTile through tileCodec, by path.
// They replace the generated handlers of those procedures (mounted on the
// more specific path) and run the same options and interceptors.
func (s *Server) tileReadHandlers(opts []connect.HandlerOption) map[string]http.Handler {
	tileMethods := ldmv1.File_ldm_v1_tile_proto.Services().ByName("TileService").Methods()
	volumeMethods := ldmv1.File_ldm_v1_volume_proto.Services().ByName("VolumeService").Methods()
	codec := connect.WithCodec(tileCodec{})
	th := &tileHandler{s: s}
	return map[string]http.Handler{
		ldmv1connect.TileServiceReadTileProcedure: connect.NewUnaryHandler(
			ldmv1connect.TileServiceReadTileProcedure, th.readTileEncoded,
			connect.WithSchema(tileMethods.ByName("ReadTile")),
			connect.WithIdempotency(connect.IdempotencyNoSideEffects),
			connect.WithHandlerOptions(opts...), codec),
		ldmv1connect.TileServiceReadTileStreamProcedure: connect.NewServerStreamHandler(
			ldmv1connect.TileServiceReadTileStreamProcedure, th.readTileStreamEncoded,
			connect.WithSchema(tileMethods.ByName("ReadTileStream")),
			connect.WithHandlerOptions(opts...), codec),
		ldmv1connect.VolumeServiceStreamBricksProcedure: connect.NewServerStreamHandler(
			ldmv1connect.VolumeServiceStreamBricksProcedure, (&volumeHandler{s: s}).streamBricksEncoded,
			connect.WithSchema(volumeMethods.ByName("StreamBricks")),
			connect.WithHandlerOptions(opts...), codec),
		ldmv1connect.VolumeServiceGetBrickProcedure: connect.NewUnaryHandler(
			ldmv1connect.VolumeServiceGetBrickProcedure, (&volumeHandler{s: s}).getBrickEncoded,
			connect.WithSchema(volumeMethods.ByName("GetBrick")),
			connect.WithIdempotency(connect.IdempotencyNoSideEffects),
			connect.WithHandlerOptions(opts...), codec),
	}
}

// viewer returns the store's TileViewer when ctx's call can hold a view
// until its response is written (see afterResponse), or nil.
func (s *Server) viewer(ctx context.Context) TileViewer {
	v, ok := s.store.(TileViewer)
	if !ok {
		return nil
	}
	if callFrom(ctx) == nil {
		return nil
	}
	return v
}

// encodeReadTile returns t as an encoded ReadTileResponse.
func encodeReadTile(t storage.Tile, codec ldmv1.Codec) *encodedTile {
	e := new(encodedTile)
	e.setTile(&ldmv1.ReadTileResponse{Tile: tileToAPI(t, codec)}, t)
	return e
}

// getBrickEncoded is GetBrick answered with the tile's kept encoding (see
// encodedTile).
func (h *volumeHandler) getBrickEncoded(ctx context.Context, req *connect.Request[ldmv1.GetBrickRequest]) (*connect.Response[encodedTile], error) {
	e, etag, err := h.getBrick(ctx, req)
	if err != nil {
		return nil, err
	}
	res := connect.NewResponse(e)
	if etag != "" {
		res.Header().Set("ETag", etag)
		res.Header().Set("Cache-Control", cacheRevalidate)
	}
	return res, nil
}

// getBrick reads the brick of a GetBrick request; every error is decided
// here, before connect-go writes a byte. A GET's entity tag is returned
// (empty otherwise).
func (h *volumeHandler) getBrick(ctx context.Context, req *connect.Request[ldmv1.GetBrickRequest]) (e *encodedTile, etag string, err error) {
	if err := h.s.readBarrier(ctx, req.Msg.GetConsistency()); err != nil {
		return nil, "", connectError(err)
	}
	vol, key := req.Msg.GetVolume(), apiconv.KeyFromAPI(req.Msg.GetKey())
	get := req.HTTPMethod() == http.MethodGet
	var created int64
	if get || req.Msg.GetGeneration() != 0 {
		info, err := h.s.store.Volume(vol)
		if err != nil {
			return nil, "", connectError(err)
		}
		if err := checkGeneration(info, req.Msg.GetGeneration()); err != nil {
			return nil, "", connectError(err)
		}
		created = info.CreatedAt.UnixNano()
	}
	// The brick's bytes count against the read budget until connect-go
	// has written the response.
	t, err := h.s.readForResponse(ctx, func(v TileViewer) (storage.Tile, func(), error) { return v.BrickView(vol, key) },
		nil, func() (storage.Tile, error) { return h.s.store.Brick(vol, key) })
	if err != nil {
		return nil, "", connectError(err)
	}
	if get {
		// The brick's latest tile is at t.Offset; the tag changes when
		// the brick is written again.
		etag = tileETag(created, t.Offset)
		if etagMatches(req.Header().Get("If-None-Match"), etag) {
			hdr := http.Header{}
			hdr.Set("ETag", etag)
			hdr.Set("Cache-Control", cacheRevalidate)
			return nil, "", connect.NewNotModifiedError(hdr)
		}
	}
	e = new(encodedTile)
	e.setTile(&ldmv1.GetBrickResponse{Tile: tileToAPI(t, h.s.volumeCodec(vol))}, t)
	return e, etag, nil
}

// streamReader reads the tiles of a stream one after another: views of the
// store's memory when it has them (each holding read budget for
// connect-go's encoded copy until it is sent), otherwise into one pooled
// buffer reused for every tile (holding budget for it). Each read returns
// a function to call once the tile is sent. It is not safe for concurrent
// use; close it when the stream ends.
type streamReader struct {
	s    *Server
	ctx  context.Context
	v    TileViewer
	rb   *readBuf
	done func(last []byte)
}

func (s *Server) newStreamReader(ctx context.Context) *streamReader {
	r := &streamReader{s: s, ctx: ctx, v: s.viewer(ctx)}
	if r.v == nil {
		buf, done := s.streamBuffer()
		r.rb, r.done = &readBuf{budget: s.reads, buf: buf}, done
	}
	return r
}

// view takes budget for a view's bytes.
func (r *streamReader) view(t storage.Tile, release func(), err error) (storage.Tile, func(), error) {
	if err != nil {
		return storage.Tile{}, func() {}, err
	}
	held, err := r.s.reads.acquire(r.ctx, int64(len(t.Value)))
	if err != nil {
		release()
		return storage.Tile{}, func() {}, err
	}
	return t, func() { release(); r.s.reads.release(held) }, nil
}

// read reads the tile at offset.
func (r *streamReader) read(volume string, offset uint64) (storage.Tile, func(), error) {
	if r.v != nil {
		return r.view(r.v.ReadView(volume, offset))
	}
	t, err := r.rb.read(r.ctx, func(b []byte) (storage.Tile, error) { return r.s.readInto(volume, offset, b) })
	return t, func() {}, err
}

// brick reads a brick's latest tile. Without views the tile is the
// store's own array, let go of once it is sent.
func (r *streamReader) brick(volume string, key storage.BrickKey) (storage.Tile, func(), error) {
	if r.v != nil {
		return r.view(r.v.BrickView(volume, key))
	}
	t, err := r.rb.read(r.ctx, func([]byte) (storage.Tile, error) { return r.s.store.Brick(volume, key) })
	return t, r.letGo, err
}

// letGo gives back the buffer and the budget the reader holds.
func (r *streamReader) letGo() {
	if r.rb != nil {
		r.rb.release()
	}
}

func (r *streamReader) close() {
	if r.rb != nil {
		r.done(r.rb.buf)
		r.rb.release()
	}
}
