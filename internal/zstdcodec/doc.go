// Package zstdcodec compresses and decompresses the Zstandard frames of
// compressed bricks (storage.CodecZstd), with limits.
//
// Invariants:
//   - Every frame Encode writes is a single-segment frame whose header holds
//     the content size (Zarr and Neuroglancer readers need it).
//   - Decode never allocates more than the size its caller expects: the
//     frame header is checked against it before anything is decoded, and
//     the decoder writes into a buffer of exactly that capacity and fails
//     instead of growing it. A frame that claims another size, decodes to
//     another size, or is damaged gives an error wrapping ErrCorrupt.
//   - Validate checks a frame as Decode does without keeping the output: it
//     holds at most ValidateMemory (the content, or one window when the
//     frame's window is smaller).
//   - Encoders and decoders are pooled; every function is safe for
//     concurrent use.
package zstdcodec
