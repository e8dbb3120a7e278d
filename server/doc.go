// Package server assembles a whole go-ldm server from one Config: the tile
// store, then (with Config.Cluster.NodeID) the Raft/Serf cluster node that
// wraps it, then TLS, authentication and authorization, then the ldm.v1
// service, and last the HTTP server that serves the API, the cluster's
// node-to-node endpoints and the viewer on one listener.
//
// It is the only package that wires concrete types together. `ldm serve`
// maps its flags and environment to a Config and calls New and Serve;
// tests and Go programs that embed a server do the same, passing what they
// need (a listener, an in-memory or fault-injecting store, a logger) as
// Config values:
//
//	s, err := server.New(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: dir})
//	if err != nil { ... }
//	go s.Serve(ctx) // until ctx ends; then drains streams and closes the store
//	client := ldmv1connect.NewVolumeServiceClient(http.DefaultClient, s.URL())
//
// Invariants:
//   - New reads the whole Config once, validates it and builds everything in
//     one sequence (see New); there are no registries, hooks or package
//     state. A Config error wraps ErrInvalidConfig.
//   - What New opens, the server owns and closes: on New's error, on Serve's
//     return, or on Close. A store passed in Config.Tiles stays the caller's.
//   - Shutdown order: stop accepting, drain streams, wait for open calls (up
//     to the shutdown timeout), stop the cluster node and authentication,
//     close the store. The store is closed last, after everything that
//     writes to it.
//   - A non-loopback address is refused without TLS and authentication
//     unless Config.Insecure is set.
//   - The cluster's node-to-node endpoints are never more open than the
//     API: with authentication on, a node needs TLS (node certificates,
//     verified against --client-ca and --peer-ca) or Config.Cluster.Key.
package server
