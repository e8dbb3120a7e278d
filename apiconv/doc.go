// Package apiconv converts between the ldm.v1 API messages (package
// gen/ldm/v1) and the tile store's value types (package storage): volumes,
// shapes, tiles and brick keys. The service uses it to answer RPCs and the
// client uses it to read what the service answers, so both sides agree on
// one mapping.
//
// Invariants:
//   - The functions are pure: they neither validate (the service does that,
//     and storage.VolumeMeta.Normalize fills defaults) nor fail. A nil
//     message converts like an empty one.
//   - Byte slices, the spacing slice and the labels map are shared, not
//     copied: a converted value aliases its source.
//   - Output-only API fields (Volume.next_offset, size_bytes, create_time;
//     Tile.offset) are set by the ...ToAPI functions and ignored by the
//     ...FromAPI ones, because a caller never chooses them.
//
// The package has no state and is safe for concurrent use.
package apiconv
