// VolumeData holds the voxels of one volume in the browser, one array per
// level of detail, and answers "what is the best value known at this LOD 0
// voxel" by looking at the finest level whose brick has arrived.

import { DataType, type Volume } from "./gen/ldm/v1/types_pb";

export type Voxels = Uint8Array | Uint16Array | Int16Array | Uint32Array | Float32Array;

export interface Vec3 {
  x: number;
  y: number;
  z: number;
}

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

function allocate(t: DataType, n: number): Voxels {
  switch (t) {
    case DataType.UINT8:
      return new Uint8Array(n);
    case DataType.UINT16:
      return new Uint16Array(n);
    case DataType.INT16:
      return new Int16Array(n);
    case DataType.UINT32:
      return new Uint32Array(n);
    case DataType.FLOAT32:
      return new Float32Array(n);
  }
  throw new Error(`unsupported data type ${t}`);
}

/** view returns a typed array over little-endian voxel bytes (copied when unaligned). */
function view(t: DataType, b: Uint8Array): Voxels {
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

interface Level {
  shape: Vec3; // voxels at this level
  grid: Vec3; // bricks at this level
  data: Voxels; // allocated when the level's first brick arrives
  // offset+1 of the tile whose content each brick holds; 0 = not loaded.
  loaded: Float64Array;
  count: number; // bricks loaded
}

/** BrickResult says what applying a tile did. */
export interface BrickResult {
  applied: boolean;
  lod: number;
  // The brick's box in LOD 0 voxels (min inclusive, max exclusive).
  min: Vec3;
  max: Vec3;
}

export class VolumeData {
  readonly name: string;
  readonly shape: Vec3;
  readonly brick: Vec3;
  readonly type: DataType;
  readonly spacing: Vec3;
  readonly levels: Level[] = [];
  // The range of values in the coarsest level (for automatic contrast).
  min = Infinity;
  max = -Infinity;
  badTiles = 0;

  constructor(v: Volume) {
    this.name = v.name;
    const s = v.shape!;
    this.shape = { x: s.x, y: s.y, z: s.z };
    const b = v.brickShape && v.brickShape.x ? v.brickShape : { x: 64, y: 64, z: 64 };
    this.brick = { x: b.x, y: b.y, z: b.z };
    this.type = v.dataType;
    const sp = v.spacing.length === 3 ? v.spacing : [1, 1, 1];
    this.spacing = { x: sp[0] || 1, y: sp[1] || 1, z: sp[2] || 1 };
    let shape = { ...this.shape };
    for (let l = 0; l < Math.max(1, v.lodCount); l++) {
      const grid = {
        x: Math.ceil(shape.x / this.brick.x),
        y: Math.ceil(shape.y / this.brick.y),
        z: Math.ceil(shape.z / this.brick.z),
      };
      this.levels.push({
        shape,
        grid,
        data: allocate(this.type, 0),
        loaded: new Float64Array(grid.x * grid.y * grid.z),
        count: 0,
      });
      shape = { x: Math.ceil(shape.x / 2), y: Math.ceil(shape.y / 2), z: Math.ceil(shape.z / 2) };
    }
  }

  /** brickCount returns the number of bricks at level l. */
  brickCount(l: number): number {
    const g = this.levels[l].grid;
    return g.x * g.y * g.z;
  }

  /** complete reports whether every brick of level l has arrived. */
  complete(l: number): boolean {
    return this.levels[l].count === this.brickCount(l);
  }

  /** finestComplete returns the finest level whose bricks have all arrived, or -1. */
  finestComplete(): number {
    for (let l = 0; l < this.levels.length; l++) if (this.complete(l)) return l;
    return -1;
  }

  /**
   * apply copies a brick's voxels into its level. A tile older (by log
   * offset) than what the brick already holds is ignored, so a live write
   * is never overwritten by a stale copy from a concurrent stream. Bricks
   * may be padded to the full brick shape or clipped to the volume.
   */
  apply(lod: number, bx: number, by: number, bz: number, offset: bigint, value: Uint8Array): BrickResult {
    const res: BrickResult = { applied: false, lod, min: { x: 0, y: 0, z: 0 }, max: { x: 0, y: 0, z: 0 } };
    const L = this.levels[lod];
    if (!L || bx >= L.grid.x || by >= L.grid.y || bz >= L.grid.z) {
      this.badTiles++;
      return res;
    }
    const bi = bx + L.grid.x * (by + L.grid.y * bz);
    const tag = Number(offset) + 1;
    if (L.loaded[bi] > tag) return res;
    const B = this.brick;
    const x0 = bx * B.x, y0 = by * B.y, z0 = bz * B.z;
    const nx = Math.min(B.x, L.shape.x - x0), ny = Math.min(B.y, L.shape.y - y0), nz = Math.min(B.z, L.shape.z - z0);
    const size = bytesPerVoxel(this.type);
    let sx: number, sy: number; // source strides in voxels
    if (value.byteLength === B.x * B.y * B.z * size) {
      sx = B.x;
      sy = B.y;
    } else if (value.byteLength === nx * ny * nz * size) {
      sx = nx;
      sy = ny;
    } else {
      this.badTiles++;
      return res;
    }
    const src = view(this.type, value);
    if (L.data.length === 0) L.data = allocate(this.type, L.shape.x * L.shape.y * L.shape.z);
    const dst = L.data;
    // The value range (for automatic contrast) comes from the coarsest
    // level only: it covers the whole volume at a fraction of the cost.
    const scan = lod === this.levels.length - 1;
    let lo = this.min, hi = this.max;
    // Rows are copied element by element: for 64-voxel rows this is much
    // faster than creating a subarray per row for TypedArray.set.
    for (let z = 0; z < nz; z++) {
      for (let y = 0; y < ny; y++) {
        const s = (z * sy + y) * sx;
        const d = x0 + L.shape.x * (y0 + y + L.shape.y * (z0 + z));
        for (let i = 0; i < nx; i++) dst[d + i] = src[s + i];
        if (scan) {
          for (let i = 0; i < nx; i++) {
            const v = src[s + i];
            // NaN and +-Inf (float32 only) would make the window infinite
            // or undefined: the range covers finite values.
            if (v - v !== 0) continue;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
          }
        }
      }
    }
    this.min = lo;
    this.max = hi;
    if (L.loaded[bi] === 0) L.count++;
    L.loaded[bi] = tag;
    res.applied = true;
    res.min = { x: x0 << lod, y: y0 << lod, z: z0 << lod };
    res.max = {
      x: Math.min(this.shape.x, (x0 + nx) << lod),
      y: Math.min(this.shape.y, (y0 + ny) << lod),
      z: Math.min(this.shape.z, (z0 + nz) << lod),
    };
    return res;
  }

  /** lodAt returns the finest level loaded at LOD 0 voxel (x, y, z), or -1. */
  lodAt(x: number, y: number, z: number): number {
    const B = this.brick;
    for (let l = 0; l < this.levels.length; l++) {
      const L = this.levels[l];
      const bi = Math.floor((x >> l) / B.x) + L.grid.x * (Math.floor((y >> l) / B.y) + L.grid.y * Math.floor((z >> l) / B.z));
      if (L.loaded[bi] > 0) return l;
    }
    return -1;
  }

  /** value returns the best known value at LOD 0 voxel (x, y, z), or NaN. */
  value(x: number, y: number, z: number): number {
    const l = this.lodAt(x, y, z);
    if (l < 0) return NaN;
    const L = this.levels[l];
    return L.data[(x >> l) + L.shape.x * ((y >> l) + L.shape.y * (z >> l))];
  }

  /**
   * slice fills out (w*h values, NaN where nothing has arrived; float64 so
   * that uint32 voxels above 2^24 keep their exact value) with the
   * plane axis=pos; u runs along the first in-plane axis, v along the second
   * (axial: x, y; coronal: x, z; sagittal: y, z).
   */
  slice(axis: "x" | "y" | "z", pos: number, out: Float64Array): { w: number; h: number } {
    const S = this.shape;
    const [w, h] = axis === "z" ? [S.x, S.y] : axis === "y" ? [S.x, S.z] : [S.y, S.z];
    let i = 0;
    for (let v = 0; v < h; v++) {
      for (let u = 0; u < w; u++) {
        const x = axis === "x" ? pos : u;
        const y = axis === "y" ? pos : axis === "x" ? u : v;
        const z = axis === "z" ? pos : v;
        out[i++] = this.value(x, y, z);
      }
    }
    return { w, h };
  }

  /**
   * grid samples the volume on a grid of at most n voxels a side (nearest
   * voxel), for the 3D view. Unknown voxels are NaN.
   */
  grid(n: number): { dims: Vec3; values: Float64Array } {
    const S = this.shape;
    const step = Math.max(1, Math.ceil(Math.max(S.x, S.y, S.z) / n));
    const dims = { x: Math.ceil(S.x / step), y: Math.ceil(S.y / step), z: Math.ceil(S.z / step) };
    const values = new Float64Array(dims.x * dims.y * dims.z);
    const half = step >> 1;
    let i = 0;
    for (let z = 0; z < dims.z; z++) {
      const vz = Math.min(S.z - 1, z * step + half);
      for (let y = 0; y < dims.y; y++) {
        const vy = Math.min(S.y - 1, y * step + half);
        for (let x = 0; x < dims.x; x++) {
          values[i++] = this.value(Math.min(S.x - 1, x * step + half), vy, vz);
        }
      }
    }
    return { dims, values };
  }
}
