import assert from "node:assert/strict";
import { afterEach, mock, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients } from "../src/api";
import type { Brick, StreamRequest } from "../src/bricks";
import { DataType, VolumeSchema } from "../src/gen/ldm/v1/types_pb";
import { brickBytes, keyId, levelBricks, type Axis, type Key } from "../src/selection";
import { Session, type SessionHost, type SliceWant, type Streamer } from "../src/session";

// Call is one StreamBricks request of the fake streamer: the test sends
// its bricks (or a failure, or its end) one at a time.
class Call {
  private queue: (Brick | { err: unknown } | null)[] = [];
  private wake: (() => void) | null = null;
  readonly ids: string[];

  constructor(
    readonly req: StreamRequest,
    readonly signal: AbortSignal,
  ) {
    this.ids = req.keys.map(keyId);
    signal.addEventListener("abort", () => this.poke());
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private push(x: Brick | { err: unknown } | null): void {
    this.queue.push(x);
    this.poke();
  }

  /** brick sends brick k with voxels (every voxel v, or v(i) for voxel i). */
  brick(k: Key, v: number | ((i: number) => number) = 1): void {
    const value = new Uint8Array(brickBytes(this.req.grid));
    if (typeof v === "number") value.fill(v);
    else for (let i = 0; i < value.length; i++) value[i] = v(i);
    this.push({ ...k, offset: 1n, value, missing: false, wire: value.byteLength, zstd: false, error: "", index: 0, total: this.ids.length });
  }

  /** missing says brick k does not exist. */
  missing(k: Key): void {
    this.push({ ...k, offset: 0n, value: new Uint8Array(0), missing: true, wire: 0, zstd: false, error: "", index: 0, total: this.ids.length });
  }

  end(): void {
    this.push(null);
  }

  fail(err: unknown): void {
    this.push({ err });
  }

  /** deliver sends every brick asked for, then ends the call. */
  deliver(): void {
    for (const k of this.req.keys) this.brick(k);
    this.end();
  }

  async *run(): AsyncGenerator<Brick> {
    for (;;) {
      if (this.signal.aborted) throw new ConnectError("canceled", Code.Canceled);
      const x = this.queue.shift();
      if (x === undefined) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      if (x === null) return;
      if ("err" in x) throw x.err;
      yield x;
    }
  }
}

class FakeStreamer implements Streamer {
  calls: Call[] = [];
  stream(req: StreamRequest, signal: AbortSignal): AsyncIterable<Brick> {
    const c = new Call(req, signal);
    this.calls.push(c);
    return c.run();
  }
  loadZstd(): void {}
  /** open returns the calls not yet aborted. */
  open(): Call[] {
    return this.calls.filter((c) => !c.signal.aborted);
  }
}

/** Host records what the session tells the page; with hold, the finer streams wait for go(). */
class Host implements SessionHost {
  changes: string[] = [];
  messages: { text: string; source: string }[] = [];
  gones = 0;
  pending: (() => void)[] = [];
  coverIn?: (go: () => void) => void;
  constructor(hold: boolean) {
    if (hold) this.coverIn = (go) => this.pending.push(go);
  }
  changed(k: Key): void {
    this.changes.push(keyId(k));
  }
  message(text: string, source: string): void {
    this.messages.push({ text, source });
  }
  gone(): void {
    this.gones++;
  }
  /** go lets the finer streams start, as the page does after drawing the cover. */
  go(): void {
    const p = this.pending;
    this.pending = [];
    for (const f of p) f();
  }
}

/** settle lets the session's stream loops take what was sent. */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
}

// 64^3 uint8 in 16^3 bricks (4 KiB): 3 levels, the coarsest one brick.
// With a 512 KiB cache the slices are at LOD 0 (16 bricks each) and the 3D
// view at LOD 1 (LOD 0's 64 bricks take more than a quarter of the cache).
function open(opts: { shape?: [number, number, number]; levels?: number; budget?: number; hold?: boolean } = {}) {
  const [x, y, z] = opts.shape ?? [64, 64, 64];
  const v = create(VolumeSchema, {
    name: "v",
    dataType: DataType.UINT8,
    shape: { x, y, z },
    brickShape: { x: 16, y: 16, z: 16 },
    lodCount: opts.levels ?? 3,
    spacing: [1, 1, 1],
  });
  const streamer = new FakeStreamer();
  const host = new Host(opts.hold ?? true);
  const s = new Session(v, {} as Clients, streamer, opts.budget ?? 512 * 1024, host);
  return { s, streamer, host };
}

