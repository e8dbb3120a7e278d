// Brick selection: which bricks a view needs, at which level of detail.
// Pure functions of a volume's level grid and a view (its plane, viewport
// and zoom); no DOM, no state. Coordinates are LOD 0 voxels unless a name
// says otherwise; level l halves x, y and z l times, rounding up, and its
// bricks are the volume's brick shape in level-l voxels.

export type Axis = "x" | "y" | "z";

export interface Vec3 {
  x: number;
  y: number;
  z: number;
}

/** Key names one brick: its level and position in brick units of that level. */
export interface Key {
  lod: number;
  x: number;
  y: number;
  z: number;
}

/** Grid is what selection needs to know of a volume. */
export interface Grid {
  shape: Vec3; // LOD 0 voxels
  brick: Vec3; // voxels per brick, at every level
  levels: number; // levels of detail (at least 1)
  bytesPerVoxel: number;
}

/** keyId is a key as a string, for maps and sets. */
export function keyId(k: Key): string {
  return `${k.lod}/${k.x}/${k.y}/${k.z}`;
}

/** levelShape returns the size of level l in its own voxels. */
export function levelShape(g: Grid, l: number): Vec3 {
  const f = 2 ** l;
  return { x: Math.ceil(g.shape.x / f), y: Math.ceil(g.shape.y / f), z: Math.ceil(g.shape.z / f) };
}

/** levelGrid returns the number of bricks of level l along each axis. */
export function levelGrid(g: Grid, l: number): Vec3 {
  const s = levelShape(g, l);
  return { x: Math.ceil(s.x / g.brick.x), y: Math.ceil(s.y / g.brick.y), z: Math.ceil(s.z / g.brick.z) };
}

/** brickBytes is the size of one full brick. */
export function brickBytes(g: Grid): number {
  return g.brick.x * g.brick.y * g.brick.z * g.bytesPerVoxel;
}

/**
 * SliceRequest is a slice view as selection sees it: the plane depth=pos
 * and the rectangle [u0, u1) x [v0, v1) of it that the viewport shows (LOD 0
 * voxels, may reach outside the volume), and how many LOD 0 voxels one
 * screen pixel covers (the smaller of the two in-plane axes).
 */
export interface SliceRequest {
  depth: Axis;
  pos: number;
  u: Axis;
  v: Axis;
  u0: number;
  u1: number;
  v0: number;
  v1: number;
  voxelsPerPixel: number;
}

/**
 * sliceLevel returns the level whose voxels best match a screen pixel: the
 * coarsest level whose voxel is no larger than a pixel (so zooming in
 * refines and zooming out coarsens), within the volume's levels.
 */
export function sliceLevel(g: Grid, voxelsPerPixel: number): number {
  if (!(voxelsPerPixel > 1)) return 0;
  // A small tolerance keeps exact powers of two on their level.
  const l = Math.floor(Math.log2(voxelsPerPixel) + 1e-9);
  return Math.max(0, Math.min(g.levels - 1, l));
}

/**
 * sliceBricks returns the bricks of level lod that intersect the plane and
 * the viewport rectangle of r, clipped to the volume, nearest the
 * rectangle's centre first (ties by z, y, x). A plane outside the volume
 * needs nothing.
 */
export function sliceBricks(g: Grid, r: SliceRequest, lod: number): Key[] {
  const S = g.shape;
  if (r.pos < 0 || r.pos >= S[r.depth]) return [];
  const n = levelGrid(g, lod);
  const f = 2 ** lod;
  // LOD 0 voxels per brick along each axis.
  const span = { x: g.brick.x * f, y: g.brick.y * f, z: g.brick.z * f };
  const range = (a: Axis, lo: number, hi: number): [number, number] => {
    const l = Math.max(0, Math.floor(Math.max(0, lo) / span[a]));
    const h = Math.min(n[a], Math.ceil(Math.min(S[a], hi) / span[a]));
    return [l, h];
  };
  const [ua, ub] = range(r.u, r.u0, r.u1);
  const [va, vb] = range(r.v, r.v0, r.v1);
  const d = Math.floor(r.pos / span[r.depth]);
  const cu = (r.u0 + r.u1) / 2, cv = (r.v0 + r.v1) / 2;
  const out: { k: Key; d2: number }[] = [];
  for (let j = va; j < vb; j++) {
    for (let i = ua; i < ub; i++) {
      const k: Key = { lod, x: 0, y: 0, z: 0 };
      k[r.u] = i;
      k[r.v] = j;
      k[r.depth] = d;
      const du = (i + 0.5) * span[r.u] - cu, dv = (j + 0.5) * span[r.v] - cv;
      out.push({ k, d2: du * du + dv * dv });
    }
  }
  out.sort((a, b) => a.d2 - b.d2 || a.k.z - b.k.z || a.k.y - b.k.y || a.k.x - b.k.x);
  return out.map((e) => e.k);
}

