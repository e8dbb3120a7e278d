import assert from "node:assert/strict";
import { test } from "node:test";
import {
  brickBox,
  coarser,
  drawLevel,
  keyId,
  levelBricks,
  levelGrid,
  levelShape,
  neighbourPlanes,
  sliceBricks,
  sliceLevel,
  volumeLevel,
  type Grid,
  type Key,
  type SliceRequest,
} from "../src/selection";

// 2048 x 2048 x 1024 in 64^3 bricks with 6 levels (LOD 5: 64 x 64 x 32).
const big: Grid = { shape: { x: 2048, y: 2048, z: 1024 }, brick: { x: 64, y: 64, z: 64 }, levels: 6, bytesPerVoxel: 1 };
// An odd shape: 100 x 37 x 5, bricks of 16 x 8 x 4, 4 levels.
const odd: Grid = { shape: { x: 100, y: 37, z: 5 }, brick: { x: 16, y: 8, z: 4 }, levels: 4, bytesPerVoxel: 2 };

const axial = (pos: number, u0: number, u1: number, v0: number, v1: number, voxelsPerPixel: number): SliceRequest => ({
  depth: "z", pos, u: "x", v: "y", u0, u1, v0, v1, voxelsPerPixel,
});
const ids = (ks: Key[]) => ks.map(keyId).sort();

test("level shapes and grids halve rounding up", () => {
  assert.deepEqual(levelShape(odd, 0), { x: 100, y: 37, z: 5 });
  assert.deepEqual(levelShape(odd, 1), { x: 50, y: 19, z: 3 });
  assert.deepEqual(levelShape(odd, 3), { x: 13, y: 5, z: 1 });
  assert.deepEqual(levelGrid(odd, 0), { x: 7, y: 5, z: 2 });
  assert.deepEqual(levelGrid(odd, 1), { x: 4, y: 3, z: 1 });
  assert.deepEqual(levelGrid(big, 5), { x: 1, y: 1, z: 1 });
});

test("the slice level matches the screen's pixel size: zoom in refines, zoom out coarsens", () => {
  assert.equal(sliceLevel(big, 0.25), 0); // zoomed in: several pixels per voxel
  assert.equal(sliceLevel(big, 1), 0);
  assert.equal(sliceLevel(big, 1.9), 0);
  assert.equal(sliceLevel(big, 2), 1);
  assert.equal(sliceLevel(big, 5.5), 2); // 2048 voxels on ~370 pixels
  assert.equal(sliceLevel(big, 8), 3);
  assert.equal(sliceLevel(big, 1000), 5); // never past the coarsest
  assert.equal(sliceLevel(odd, 100), 3);
  assert.equal(sliceLevel(big, NaN), 0);
});

test("a whole slice zoomed out needs every brick of its plane at a coarse level", () => {
  const ks = sliceBricks(big, axial(700, 0, 2048, 0, 2048, 5.5), 2);
  // LOD 2 is 512 x 512 x 256: 8 x 8 bricks in the plane, brick layer 700/256 = 2.
  assert.equal(ks.length, 64);
  assert.ok(ks.every((k) => k.lod === 2 && k.z === 2));
  assert.equal(new Set(ks.map(keyId)).size, 64);
  // Nearest the viewport's centre first.
  assert.deepEqual(ids(ks.slice(0, 4)), ids([{ lod: 2, x: 3, y: 3, z: 2 }, { lod: 2, x: 3, y: 4, z: 2 }, { lod: 2, x: 4, y: 3, z: 2 }, { lod: 2, x: 4, y: 4, z: 2 }]));
});

test("zoomed in, only the bricks inside the viewport at full resolution", () => {
  // A 200 x 100 voxel window at LOD 0 around (1000, 1000).
  const ks = sliceBricks(big, axial(10, 900, 1100, 950, 1050, 0.5), sliceLevel(big, 0.5));
  // x 900..1100 -> bricks 14..17; y 950..1050 -> bricks 14..16; z 10 -> 0.
  assert.equal(ks.length, 4 * 3);
  for (const k of ks) {
    assert.equal(k.lod, 0);
    assert.equal(k.z, 0);
    assert.ok(k.x >= 14 && k.x <= 17 && k.y >= 14 && k.y <= 16, keyId(k));
  }
});

test("viewports reaching past the volume are clipped at its edges", () => {
  const ks = sliceBricks(big, axial(1023, -500, 100, 1990, 5000, 1), 0);
  // x 0..100 -> bricks 0, 1; y 1990..2048 -> bricks 31; z 1023 -> 15.
  assert.deepEqual(ids(ks), ids([{ lod: 0, x: 0, y: 31, z: 15 }, { lod: 0, x: 1, y: 31, z: 15 }]));
  assert.deepEqual(sliceBricks(big, axial(1024, 0, 2048, 0, 2048, 1), 0), []); // plane past the end
  assert.deepEqual(sliceBricks(big, axial(-1, 0, 2048, 0, 2048, 1), 0), []);
  assert.deepEqual(sliceBricks(big, axial(0, 3000, 4000, 0, 10, 1), 0), []); // viewport beside the volume
});