const layout: Record<Axis, { u: Axis; v: Axis }> = { z: { u: "x", v: "y" }, y: { u: "x", v: "z" }, x: { u: "y", v: "z" } };

/** slice is the whole slice through pos along depth, at one voxel per pixel (LOD 0). */
function slice(s: Session, depth: Axis, pos: number): SliceWant {
  const { u, v } = layout[depth];
  return { key: depth, depth, pos, u, v, u0: 0, u1: s.shape[u], v0: 0, v1: s.shape[v], voxelsPerPixel: 1 };
}

function views(s: Session, p: { x: number; y: number; z: number }): SliceWant[] {
  return [slice(s, "z", p.z), slice(s, "y", p.y), slice(s, "x", p.x)];
}

afterEach(() => mock.timers.reset());

// api.describe names the page's origin in its messages.
(globalThis as { location?: unknown }).location ??= { origin: "http://127.0.0.1:8080" };

test("the coarse cover is asked for alone and first; the finer streams start when the host has drawn it", async () => {
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  assert.equal(streamer.calls.length, 1, "only the cover is asked for");
  assert.deepEqual(streamer.calls[0].ids, ["2/0/0/0"]);
  await settle();
  assert.equal(streamer.calls.length, 1, "the finer streams wait for the cover");
  // Moving the views while the cover is on its way asks for nothing more.
  s.setViews(views(s, { x: 10, y: 20, z: 30 }));
  assert.equal(streamer.calls.length, 1);
  assert.equal(s.stats.cancelled, 0, "the cover's stream is still needed");

  streamer.calls[0].brick({ lod: 2, x: 0, y: 0, z: 0 });
  await settle();
  assert.deepEqual(host.changes, ["2/0/0/0"], "the cover brick reached the page");
  assert.equal(streamer.calls.length, 1, "the finer streams wait until the page has drawn the cover");
  assert.equal(host.pending.length, 1);
  host.go();
  // One stream per slice and one for the 3D view, slices first.
  assert.equal(streamer.calls.length, 5);
  const finer = streamer.calls.slice(1);
  assert.ok(finer.slice(0, 3).every((c) => c.req.keys.every((k) => k.lod === 0)), "the slices at LOD 0");
  assert.ok(finer[3].req.keys.every((k) => k.lod === 1), "the 3D view at LOD 1");
  assert.equal(s.level3d, 1);
  // Nothing asked for twice.
  const all = streamer.calls.flatMap((c) => c.ids);
  assert.equal(new Set(all).size, all.length);
  streamer.calls[0].end();
  await settle();
  assert.equal(streamer.calls.length, 5, "the end of the cover's stream asks for nothing more");
});

test("without a host's go the finer streams start as soon as the cover has arrived", async () => {
  const { s, streamer } = open({ hold: false });
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  assert.equal(streamer.calls.length, 1);
  streamer.calls[0].brick({ lod: 2, x: 0, y: 0, z: 0 });
  await settle();
  assert.equal(streamer.calls.length, 5);
});

test("prime asks for the coarsest level before the views are known; setViews keeps that stream", async () => {
  const { s, streamer, host } = open();
  s.prime();
  assert.equal(streamer.calls.length, 1);
  assert.deepEqual(streamer.calls[0].ids, ["2/0/0/0"]);
  assert.ok(s.stats.requestAt > 0);
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  assert.equal(streamer.calls.length, 1, "the views' plan waits for the primed cover");
  assert.equal(s.stats.cancelled, 0);
  streamer.calls[0].deliver();
  await settle();
  host.go();
  assert.equal(streamer.calls.length, 5);
  // A volume whose coarsest level is large is not primed: what covers the views depends on them.
  const big = open({ shape: [512, 64, 64], levels: 2 });
  big.s.prime();
  assert.equal(big.streamer.calls.length, 0);
});

test("a missing cover brick does not hold the finer streams back", async () => {
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].missing({ lod: 2, x: 0, y: 0, z: 0 });
  await settle();
  host.go();
  assert.equal(streamer.calls.length, 5);
  assert.equal(s.stats.missing, 1);
});

