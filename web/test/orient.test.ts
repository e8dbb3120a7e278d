import assert from "node:assert/strict";
import { test } from "node:test";
import { affineOf, layout, letter, orient, world, type Role } from "../src/orient";

const id = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
const roles: Role[] = ["axial", "coronal", "sagittal"];

/** sides returns the side letters of every view, "L R A P" style (left right top bottom). */
function sides(a: number[], space: "RAS" | "LPS", conv: "radiological" | "neurological" = "radiological") {
  const o = orient(a, space);
  return Object.fromEntries(roles.map((r) => {
    const l = layout(o, r, conv);
    return [r, `${l.left}${l.right}${l.top}${l.bottom} ${l.depth}${l.u}${l.v}${l.flipU ? "-" : "+"}${l.flipV ? "-" : "+"}`];
  }));
}

test("identity LPS and unknown orientation keep storage order", () => {
  const want = { axial: "zxy++", coronal: "yxz+-", sagittal: "xyz+-" };
  for (const space of ["LPS", "", "scanner"] as const) {
    const o = orient(id, space);
    for (const r of roles) {
      const l = layout(o, r, "radiological");
      assert.equal(`${l.depth}${l.u}${l.v}${l.flipU ? "-" : "+"}${l.flipV ? "-" : "+"}`, want[r], `${space} ${r}`);
    }
    assert.equal(o.oblique, false);
  }
  // No labels without a patient space, and the convention is ignored.
  const l = layout(orient(id, ""), "axial", "neurological");
  assert.deepEqual([l.left, l.right, l.top, l.bottom, l.flipU], ["", "", "", "", false]);
});

test("radiological views label the patient's sides", () => {
  assert.deepEqual(sides(id, "LPS"), {
    axial: "RLAP zxy++",
    coronal: "RLSI yxz+-",
    sagittal: "APSI xyz+-",
  });
  // The same voxels in RAS: x runs to the patient's right, y anterior, so
  // both in-plane axes of the axial view flip.
  assert.deepEqual(sides(id, "RAS"), {
    axial: "RLAP zxy--",
    coronal: "RLSI yxz--",
    sagittal: "APSI xyz--",
  });
});

test("neurological flips left and right only", () => {
  assert.deepEqual(sides(id, "LPS", "neurological"), {
    axial: "LRAP zxy-+",
    coronal: "LRSI yxz--",
    sagittal: "APSI xyz+-",
  });
});

test("a permuted volume (voxel x = S, y = L, z = A in RAS) is resliced by patient axes", () => {
  // Columns: x -> +S, y -> -R (left), z -> +A.
  const a = [0, -1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1];
  const o = orient(a, "RAS");
  assert.deepEqual(o.dirs, [{ axis: 2, sign: 1 }, { axis: 0, sign: 1 }, { axis: 1, sign: -1 }]);
  const ax = layout(o, "axial", "radiological");
  // Axial slices run along voxel x (S/I); y (towards L) runs right; z
  // (towards A) runs up.
  assert.deepEqual([ax.depth, ax.u, ax.v, ax.flipU, ax.flipV], ["x", "y", "z", false, true]);
  const sag = layout(o, "sagittal", "radiological");
  assert.deepEqual([sag.depth, sag.u, sag.v, sag.flipU, sag.flipV], ["y", "z", "x", true, true]);
});

test("oblique volumes use the nearest axes and say how far off they are", () => {
  const t = (30 * Math.PI) / 180;
  const a = [Math.cos(t), -Math.sin(t), 0, 0, Math.sin(t), Math.cos(t), 0, 0, 0, 0, 2, 0, 0, 0, 0, 1];
  const o = orient(a, "RAS");
  assert.equal(o.oblique, true);
  assert.ok(Math.abs(o.obliqueDegrees - 30) < 1e-9, String(o.obliqueDegrees));
  assert.deepEqual(o.dirs.map((d) => letter(d)), ["R", "A", "S"]);
  // A rotation of 45 degrees still gives each patient axis to one voxel axis.
  const q = Math.SQRT1_2;
  const o45 = orient([q, -q, 0, 0, q, q, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "LPS");
  assert.deepEqual(new Set(o45.dirs.map((d) => d.axis)), new Set([0, 1, 2]));
  // float32 rounding of an axis-aligned file is not oblique.
  assert.equal(orient([0.5, 1e-8, 0, 0, 0, 0.5, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1], "RAS").oblique, false);
});

test("world maps voxel centres through the affine", () => {
  const a = [0.5, 0, 0, -10, 0, -0.75, 0, 20, 0, 0, 2, 3.5, 0, 0, 0, 1];
  assert.deepEqual(world(a, { x: 4, y: 2, z: 1 }), [-8, 18.5, 5.5]);
  assert.deepEqual(affineOf([], [2, 3, 4]), [2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0, 1]);
  assert.deepEqual(affineOf(a, [9, 9, 9]), a);
});