test("odd shapes: partial edge bricks, other axes, every level", () => {
  // Coronal plane y = 36 (the last row) of the odd volume, all of it.
  const cor: SliceRequest = { depth: "y", pos: 36, u: "x", v: "z", u0: 0, u1: 100, v0: 0, v1: 5, voxelsPerPixel: 1 };
  assert.deepEqual(ids(sliceBricks(odd, cor, 0)), ids([0, 1, 2, 3, 4, 5, 6].flatMap((x) => [{ lod: 0, x, y: 4, z: 0 }, { lod: 0, x, y: 4, z: 1 }])));
  // LOD 2 is 25 x 10 x 2: 2 x 2 x 1 bricks; y 36 -> 9 -> brick 1.
  assert.deepEqual(ids(sliceBricks(odd, cor, 2)), ids([{ lod: 2, x: 0, y: 1, z: 0 }, { lod: 2, x: 1, y: 1, z: 0 }]));
  // Sagittal plane x = 99 at LOD 3 (13 x 5 x 1: one brick).
  const sag: SliceRequest = { depth: "x", pos: 99, u: "y", v: "z", u0: 0, u1: 37, v0: 0, v1: 5, voxelsPerPixel: 8 };
  assert.deepEqual(ids(sliceBricks(odd, sag, 3)), ["3/0/0/0"]);
  // Every brick a slice lists lies in its level's grid and contains the plane.
  for (let l = 0; l < odd.levels; l++) {
    for (const pos of [0, 17, 36]) {
      for (const k of sliceBricks(odd, { ...cor, pos }, l)) {
        const g = levelGrid(odd, l);
        assert.ok(k.x < g.x && k.y < g.y && k.z < g.z, keyId(k));
        const b = brickBox(odd, k);
        assert.ok(b.min.y <= pos && pos < b.max.y, `${keyId(k)} holds y=${pos}`);
      }
    }
  }
});

test("the 3D level is the finest within the voxel budget", () => {
  assert.equal(volumeLevel(big, 256 ** 3), 3); // 256 x 256 x 128
  assert.equal(volumeLevel({ ...big, shape: { x: 256, y: 256, z: 256 }, levels: 3 }, 256 ** 3), 0);
  assert.equal(volumeLevel({ ...big, shape: { x: 512, y: 512, z: 512 }, levels: 4 }, 256 ** 3), 1);
  assert.equal(volumeLevel(big, 1), 5); // nothing fits: the coarsest
  assert.equal(levelBricks(big, 3).length, 4 * 4 * 2);
});

test("neighbour planes are just outside the current brick layer", () => {
  assert.deepEqual(neighbourPlanes(big, "z", 100, 0), [128, 63]);
  assert.deepEqual(neighbourPlanes(big, "z", 0, 0), [64]);
  assert.deepEqual(neighbourPlanes(big, "z", 1023, 0), [959]);
  assert.deepEqual(neighbourPlanes(big, "z", 300, 2), [512, 255]);
});

test("coarser and brickBox map between levels", () => {
  assert.deepEqual(coarser({ lod: 0, x: 13, y: 6, z: 1 }, 2), { lod: 2, x: 3, y: 1, z: 0 });
  assert.deepEqual(brickBox(odd, { lod: 1, x: 3, y: 2, z: 0 }), { min: { x: 96, y: 32, z: 0 }, max: { x: 100, y: 37, z: 5 } });
});

test("a view draws at the coarsest level it holds until its own level arrives, and at a finer one held whole after zooming out", () => {
  // The whole axial plane z = 700 of big, zoomed out to LOD 2.
  const r = axial(700, 0, 2048, 0, 2048, 5.5);
  const held = new Set<string>();
  const has = (k: Key) => held.has(keyId(k));
  const hold = (ks: Key[]) => ks.forEach((k) => held.add(keyId(k)));
  const at = (plan: number) => drawLevel(big, r, plan, has, has, 1 << 22);
  // Nothing held: the coarsest level (its checkerboard is cheapest).
  assert.equal(at(2), 5);
  hold(sliceBricks(big, r, 5));
  assert.equal(at(2), 5);
  // One brick of LOD 3 held: LOD 3, where it shows.
  hold(sliceBricks(big, r, 3).slice(0, 1));
  assert.equal(at(2), 3);
  // One brick of the view's own level: its own level.
  hold(sliceBricks(big, r, 2).slice(0, 1));
  assert.equal(at(2), 2);
  // The view came from LOD 1 (zoomed out): all of LOD 1 in it held, LOD 2 not yet whole.
  hold(sliceBricks(big, r, 1));
  assert.equal(at(2), 1);
  // ... unless that image is too large to be cheap (1024 x 1024 pixels at LOD 1).
  assert.equal(drawLevel(big, r, 2, has, has, 1024 * 1024 - 1), 2);
  // Once LOD 2 is whole (held or known missing) it is drawn.
  const ks2 = sliceBricks(big, r, 2);
  const done = (k: Key) => has(k) || ks2.some((m) => keyId(m) === keyId(k));
  assert.equal(drawLevel(big, r, 2, has, done, 1 << 22), 2);
  // A finer level held only in part is not used.
  held.delete(keyId(sliceBricks(big, r, 1)[0]));
  assert.equal(at(2), 2);
  // At LOD 0 there is nothing finer.
  const z = axial(700, 0, 64, 0, 64, 1);
  assert.equal(drawLevel(big, z, 0, () => true, () => false, 1 << 22), 0);
});
