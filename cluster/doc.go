// Package cluster replicates the tile store with Raft and finds its
// members with Serf.
//
// A Node owns a hashicorp/raft instance whose log and stable store is
// raft-wal and whose FSM is the tile store (Store; FileStore adapts
// *storage.Store). It implements storage.LDM and passes its conformance
// suite (storage/ldmtest), so the service serves a node exactly like a
// single store: writes (Append, CreateVolume, DeleteVolume) become Raft
// commands, reads are served by the local store, and the optional methods
// back what the service detects: ReadInto (the store's zero-allocation
// read, forwarded), ReadBarrier (linearizable reads) and membership
// (Servers, RemoveServer, TransferLeader) for ClusterService. Members is
// the membership in cluster's own type; Servers, in api.go, is the one
// place that converts to the API's messages.
//
// Invariants:
//   - Every replica applies the same commands in log order, so a tile has
//     the same offset on every node. Offsets are assigned by the FSM, never
//     by the proposer.
//   - A write is acknowledged once a majority's Raft logs hold it and the
//     leader applied it; the store is not fsynced in that path (the Raft
//     log is the durable copy). A background sync makes the store durable
//     and records the index it is durable through (Store.DurableIndex), and
//     a snapshot syncs first, so the log is never compacted past it.
//   - The Raft index of each applied command is stored with the data
//     (Tile.Index, VolumeMeta.Index); a restart skips entries at or below
//     the durable index and re-applies the ones above it idempotently
//     (replay.go), so no entry is applied twice. The Node assigns these indexes; the Index a
//     caller passes to Append or CreateVolume is ignored (storage.Tile's
//     rule: the layer that replicates sets it).
//   - One limit, Config.MaxTileBytes, holds on every node: a larger tile
//     is storage.ErrTooLarge before it is proposed or forwarded, and the
//     cap on one command (a 64 MiB batch plus one tile and framing) is the
//     same where a follower forwards and where the leader accepts.
//   - A command type the FSM does not know is an error (ErrUnknownCommand),
//     never a no-op.
//   - Only committed entries reach the store, so follow streams on any
//     node deliver committed tiles only.
//   - A follower forwards writes to the leader; a node that receives a
//     forwarded write and does not lead refuses it (no second hop). A
//     write is retried by the node only when it surely was not applied; a
//     write whose outcome is unknown fails with ErrUnknownOutcome.
//   - Raft shares the main port: Handler serves an HTTP/1.1 Upgrade
//     endpoint (RaftPath) that hijacks the connection, so under TLS the
//     *tls.Conn and its verified client certificate stay visible to the
//     HTTP middleware. See DESIGN.md.
//   - A linearizable read on the leader adds no log entry (read-index:
//     one barrier per term, then VerifyLeader and the commit index); a
//     follower's waits until it applied the leader's read index.
//   - Serf runs on its own port. The leader adds alive members as voters
//     only after they proved they are nodes (identify: the node transport
//     and a matching id and address, signed with Config.Key when set), and
//     removes members that left gracefully; a failed member stays a voter
//     until RemoveServer.
//   - With BootstrapExpect, only the empty member with the lowest id among
//     the expected ones writes a first configuration, and never a node
//     with Raft state or one that sees a member with state: parallel
//     starts form one cluster (bootstrap.go).
//   - With Config.Key every node-to-node request carries an HMAC of it
//     (ClusterAuthHeader), checked before Config.Authorize; see
//     peerauth.go.
//
// All exported methods of Node are safe for concurrent use. After Close,
// the storage.LDM methods fail with storage.ErrClosed, a second Close
// included.
package cluster
