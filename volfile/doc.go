// Package volfile reads and writes volume files. It reads NIfTI-1 (.nii,
// .nii.gz, .hdr/.img pairs), NRRD (attached or detached .nhdr headers, raw
// or gzip encoding) and headerless raw files with an explicit shape and data
// type; it writes NIfTI-1 (.nii) and NRRD (.nrrd).
//
// Open detects the format from the file's content, parses the header into a
// Header (shape, data type, spacing, voxel-to-world transform and its
// space, byte order, time points) and returns an
// Image whose ReadVoxels yields one 3D volume as little-endian voxels, x
// fastest, which is the layout the tile store keeps; Voxels streams the same
// bytes in one sequential pass (gzip included), for volumes larger than
// memory.
//
// Invariants:
//   - A header that parses describes a volume whose byte size fits in an int
//     and whose shape fits in uint32 in every axis.
//   - Anything the package does not support fails with an error that wraps
//     ErrUnsupported and is a *FieldError naming the header field, the value
//     found and what is supported. A malformed header wraps ErrFormat; voxel
//     data shorter than the header promises wraps ErrTruncated.
//   - Header.Transform is a usable affine whose column lengths are
//     Header.Spacing: NIfTI's sform, else its qform, else diag(pixdim); NRRD's
//     space directions and space origin (see orient.go). A degenerate
//     transform (a zero, non-finite or parallel axis, a quaternion with
//     b^2+c^2+d^2 above 1) fails with ErrFormat naming the field.
//   - A 4D file is read only with a chosen time point (Options.TimePoint);
//     without one Open fails, naming the field that holds the fourth axis.
//
// client.ImportFile uses the package to import a file into a server.
//
// Create writes NIfTI-1 (.nii) and NRRD (.nrrd) files with the transform in
// each format's own fields (see write.go), for region reads and exports: a
// file read by Open and written by Create reads back with the same voxels
// and the same affine.
//
// The package holds no global state; an Image is not safe for concurrent
// use.
package volfile
