import assert from "node:assert/strict";
import { test } from "node:test";
import { BrickCache } from "../src/brickcache";

test("the cache keeps at most its budget, evicting the least recently used", () => {
  const c = new BrickCache<string>(300);
  const evicted: string[] = [];
  c.onEvict = (id) => evicted.push(id);
  assert.ok(c.put("a", "A", 100));
  assert.ok(c.put("b", "B", 100));
  assert.ok(c.put("c", "C", 100));
  assert.equal(c.bytes, 300);
  assert.equal(c.get("a"), "A"); // a is now the most recent: b goes first
  assert.ok(c.put("d", "D", 100));
  assert.deepEqual(evicted, ["b"]);
  assert.deepEqual(c.keys(), ["c", "a", "d"]);
  assert.ok(c.put("e", "E", 200)); // needs two: c, then a
  assert.deepEqual(evicted, ["b", "c", "a"]);
  assert.deepEqual(c.keys(), ["d", "e"]);
  assert.equal(c.bytes, 300);
  const s = c.stats();
  assert.equal(s.maxBytes, 300);
  assert.equal(s.evictions, 3);
});

test("peek does not change the order; replacing an entry counts its new size once", () => {
  const c = new BrickCache<number>(200);
  c.put("a", 1, 100);
  c.put("b", 2, 100);
  assert.equal(c.peek("a"), 1);
  c.put("c", 3, 100); // a is still the least recent
  assert.deepEqual(c.keys(), ["b", "c"]);
  c.put("b", 4, 50);
  assert.equal(c.bytes, 150);
  assert.deepEqual(c.keys(), ["c", "b"]);
  assert.equal(c.get("b"), 4);
});

test("pinned bricks are never evicted; a put that cannot fit is refused", () => {
  const c = new BrickCache<string>(300);
  c.put("a", "A", 100);
  c.put("b", "B", 100);
  c.put("c", "C", 100);
  c.pin(["a", "b"]);
  assert.ok(c.put("d", "D", 100)); // evicts c, the only unpinned one
  assert.deepEqual(c.keys(), ["a", "b", "d"]);
  c.pin(["a", "b", "d"]);
  assert.equal(c.put("e", "E", 100), false); // everything is pinned
  assert.equal(c.has("e"), false);
  assert.equal(c.bytes, 300);
  assert.equal(c.put("f", "F", 1000), false); // bigger than the budget
  assert.equal(c.stats().refused, 2);
  assert.equal(c.stats().pinned, 3);
  // Unpinning lets the least recent go again.
  c.pin(["d"]);
  assert.ok(c.put("e", "E", 100));
  assert.deepEqual(c.keys(), ["b", "d", "e"]);
  assert.ok(c.stats().maxBytes <= 300);
});

test("an evicted brick can be put again and is then the most recent", () => {
  const c = new BrickCache<string>(200);
  c.put("a", "A1", 100);
  c.put("b", "B", 100);
  c.put("c", "C", 100); // evicts a
  assert.equal(c.get("a"), undefined);
  assert.ok(c.put("a", "A2", 100)); // evicts b
  assert.equal(c.get("a"), "A2");
  assert.deepEqual(c.keys(), ["c", "a"]);
});

test("a smaller budget evicts unpinned bricks at once", () => {
  const c = new BrickCache<string>(400);
  for (const id of ["a", "b", "c", "d"]) c.put(id, id, 100);
  c.pin(["a"]);
  c.setBudget(200);
  assert.deepEqual(c.keys(), ["a", "d"]);
  assert.equal(c.bytes, 200);
  c.delete("a");
  assert.equal(c.bytes, 100);
});