test("moving the views to where the coarsest level is not held asks for its cover there first", async () => {
  // 256^3 with 2 levels and an 8 MiB cache: LOD 1 (512 bricks, 2 MiB) is
  // more than an eighth of the cache, so the cover is the slices' LOD 1
  // bricks; the slices themselves are at LOD 0, the 3D view at LOD 1.
  const { s, streamer, host } = open({ shape: [256, 256, 256], levels: 2, budget: 8 << 20 });
  s.setViews(views(s, { x: 16, y: 128, z: 128 }));
  assert.equal(streamer.calls.length, 1);
  const cover = streamer.calls[0].ids;
  assert.ok(cover.every((id) => id.startsWith("1/")));
  assert.ok(cover.length < 512, `the cover is ${cover.length} bricks, not the whole level`);
  assert.ok(cover.includes("1/0/0/0"), "the sagittal slice at x = 16 is in brick x = 0 of LOD 1");
  assert.ok(!cover.includes("1/7/0/0"));
  streamer.calls[0].deliver();
  await settle();
  host.go();
  const n = streamer.calls.length;
  assert.equal(n, 5, "the three slices at LOD 0 and the 3D view");
  // The slices' bricks arrive; the 3D view's stream (all of LOD 1) has not yet.
  for (const c of streamer.calls.slice(1, -1)) c.deliver();
  await settle();
  // The sagittal slice jumps to x = 240: LOD 1's bricks x = 7 are not held.
  const before = streamer.calls.length;
  s.setViews(views(s, { x: 240, y: 128, z: 128 }));
  const fresh = streamer.calls.slice(before);
  assert.equal(fresh.length, 1, "the finer bricks at x = 240 wait for the cover");
  assert.ok(fresh[0].ids.includes("1/7/0/0"), `the new cover ${fresh[0].ids}`);
  assert.ok(fresh[0].ids.every((id) => id.startsWith("1/7/")), "the new cover comes alone");
  assert.ok(!streamer.calls[n - 1].signal.aborted, "the 3D view's stream goes on");
  fresh[0].deliver();
  await settle();
  host.go();
  const finer = streamer.calls.slice(before + 1).flatMap((c) => c.ids);
  assert.ok(finer.includes("0/15/0/0"), "the sagittal slice's LOD 0 bricks at x = 240 follow");
});

test("moving a slice cancels the stream that carries mostly what is no longer needed", async () => {
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].deliver();
  await settle();
  host.go();
  const axial = streamer.calls[1];
  assert.ok(axial.req.keys.every((k) => k.lod === 0 && k.z === 2), "the axial stream: LOD 0, z layer 2");
  s.setViews(views(s, { x: 32, y: 32, z: 5 }));
  assert.ok(axial.signal.aborted, "the axial stream is cancelled");
  assert.equal(s.stats.cancelled, 1);
  const others = streamer.calls.slice(2, 5);
  assert.ok(others.every((c) => !c.signal.aborted), "the other views' streams go on");
  // The new plane is asked for (or on its way in another view's stream),
  // and what the cancelled stream carried that is still needed is asked for again.
  const asked = new Set(streamer.calls.slice(5).flatMap((c) => c.ids));
  const coming = new Set(others.flatMap((c) => c.ids));
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) assert.ok(asked.has(`0/${x}/${y}/0`) || coming.has(`0/${x}/${y}/0`), `0/${x}/${y}/0 asked for`);
  assert.ok(asked.has("0/0/0/0"), "a new axial brick no other view needs");
  assert.ok(asked.has("0/1/2/2"), "the coronal slice's brick that the axial stream carried");
  await settle();
  assert.ok(!s.streamError, "a cancelled stream is no error");
  assert.equal(host.messages.length, 0);
});