/**
 * neighbourPlanes returns the LOD 0 positions of the planes just beyond
 * the brick layer that pos lies in at level lod (the next layer up and
 * down), for prefetching the slices a user is likely to move to.
 */
export function neighbourPlanes(g: Grid, depth: Axis, pos: number, lod: number): number[] {
  const span = g.brick[depth] * 2 ** lod;
  const layer = Math.floor(pos / span);
  const out: number[] = [];
  for (const p of [(layer + 1) * span, layer * span - 1]) if (p >= 0 && p < g.shape[depth]) out.push(p);
  return out;
}

/** volumeLevel returns the finest level with at most maxVoxels voxels (the coarsest if none has). */
export function volumeLevel(g: Grid, maxVoxels: number): number {
  for (let l = 0; l < g.levels; l++) {
    const s = levelShape(g, l);
    if (s.x * s.y * s.z <= maxVoxels) return l;
  }
  return g.levels - 1;
}

/** levelBricks returns every brick of level lod, in z, y, x order. */
export function levelBricks(g: Grid, lod: number): Key[] {
  const n = levelGrid(g, lod);
  const out: Key[] = [];
  for (let z = 0; z < n.z; z++) for (let y = 0; y < n.y; y++) for (let x = 0; x < n.x; x++) out.push({ lod, x, y, z });
  return out;
}

/** coarser returns the brick of level lod that holds brick k (lod >= k.lod). */
export function coarser(k: Key, lod: number): Key {
  const s = lod - k.lod;
  return { lod, x: k.x >> s, y: k.y >> s, z: k.z >> s };
}

/**
 * brickBox returns the box of brick k in LOD 0 voxels (min inclusive, max
 * exclusive, clipped to the volume).
 */
export function brickBox(g: Grid, k: Key): { min: Vec3; max: Vec3 } {
  const f = 2 ** k.lod;
  const min = { x: k.x * g.brick.x * f, y: k.y * g.brick.y * f, z: k.z * g.brick.z * f };
  const max = {
    x: Math.min(g.shape.x, min.x + g.brick.x * f),
    y: Math.min(g.shape.y, min.y + g.brick.y * f),
    z: Math.min(g.shape.z, min.z + g.brick.z * f),
  };
  return { min, max };
}

/**
 * drawLevel returns the level a slice view draws r at while it waits for
 * the bricks of its own level plan. has says a brick is held, done that it
 * is held or known not to exist. While plan is not done in the view and
 * the next finer level is held whole there (the view went coarser), the
 * finer level is drawn, if its image has at most maxPixels pixels: the
 * picture stays sharp until plan has arrived. Otherwise it is the finest
 * level from plan up that has a brick held in the view (the coarsest if
 * none): the same picture as drawing at plan with coarser bricks filling
 * in, from an image with fewer pixels.
 */
export function drawLevel(g: Grid, r: SliceRequest, plan: number, has: (k: Key) => boolean, done: (k: Key) => boolean, maxPixels: number): number {
  if (plan > 0) {
    const f = 2 ** (plan - 1);
    const px = Math.ceil(Math.max(0, r.u1 - r.u0) / f) * Math.ceil(Math.max(0, r.v1 - r.v0) / f);
    if (px <= maxPixels) {
      const finer = sliceBricks(g, r, plan - 1);
      if (finer.length && finer.every(has) && !sliceBricks(g, r, plan).every(done)) return plan - 1;
    }
  }
  let l = plan;
  for (; l < g.levels - 1; l++) if (sliceBricks(g, r, l).some(has)) break;
  return l;
}
