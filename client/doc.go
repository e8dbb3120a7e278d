// Package client is the Go client of go-ldm: it routes calls over a
// cluster, imports volume files, and provides the HTTP/2 transport the
// calls need.
//
// Client wraps the generated Connect clients: it discovers the servers
// with ClusterService.GetServers, sends writes (WriteTile, CreateVolume,
// DeleteVolume) to the leader, spreads reads round-robin over the
// followers, and refreshes its view of the cluster periodically and
// whenever a call fails with Unavailable, then retries the call where that
// is safe: reads always, writes only when the server refused them (a write
// whose outcome is unknown is returned to the caller, never sent twice).
//
// For programs that use plain grpc-go, the package registers a resolver
// (scheme "ldm") and a balancer ("ldm_leader_follower") with the same
// policy:
//
//	conn, err := grpc.NewClient("ldm:///10.0.0.1:8080,10.0.0.2:8080",
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// A cluster under TLS needs NewResolverBuilder with an https client,
// passed with grpc.WithResolvers.
//
// Importing: Client.Import, Client.ImportReader and Client.ImportFile (or
// Importer, for generated Connect clients built by hand with their own
// protocol, TLS and interceptors) create a volume and send its bricks,
// every level of detail, with one WriteTileStream, reporting progress
// through a callback. The source is read once, as a stream, by a
// pyramid.Builder, so memory is about one brick row per level whatever the
// volume's size; building, sending and reading acknowledgements run at
// once. ImportFile streams NIfTI-1 and NRRD files (gzip included) with
// package volfile. An import that fails after creating its volume deletes
// it, so it can run again, unless it was interrupted (its context ended or
// the server became unreachable): then the volume keeps what was stored,
// is incomplete (ListBricks lists fewer bricks than expected), and an
// import with ImportOptions.Resume sends only the missing bricks. An
// import into a zstd volume (ImportOptions.Codec, or the volume's codec)
// compresses its bricks on every core before sending them.
//
// Transport: NewTransport speaks HTTP/2 only, h2c for http:// URLs and TLS
// for https://, with frames and windows sized for tiles. A Config without
// an HTTPClient, and NewResolverBuilder without one, use it.
//
// A Client is safe for concurrent use. Close stops its refresh goroutine.
package client
