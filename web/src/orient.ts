// Orientation math for the slice views, free of the DOM so node:test can
// check it (web/test/orient.test.ts).
//
// A volume's transform maps voxel (i, j, k) to world millimetres in its
// space. The views work in LPS (x towards the patient's left, y posterior,
// z superior): a RAS transform is turned into LPS by negating its first two
// rows. Each voxel axis is then matched with the patient axis nearest to
// its direction (the largest component of its column, each patient axis
// used once), which says which view it is the depth of and which way it
// runs on screen. A transform whose axes are not all within 0.1 degrees of
// a patient axis is oblique: it is shown in that nearest orientation, not
// resampled.
//
// The views, in LPS terms ("right" is the screen's right, "down" its
// bottom):
//   axial    (fixed S/I): right = L (radiological) or R (neurological), down = P
//   coronal  (fixed A/P): right = L (radiological) or R (neurological), down = I
//   sagittal (fixed L/R): right = P, down = I
// so with an identity LPS transform (or no known orientation) voxel x runs
// right, y down in the axial view, and z up in the others: storage order.

export type Axis = "x" | "y" | "z";
export type Role = "axial" | "coronal" | "sagittal";
export type Convention = "radiological" | "neurological";
/** SpaceName is the volume's world space as the viewer uses it. */
export type SpaceName = "RAS" | "LPS" | "scanner" | "";

export const axes: Axis[] = ["x", "y", "z"];

/** Direction is a patient axis (0 = L/R, 1 = P/A, 2 = S/I, in LPS) and a sign. */
export interface Direction {
  axis: number;
  sign: 1 | -1;
}

/** ViewLayout says how a view maps voxels to its screen image. */
export interface ViewLayout {
  depth: Axis; // the voxel axis the view's slider moves along
  u: Axis; // the voxel axis along the screen's x
  v: Axis; // the voxel axis along the screen's y
  flipU: boolean; // voxel u increases to the left
  flipV: boolean; // voxel v increases upwards
  // Letters on each side: patient directions (L, R, A, P, S, I), or empty
  // when the volume has no known orientation.
  left: string;
  right: string;
  top: string;
  bottom: string;
}

/** Orientation is the result of analysing a volume's transform. */
export interface Orientation {
  known: boolean; // the space is RAS or LPS
  oblique: boolean; // some axis is more than 0.1 degrees off its patient axis
  obliqueDegrees: number; // the largest angle between a voxel axis and its patient axis
  // For voxel axis c: the patient direction it runs towards (in LPS).
  dirs: [Direction, Direction, Direction];
}

const obliqueCos = Math.cos((0.1 * Math.PI) / 180);

/** identity4 is the 4x4 identity, row-major. */
export const identity4 = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];

/**
 * affineOf returns a volume's 16-number transform, or diag(spacing, 1) when
 * it has none (a server that predates transforms).
 */
export function affineOf(transform: readonly number[], spacing: readonly number[]): number[] {
  if (transform.length === 16) return Array.from(transform);
  const s = spacing.length === 3 ? spacing : [1, 1, 1];
  return [s[0], 0, 0, 0, 0, s[1], 0, 0, 0, 0, s[2], 0, 0, 0, 0, 1];
}

/** toLPS returns the 3x3 direction part of a transform in LPS, row-major. */
export function toLPS(a: readonly number[], space: SpaceName): number[] {
  const m = [a[0], a[1], a[2], a[4], a[5], a[6], a[8], a[9], a[10]];
  if (space === "RAS") for (let i = 0; i < 6; i++) m[i] = -m[i];
  return m;
}

/**
 * orient analyses a transform: which patient direction each voxel axis runs
 * towards, and whether the volume is oblique. A volume whose space is not
 * RAS or LPS keeps its storage order (each voxel axis taken as LPS x, y, z).
 */
export function orient(a: readonly number[], space: SpaceName): Orientation {
  const known = space === "RAS" || space === "LPS";
  if (!known) {
    return { known, oblique: false, obliqueDegrees: 0, dirs: [{ axis: 0, sign: 1 }, { axis: 1, sign: 1 }, { axis: 2, sign: 1 }] };
  }
  const m = toLPS(a, space);
  const norm = [0, 1, 2].map((c) => Math.hypot(m[c], m[3 + c], m[6 + c]) || 1);
  // Greedy assignment: the largest |cosine| first, each row and column once.
  const cells: { r: number; c: number; v: number }[] = [];
  for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) cells.push({ r, c, v: Math.abs(m[3 * r + c]) / norm[c] });
  cells.sort((p, q) => q.v - p.v || p.c - q.c || p.r - q.r);
  const dirs: Direction[] = [];
  const usedR = [false, false, false];
  let worst = 1;
  for (const { r, c, v } of cells) {
    if (usedR[r] || dirs[c]) continue;
    usedR[r] = true;
    dirs[c] = { axis: r, sign: m[3 * r + c] < 0 ? -1 : 1 };
    worst = Math.min(worst, v);
  }
  const deg = (Math.acos(Math.min(1, worst)) * 180) / Math.PI;
  return { known, oblique: worst < obliqueCos, obliqueDegrees: deg, dirs: dirs as [Direction, Direction, Direction] };
}

/** letter names a patient direction in LPS terms. */
export function letter(d: Direction): string {
  return [["L", "R"], ["P", "A"], ["S", "I"]][d.axis][d.sign > 0 ? 0 : 1];
}

/** screen returns a view's fixed patient axis and the directions of the screen's right and down. */
export function screen(role: Role, conv: Convention): { fixed: number; right: Direction; down: Direction } {
  const lr: 1 | -1 = conv === "radiological" ? 1 : -1;
  switch (role) {
    case "axial":
      return { fixed: 2, right: { axis: 0, sign: lr }, down: { axis: 1, sign: 1 } };
    case "coronal":
      return { fixed: 1, right: { axis: 0, sign: lr }, down: { axis: 2, sign: -1 } };
    case "sagittal":
      return { fixed: 0, right: { axis: 1, sign: 1 }, down: { axis: 2, sign: -1 } };
  }
}

/** layout returns how a view of the given role shows a volume of orientation o. */
export function layout(o: Orientation, role: Role, conv: Convention): ViewLayout {
  const s = screen(role, o.known ? conv : "radiological");
  const along = (axis: number): number => o.dirs.findIndex((d) => d.axis === axis);
  const depth = along(s.fixed), u = along(s.right.axis), v = along(s.down.axis);
  const opp = (d: Direction): Direction => ({ axis: d.axis, sign: d.sign > 0 ? -1 : 1 });
  const name = (d: Direction) => (o.known ? letter(d) : "");
  return {
    depth: axes[depth],
    u: axes[u],
    v: axes[v],
    flipU: o.dirs[u].sign !== s.right.sign,
    flipV: o.dirs[v].sign !== s.down.sign,
    left: name(opp(s.right)),
    right: name(s.right),
    top: name(opp(s.down)),
    bottom: name(s.down),
  };
}

/** world maps a voxel (LOD 0 index, voxel centres) to world mm with a 16-number transform. */
export function world(a: readonly number[], p: { x: number; y: number; z: number }): [number, number, number] {
  return [0, 1, 2].map((r) => a[4 * r] * p.x + a[4 * r + 1] * p.y + a[4 * r + 2] * p.z + a[4 * r + 3]) as [number, number, number];
}
