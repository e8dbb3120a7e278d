// Package client routes calls to a go-ldm cluster from Go programs.
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
// A Client is safe for concurrent use. Close stops its refresh goroutine.
package client
