// Package storage is go-ldm's tile store: volumes, each an append-only log
// of tiles, kept in blocks of a data file and a memory-mapped index file.
//
// Two implementations sit behind the LDM interface: Store (Open), the
// durable file store, and Memory (NewMemory), for tests and demos. One
// conformance suite, storage/ldmtest, runs against both.
//
// # Model
//
// A volume is named (NamePattern) and described by VolumeMeta. Appending
// assigns offsets 0, 1, 2, ...; a tile at an offset never changes. A tile
// may carry a brick key; the brick index maps each key to the offset of its
// latest tile. Each tile also carries a replication index (Tile.Index) that
// a replicated caller sets, so the last applied index can be recovered from
// the data (Store.AppliedIndex). A replicated caller that keeps its own
// durable log appends with Store.AppendDeferred (no fsync) and calls
// Store.Sync in the background; Store.DurableIndex is then where its log
// must be replayed from after a crash.
//
// # Invariants of the file store
//
//   - A tile is visible to readers only after it is durable under the sync
//     policy (a deferred append: at once, durable at the next Sync), and it
//     is visible whole or not at all.
//   - A record's header carries every field of its index entry, so the
//     data file is the durable record; an append is acknowledged once the
//     data file is fdatasynced. Index entries are written after that, so an
//     entry on disk always points at a whole record.
//   - A block's index is fsynced before any entry of the next block is
//     written, so only the last block's index can lag or be torn; Open
//     rebuilds its lag from the record headers and cuts torn data.
//   - Every file starts with magic, version and a checksum; every record
//     and index entry has its own checksum. Bytes whose checksum fails are
//     never returned: reads fail with ErrCorrupt. ReadView and BrickView,
//     which return a tile's value as a slice of the data file's read-only
//     mapping, check it the first time the process reads the tile and
//     remember that it passed; damage after that is found by Verify, which
//     makes the tile's next view check it again.
//   - Nothing depends on Close: files are never pre-grown, and new files
//     and directories are written as tmp, fsync, rename, fsync directory.
//   - A failed write or fsync (a full disk is ErrNoSpace) leaves the
//     volume as if the failed appends had not started: their records are
//     cut at once, their appenders get the error, and the next append goes
//     on, with no restart.
//
// # Concurrency
//
// Every method is safe for concurrent use. Read takes no lock: it loads an
// immutable view of the volume's committed blocks from an atomic pointer,
// decodes the index entry from the mapping and preads the value into one
// new buffer. Appends to a volume are serialized by a writer mutex and made
// durable by group commit: one appender fsyncs for everyone waiting. Wait
// sleeps on a channel that the next commit closes. Deleting or closing a
// volume waits for appends, and the files stay open until the last reader
// in flight finishes.
//
// The on-disk format, the recovery procedure and the snapshot stream are
// described byte by byte in format.go, recover.go and snapshot.go, and
// explained in DESIGN.md.
package storage
