// Package cluster replicates the tile store with Raft and finds its
// members with Serf.
//
// A Node owns a hashicorp/raft instance whose log and stable store is
// raft-wal and whose FSM is the tile store (Store; FileStore adapts
// *storage.Store). It implements storage.LDM, so the service serves a node
// exactly like a single store: writes (Append, CreateVolume, DeleteVolume)
// become Raft commands, reads are served by the local store, and the
// optional ReadBarrier and membership methods (Servers, RemoveServer,
// TransferLeader) back linearizable reads and ClusterService.
//
// Invariants:
//   - Every replica applies the same commands in log order, so a tile has
//     the same offset on every node. Offsets are assigned by the FSM, never
//     by the proposer.
//   - The Raft index of each applied command is stored with the data
//     (Tile.Index, VolumeMeta.Index, Store.SetAppliedIndex); entries at or
//     below the store's applied index are skipped, so a restart never
//     applies an entry twice.
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
//   - Serf runs on its own port. The leader adds alive members as voters
//     and removes members that left gracefully; a failed member stays a
//     voter until RemoveServer.
//
// All exported methods of Node are safe for concurrent use.
package cluster
