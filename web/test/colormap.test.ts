import assert from "node:assert/strict";
import { test } from "node:test";
import { IndexTable, lutIndex } from "../src/colormap";

test("the index table maps 8- and 16-bit voxels as lutIndex does, for the current window", () => {
  const it = new IndexTable();
  for (const win of [{ level: 127.5, width: 255 }, { level: 1000, width: 37 }, { level: -200, width: 900 }]) {
    for (const v of [new Uint8Array([0, 1, 77, 200, 255]), new Uint16Array([0, 999, 1000, 1018, 65535]), new Int16Array([-32768, -200, 0, 250, 32767])]) {
      const t = it.for(v, win)!;
      for (const x of v) assert.equal(t.t[x + t.off], lutIndex(x, win), `${v.constructor.name} ${x} window ${win.level}/${win.width}`);
    }
  }
  assert.equal(it.for(new Float32Array(1), { level: 0, width: 1 }), null);
  assert.equal(it.for(new Uint32Array(1), { level: 0, width: 1 }), null);
});
