// Voxel types: sizes, names and typed-array views over little-endian brick
// bytes. Bricks themselves live in the session's cache (session.ts); there
// is no array for a whole level.

import { DataType, type Volume } from "./gen/ldm/v1/types_pb";

export type Voxels = Uint8Array | Uint16Array | Int16Array | Uint32Array | Float32Array;

export type { Vec3 } from "./selection";

/** bytesPerVoxel returns the size of one voxel of type t (0 if unknown). */
export function bytesPerVoxel(t: DataType): number {
  switch (t) {
    case DataType.UINT8:
      return 1;
    case DataType.UINT16:
    case DataType.INT16:
      return 2;
    case DataType.UINT32:
    case DataType.FLOAT32:
      return 4;
  }
  return 0;
}

/** dataTypeName returns the API's name of a voxel type. */
export function dataTypeName(t: DataType): string {
  return ["unspecified", "uint8", "uint16", "int16", "uint32", "float32"][t] ?? `type ${t}`;
}

/** view returns a typed array over little-endian voxel bytes (copied when unaligned). */
export function view(t: DataType, b: Uint8Array): Voxels {
  const size = bytesPerVoxel(t);
  let buf = b.buffer as ArrayBuffer;
  let off = b.byteOffset;
  if (off % size !== 0) {
    const c = b.slice();
    buf = c.buffer;
    off = 0;
  }
  const n = Math.floor(b.byteLength / size);
  switch (t) {
    case DataType.UINT8:
      return new Uint8Array(buf, off, n);
    case DataType.UINT16:
      return new Uint16Array(buf, off, n);
    case DataType.INT16:
      return new Int16Array(buf, off, n);
    case DataType.UINT32:
      return new Uint32Array(buf, off, n);
    case DataType.FLOAT32:
      return new Float32Array(buf, off, n);
  }
  throw new Error(`unsupported data type ${t}`);
}

/**
 * BrickData is one brick's voxels as cached: the voxels, the strides of its
 * rows and planes in voxels (a brick is either padded to the full brick
 * shape or clipped to the level), its log offset and its size in bytes.
 */
export interface BrickData {
  voxels: Voxels;
  sx: number; // voxels per row
  sy: number; // rows per plane
  offset: bigint;
  bytes: number;
}

/**
 * decodeBrick checks a brick's byte length against the full brick shape
 * (b) and the part inside the level (n), and returns it as BrickData, or
 * null when it matches neither.
 */
export function decodeBrick(t: DataType, b: { x: number; y: number; z: number }, n: { x: number; y: number; z: number }, offset: bigint, value: Uint8Array): BrickData | null {
  const size = bytesPerVoxel(t);
  let sx: number, sy: number;
  if (value.byteLength === b.x * b.y * b.z * size) {
    sx = b.x;
    sy = b.y;
  } else if (value.byteLength === n.x * n.y * n.z * size) {
    sx = n.x;
    sy = n.y;
  } else {
    return null;
  }
  return { voxels: view(t, value), sx, sy, offset, bytes: value.byteLength };
}
