// Package service serves the ldm.v1 API (TileService, VolumeService and
// ClusterService) with connect-go, so gRPC, gRPC-Web and Connect clients
// (binary and JSON) share one HTTP port, together with grpc.health.v1 and
// server reflection (v1 and v1alpha).
//
// The package depends only on the generated code, connect-go and the value
// types and sentinel errors of storage. The data behind the handlers is any
// implementation of the small Tiles interface declared here: the
// single-node store and a replicated cluster node both satisfy it. Optional
// capabilities (linearizable reads, cluster membership) are detected with
// type assertions on the Tiles value.
//
// Invariants:
//   - Handlers never return raw errors: every error goes through one
//     mapping (see errors.go) to a Connect code with details.
//   - Every interceptor wraps unary and streaming calls alike. The order,
//     outermost first: access log (so every call is logged with its final
//     code, panics included), panic recovery, Config.Interceptors
//     (authentication and authorization), request validation, then the
//     handler.
//   - With Config.Authenticate, every call is authenticated from its headers
//     before any byte of its body is read or decompressed (gate.go); callers
//     that are not authenticated get the smaller message limit.
//   - Tile bytes that calls hold (reads in flight, ingest queues) are
//     counted against server-wide byte budgets (budget.go); a call waiting
//     for room holds nothing.
//   - ReadTile, GetBrick, ReadTileStream and StreamBricks pass each tile's
//     bytes through unmarshaled (encoded.go): from a store with views
//     (TileViewer) the handler answers with the response's protobuf
//     encoding around a view of the store's memory, which the "proto"
//     codec appends to connect-go's send buffer, byte for byte what
//     proto.Marshal makes; other codecs (JSON) and interceptors see the
//     ordinary message. Every error is decided in the handler, before any
//     byte is written, and the view is released once the response is.
//   - Tile bytes are never gzip- or zstd-compressed by the transport unless
//     Config.Compress is set, and a tile stored zstd-compressed is never
//     compressed again: its response goes in the transport's stored blocks
//     (compress_zstd.go).
//   - Every tile of a volume is stored in the volume's codec (raw or zstd,
//     codec.go): converted once at write, served as stored by the tile
//     reads (Tile.codec says which) and the Zarr views, decoded only by
//     ReadRegion and the precomputed view, never past the brick's size; a
//     frame that does not decode to exactly the brick is DataLoss.
//   - A tile at an offset of one generation of a volume never changes, so
//     GET reads of ReadTile carry an ETag with the volume's generation, are
//     immutable when the request names the generation (otherwise
//     revalidated), and If-None-Match answers 304. A read that names
//     another generation than the volume's is FailedPrecondition.
//   - The OME-Zarr and Neuroglancer precomputed views (views.go, mounted
//     by the server at ViewPaths) are plain HTTP reads of the same store:
//     each request is authorized as a read of its volume
//     (ViewConfig.Authorize) before anything of the volume is looked at,
//     gets the CORS headers of reads on every response, counts its brick
//     against the read budget, and never serves a corrupt brick.
//   - WriteTile and WriteTileStream deduplicate by request id: through
//     IdempotentAppender when the store has it (a cluster node, where the
//     ids are replicated), else in memory (requestIDs).
package service