test("the bricks the views show are pinned: moving on evicts the old ones, never the shown ones", async () => {
  // 128 x 128 x 64 (LOD 0: 256 bricks, 1 MiB) with a 1 MiB cache.
  const { s, streamer, host } = open({ shape: [128, 128, 64], levels: 4, budget: 1 << 20 });
  const evicted: string[] = [];
  s.cache.onEvict = (id) => {
    assert.ok(!s.cache.isPinned(id), `pinned brick ${id} evicted`);
    evicted.push(id);
  };
  const run = async () => {
    for (let i = 0; i < 20; i++) {
      const open = streamer.open().filter((c) => c.ids.length > 0);
      for (const c of open) c.deliver();
      await settle();
      host.go();
      if (streamer.open().length === 0 || open.length === 0) break;
    }
  };
  const a = views(s, { x: 8, y: 8, z: 8 });
  s.setViews(a);
  await run();
  assert.ok(s.loaded());
  const b = views(s, { x: 56, y: 56, z: 56 });
  // Move every slice, several times, so that what is fetched goes past the budget.
  for (const p of [40, 24, 56]) {
    s.setViews(views(s, { x: p, y: p, z: p }));
    await run();
  }
  s.setViews(b);
  await run();
  assert.ok(s.loaded(), "everything the views show now is held");
  const c = s.cacheStats();
  assert.ok(c.maxBytes <= c.budget, `the cache held ${c.maxBytes} of ${c.budget}`);
  assert.ok(evicted.length > 0, "the test went past the budget");
  for (const w of b) {
    const id = keyId({ lod: 0, x: w.depth === "x" ? 3 : 0, y: w.depth === "y" ? 3 : 0, z: w.depth === "z" ? 3 : 0 });
    assert.ok(s.cache.has(id) && s.cache.isPinned(id), `${id} held and pinned`);
  }
  assert.ok(s.cache.has("3/0/0/0") && s.cache.isPinned("3/0/0/0"), "the coarsest level stays");
});

test("a failed stream is asked for again after a delay, and the error clears", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].deliver();
  await settle();
  host.go();
  const axial = streamer.calls[1];
  axial.brick(axial.req.keys[0]);
  axial.fail(new ConnectError("connection reset", Code.Unavailable));
  await settle();
  assert.match(s.streamError, /not reachable/);
  assert.deepEqual(host.messages.map((m) => m.source), ["stream"]);
  const n = streamer.calls.length;
  assert.equal(n, 5, "nothing asked for before the delay");
  mock.timers.tick(999);
  assert.equal(streamer.calls.length, n);
  mock.timers.tick(1);
  assert.equal(s.stats.retries, 1);
  assert.equal(streamer.calls.length, n + 1);
  const again = streamer.calls[n];
  assert.deepEqual(again.ids, axial.ids.slice(1), "what the failed stream had not delivered");
  again.deliver();
  await settle();
  assert.equal(s.streamError, "");
  assert.deepEqual(host.messages.at(-1), { text: "", source: "stream" });
});

test("a failed cover stream is not asked for again at once", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].fail(new ConnectError("busy", Code.ResourceExhausted));
  await settle();
  assert.equal(streamer.calls.length, 1, "no retry before the delay, and the finer streams still wait");
  assert.equal(host.pending.length, 0);
  mock.timers.tick(1000);
  assert.equal(streamer.calls.length, 2);
  assert.deepEqual(streamer.calls[1].ids, ["2/0/0/0"]);
  streamer.calls[1].deliver();
  await settle();
  host.go();
  assert.equal(streamer.calls.length, 6);
  // A refused token or a bad request is not retried.
  const other = open();
  other.s.setViews(views(other.s, { x: 32, y: 32, z: 32 }));
  other.streamer.calls[0].fail(new ConnectError("no", Code.PermissionDenied));
  await settle();
  mock.timers.tick(20000);
  assert.equal(other.streamer.calls.length, 1);
  assert.match(other.s.streamError, /Permission denied/);
});

test("the coarsest level's values give the range for the automatic window", async () => {
  const { s, streamer } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].brick({ lod: 2, x: 0, y: 0, z: 0 }, (i) => 10 + (i % 50) + (i === 4000 ? 180 : 0));
  await settle();
  assert.equal(s.min, 10);
  assert.equal(s.max, 190);
  assert.ok(s.coarsestComplete());
});

test("close aborts every stream and asks for nothing more", async () => {
  const { s, streamer, host } = open();
  s.setViews(views(s, { x: 32, y: 32, z: 32 }));
  streamer.calls[0].deliver();
  await settle();
  host.go();
  s.close();
  assert.ok(streamer.calls.slice(1).every((c) => c.signal.aborted));
  s.setViews(views(s, { x: 1, y: 1, z: 1 }));
  assert.equal(streamer.calls.length, 5);
  assert.deepEqual(levelBricks(s.grid, 2).map(keyId), ["2/0/0/0"]);
});
