// Session is one open volume: it owns the volume's brick cache, the
// StreamBricks requests that fill it, their cancellation, priorities and
// retries, the live stream of new writes, and the loading figures. It is
// made when a volume is opened and thrown away whole (close) when another
// one is; nothing of it outlives that.
//
// The views tell it what they show (setViews): for each slice its plane,
// viewport and pixel size, for the 3D view a voxel budget. From that it
// plans, in priority order, the bricks needed now (the coarsest level as a
// fallback, each slice at the level matching its pixels, the 3D view's
// level) and the neighbours worth prefetching (the next brick layer of
// each slice); it pins what is needed now in the cache, cancels streams
// that carry nothing needed any more, and starts one for what is missing.
//
// Coarse first: the coarsest level's bricks that cover every view (all of
// it when it is small: one brick for most volumes) go in a small stream of
// their own, and the finer streams start only once they have arrived, so
// the first picture is drawn from a few hundred KiB instead of waiting
// behind the finer bricks. The same holds whenever the views move to where
// the coarsest level is not held. prime asks for that level before the
// views exist, as soon as the volume's metadata is known.
//
// No DOM: session.ts is unit-tested in node with a fake streamer.

import { Codec, type Volume } from "./gen/ldm/v1/types_pb";
import { describe, isCanceled, isNotFound, retriable, type Clients } from "./api";
import { decodeTile, type Brick, type StreamRequest } from "./bricks";
import { FrameError } from "./zstd";
import { BrickCache, type CacheStats } from "./brickcache";
import {
  brickBox,
  brickBytes,
  keyId,
  levelBricks,
  levelGrid,
  levelShape,
  neighbourPlanes,
  sliceBricks,
  sliceLevel,
  volumeLevel,
  type Axis,
  type Grid,
  type Key,
  type SliceRequest,
  type Vec3,
} from "./selection";
import { bytesPerVoxel, decodeBrick, type BrickData } from "./volume";

/** defaultBudget is the cache's byte budget unless the page sets another. */
export const defaultBudget = 512 * 1024 * 1024;

/** volume3DVoxels is the 3D view's voxel budget: it uses the finest level with at most this many. */
export const volume3DVoxels = 256 ** 3;

/** Stats of the session's loading, in ms of performance.now(). */
export interface Stats {
  volume: string;
  scriptAt: number; // the page's script started
  openedAt: number; // the volume was asked for
  volumeAt: number; // its metadata arrived
  requestAt: number; // the first StreamBricks call started
  firstBrick: number;
  firstSlices: number; // every slice view covered (any level)
  firstPicture: number; // ... and the 3D view drawn
  fullResolution: number; // every view at its own level, nothing left to fetch
  firstPictureBytes: number; // brick bytes received when the first picture was drawn
  bytes: number; // brick bytes received (on the wire: zstd frames as they came)
  voxels: number; // voxels received, decoded
  zstdBricks: number; // bricks that came as zstd frames
  badBricks: number; // bricks whose frame could not be decoded
  bricks: number;
  missing: number; // keys the server said have no brick
  streams: number; // StreamBricks calls made
  cancelled: number; // ... of them cancelled because the view moved on
  retries: number; // requests made again after a transient failure
  requestedKeys: number; // keys asked for in all
  streamMs: number;
  liveTiles: number;
  drawMs: number;
  draw3dMs: number;
  applyMs: number;
  lastFirst: Key | null; // the first brick of the latest stream
  lastMove: number; // a view last moved (slice, zoom or pan)
  lastSharp: number; // every view was last at its own level after that
}

export interface Progress {
  wanted: number; // bricks the current view needs (now and prefetch)
  held: number; // ... of them in the cache or known missing
  bytes: number; // brick bytes received, on the wire
  voxels: number; // voxels received (decoded)
  voxelBytes: number; // ... their size in bytes
  start: number;
  mbs: number;
  etaMs: number; // estimated time to fetch the rest, -1 if unknown
  streaming: boolean;
}

/** Streamer is what a session fetches bricks with (BrickStreamer in the page; a fake in tests). */
export interface Streamer {
  /** stream yields the bricks of req.keys; aborting signal ends it with Code.Canceled. */
  stream(req: StreamRequest, signal: AbortSignal): AsyncIterable<Brick>;
  /** loadZstd starts loading the zstd decoder where bricks are decoded. */
  loadZstd(): void;
}

/** What the session tells its owner. */
export interface SessionHost {
  /** changed says that brick k arrived (or was replaced): views that show its box need a redraw. */
  changed(k: Key, box: { min: Vec3; max: Vec3 }): void;
  /** message shows an error (empty clears it, for source). */
  message(text: string, source: string): void;
  /** gone says the volume was deleted. */
  gone(): void;
  /**
   * coverIn, when given, says that the coarse cover has arrived: the
   * session starts the finer streams when the host calls go (the page
   * does after the frame that draws the cover, so that the first picture
   * does not share the main thread with them). Without it they start at once.
   */
  coverIn?(go: () => void): void;
}

interface Flight {
  ctl: AbortController;
  keys: Set<string>; // not yet received
  cancelled: boolean;
  prefetch: boolean;
  coarse: boolean; // carries the coarsest bricks that cover the views: the finer streams wait for it
}

/** SliceWant is what one slice view shows, as the owner reports it. */
export interface SliceWant extends SliceRequest {
  key: Axis; // the view's key
}

export class Session {
  readonly name: string;
  readonly grid: Grid;
  readonly type: number;
  readonly spacing: Vec3;
  readonly cache: BrickCache<BrickData>;
  readonly stats: Stats;
  /** min and max of the coarsest level's finite values (for automatic contrast). */
  min = Infinity;
  max = -Infinity;
  badTiles = 0;
  /** The level each slice view draws (planned), by view key, and the 3D view's. */
  sliceLevels: Record<string, number> = {};
  level3d = 0;
  streamError = "";
  private missing = new Set<string>();
  private flights = new Set<Flight>();
  private now: Key[] = []; // needed now, in priority order
  private groups: Key[][] = []; // now, as the streams to request it in; the first is the coarse cover
  private prefetch: Key[] = [];
  private wantedIds = new Set<string>();
  private closed = false;
  private live: AbortController | null = null;
  private followNext: bigint;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private refused = new Set<string>(); // cover bricks the cache could not keep (asked for again after setBudget)
  private holding = false; // the cover is in; the finer streams wait for the host's go
  private attempt = 0;
  private coarsestCount = 0;
  private received = 0; // bytes
  private t0 = performance.now();

  constructor(
    v: Volume,
    private readonly clients: Clients,
    private readonly streamer: Streamer,
    budget: number,
    private readonly host: SessionHost,
  ) {
    this.name = v.name;
    const s = v.shape!;
    const b = v.brickShape && v.brickShape.x ? v.brickShape : { x: 64, y: 64, z: 64 };
    this.type = v.dataType;
    this.grid = { shape: { x: s.x, y: s.y, z: s.z }, brick: { x: b.x, y: b.y, z: b.z }, levels: Math.max(1, v.lodCount), bytesPerVoxel: bytesPerVoxel(v.dataType) };
    const sp = v.spacing.length === 3 ? v.spacing : [1, 1, 1];
    this.spacing = { x: sp[0] || 1, y: sp[1] || 1, z: sp[2] || 1 };
    this.cache = new BrickCache<BrickData>(budget);
    // Load the zstd decoder (page and worker) while the first bricks are
    // on their way; a raw volume never loads it.
    if (v.codec === Codec.ZSTD) streamer.loadZstd();
    this.followNext = v.nextOffset;
    this.stats = {
      volume: v.name, scriptAt: 0, openedAt: performance.now(), volumeAt: performance.now(), requestAt: 0, lastMove: 0, lastSharp: 0, firstBrick: 0, firstSlices: 0, firstPicture: 0, fullResolution: 0, firstPictureBytes: 0,
      bytes: 0, voxels: 0, zstdBricks: 0, badBricks: 0, bricks: 0, missing: 0, streams: 0, cancelled: 0, retries: 0, requestedKeys: 0, streamMs: 0, liveTiles: 0, drawMs: 0, draw3dMs: 0, applyMs: 0, lastFirst: null,
    };
  }

  get shape(): Vec3 {
    return this.grid.shape;
  }

  get coarsest(): number {
    return this.grid.levels - 1;
  }

  /** close cancels every request and the live stream; the session is done. */
  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    for (const f of this.flights) f.ctl.abort();
    this.flights.clear();
    this.live?.abort();
  }

  /** setBudget changes the cache's byte budget and plans again. */
  setBudget(bytes: number, slices: SliceWant[]): void {
    this.cache.setBudget(bytes);
    this.refused.clear();
    this.setViews(slices);
  }

  /**
   * prime asks for the coarsest level at once, before the views are known,
   * when all of it is small (at most an eighth of the cache, as setViews
   * plans it): it draws the first picture of every view wherever they
   * look. setViews keeps that stream running (it carries what it plans
   * first) and starts the finer ones after it.
   */
  prime(): void {
    if (this.closed || this.flights.size || this.now.length) return;
    const top = levelBricks(this.grid, this.coarsest);
    if (top.length * brickBytes(this.grid) > this.cache.budget / 8) return;
    this.coarsestCount = top.length;
    this.now = top;
    this.groups = [top];
    this.prefetch = [];
    this.wantedIds = new Set(top.map(keyId));
    this.cache.pin(this.wantedIds);
    this.request();
  }

  /**
   * setViews plans the bricks for what the views show now, pins them,
   * cancels the streams that carry none of them and requests what is
   * missing: needed now first, then neighbours.
   */
  setViews(slices: SliceWant[]): void {
    if (this.closed) return;
    const g = this.grid, bb = brickBytes(g), budget = this.cache.budget;
    const now: Key[] = [];
    const seen = new Set<string>();
    const add = (list: Key[], ks: Key[]) => {
      for (const k of ks) {
        const id = keyId(k);
        if (seen.has(id)) continue;
        seen.add(id);
        list.push(k);
      }
    };
    // The coarsest level, so something is drawn at once: all of it when
    // small (it also gives the automatic contrast), else the slices' planes.
    // They are the cover: streamed first, on their own.
    const top = levelBricks(g, this.coarsest);
    this.coarsestCount = top.length;
    if (top.length * bb <= budget / 8) add(now, top);
    else for (const s of slices) add(now, sliceBricks(g, s, this.coarsest));
    // The 3D view: the finest level within the voxel budget whose bricks
    // take at most a quarter of the cache.
    let l3 = volumeLevel(g, volume3DVoxels);
    while (l3 < this.coarsest && countBricks(g, l3) * bb > budget / 4) l3++;
    this.level3d = l3;
    // The slices: each at the level matching its pixels; while they take
    // more than half of the cache, the view needing the most bricks goes one
    // level coarser.
    const levels = slices.map((s) => sliceLevel(g, s.voxelsPerPixel));
    const sliceKeys = slices.map((s, i) => sliceBricks(g, s, levels[i]));
    for (;;) {
      const n = sliceKeys.reduce((a, ks) => a + ks.length, 0);
      if (n * bb <= budget / 2) break;
      let worst = -1;
      for (let i = 0; i < slices.length; i++) {
        if (levels[i] < this.coarsest && (worst < 0 || sliceKeys[i].length > sliceKeys[worst].length)) worst = i;
      }
      if (worst < 0) break;
      levels[worst]++;
      sliceKeys[worst] = sliceBricks(g, slices[worst], levels[worst]);
    }
    slices.forEach((s, i) => (this.sliceLevels[s.key] = levels[i]));
    // Each slice's bricks and the 3D view's go in streams of their own, so
    // that moving one view cancels only its stream.
    const groups: Key[][] = [now.slice()];
    for (const ks of sliceKeys) {
      const gk: Key[] = [];
      add(gk, ks);
      groups.push(gk);
    }
    const g3: Key[] = [];
    add(g3, levelBricks(g, l3));
    groups.push(g3);
    for (const gk of groups.slice(1)) now.push(...gk);
    // Neighbours: the next brick layer each way of each slice, within what
    // the cache has left.
    const pre: Key[] = [];
    let room = Math.floor((budget - seen.size * bb) / bb) - 1;
    slices.forEach((s, i) => {
      for (const p of neighbourPlanes(g, s.depth, s.pos, levels[i])) {
        for (const k of sliceBricks(g, { ...s, pos: p }, levels[i])) {
          if (room <= 0) return;
          const id = keyId(k);
          if (seen.has(id)) continue;
          seen.add(id);
          pre.push(k);
          room--;
        }
      }
    });
    this.now = now;
    this.groups = groups;
    this.prefetch = pre;
    this.wantedIds = seen;
    // What the views show now is the most recently used, then pinned.
    for (const k of now) this.cache.get(keyId(k));
    this.cache.pin(now.map(keyId));
    this.request();
  }

  /**
   * request cancels the streams that carry mostly what is not wanted any
   * more (what they carry that is still wanted is asked for again), then
   * streams what is wanted and neither held nor on its way: the coarsest
   * level's cover first and alone; once it has arrived each slice, the 3D
   * view, then the neighbours.
   */
  private request(): void {
    if (this.closed) return;
    const nowIds = new Set(this.now.map(keyId));
    const coming = new Set<string>();
    for (const f of this.flights) {
      // Everything it carries has arrived: the stream is ending on its own.
      if (f.keys.size === 0) continue;
      let useful = 0;
      for (const id of f.keys) if (f.prefetch ? this.wantedIds.has(id) : nowIds.has(id)) useful++;
      if (useful === 0 || useful * 2 < f.keys.size) {
        f.cancelled = true;
        f.ctl.abort();
        this.flights.delete(f);
        this.stats.cancelled++;
        continue;
      }
      for (const id of f.keys) coming.add(id);
    }
    const lacking = (ks: Key[]) => ks.filter((k) => {
      const id = keyId(k);
      return !this.cache.has(id) && !this.missing.has(id) && !coming.has(id);
    });
    // The cover, alone: the finer streams would share the connection and
    // the main thread with it and delay the first picture. A cover brick
    // on its way in a finer stream (the 3D view's, after a jump) is asked
    // for again on its own rather than waited for behind that stream.
    const inCover = new Set<string>();
    for (const f of this.flights) if (f.coarse) for (const id of f.keys) inCover.add(id);
    const cover = (this.groups[0] ?? []).filter((k) => {
      const id = keyId(k);
      return !this.cache.has(id) && !this.missing.has(id) && !inCover.has(id) && !this.refused.has(id);
    });
    for (let i = 0; i < cover.length; i += 1024) this.start(cover.slice(i, i + 1024), false, true);
    for (const f of this.flights) if (f.coarse && f.keys.size > 0) return;
    if (this.holding) return;
    for (const gk of this.groups.slice(1)) {
      const need = lacking(gk);
      for (let i = 0; i < need.length; i += 1024) this.start(need.slice(i, i + 1024), false);
    }
    // Neighbours only once what is needed now has arrived: they must not
    // take bandwidth (or one of the browser's few connections) from it.
    if (!this.nowComplete()) return;
    const pre = lacking(this.prefetch);
    for (let i = 0; i < pre.length; i += 1024) this.start(pre.slice(i, i + 1024), true);
  }

  private start(keys: Key[], prefetch: boolean, coarse = false): void {
    const f: Flight = { ctl: new AbortController(), keys: new Set(keys.map(keyId)), cancelled: false, prefetch, coarse };
    this.flights.add(f);
    this.stats.streams++;
    if (!this.stats.requestAt) this.stats.requestAt = performance.now();
    this.stats.requestedKeys += keys.length;
    this.stats.lastFirst = null;
    void this.run(f, keys);
  }

  private async run(f: Flight, keys: Key[]): Promise<void> {
    const t0 = performance.now();
    let failed = false;
    try {
      for await (const b of this.streamer.stream({ volume: this.name, keys, grid: this.grid }, f.ctl.signal)) {
        if (this.closed || f.cancelled) break;
        const k: Key = { lod: b.lod, x: b.x, y: b.y, z: b.z };
        const id = keyId(k);
        f.keys.delete(id);
        if (!this.stats.lastFirst) this.stats.lastFirst = k;
        if (this.attempt > 0) {
          this.attempt = 0;
          this.streamError = "";
          this.host.message("", "stream");
        }
        this.receive(k, b);
        // The cover is in: the finer streams start now, or when the host
        // has drawn it (the end of this stream need not be waited for).
        if (f.coarse && f.keys.size === 0) this.coverArrived();
      }
    } catch (e) {
      failed = true;
      if (f.ctl.signal.aborted || isCanceled(e) || this.closed) return;
      this.streamError = describe(e, `streaming ${this.name}`);
      this.host.message(this.streamError, "stream");
      if (isNotFound(e)) this.host.gone();
      else if (retriable(e)) {
        // Stream again what is still missing, after 1 s doubling to 10 s.
        const delay = Math.min(10000, 1000 * 2 ** Math.min(this.attempt, 4));
        this.attempt++;
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => {
          this.stats.retries++;
          this.request();
        }, delay);
      }
    } finally {
      this.stats.streamMs += performance.now() - t0;
      this.flights.delete(f);
      // The neighbours wait for what is needed now: ask for them when it is
      // in. The finer streams wait for the cover: ask for them when its
      // stream has ended (a brick it lacked is asked for again, unless the
      // cache refused it; a failed stream is retried after a delay).
      if (!this.closed && !f.cancelled && !failed && !f.prefetch && (f.coarse || this.nowComplete())) this.request();
    }
  }

  /** coverArrived starts the finer streams, at once or when the host says go. */
  private coverArrived(): void {
    if (!this.host.coverIn) {
      this.request();
      return;
    }
    if (this.holding) return;
    this.holding = true;
    this.host.coverIn(() => {
      if (!this.holding) return;
      this.holding = false;
      this.request();
    });
  }

  /** receive takes one brick of a stream: missing, undecodable, or voxels for the cache. */
  private receive(k: Key, b: Brick): void {
    const id = keyId(k);
    if (b.missing) {
      this.missing.add(id);
      this.stats.missing++;
      return;
    }
    this.stats.bytes += b.wire;
    this.received += b.wire;
    if (b.zstd) this.stats.zstdBricks++;
    if (b.error) {
      this.badBrick(k, b.error);
      return;
    }
    if (!this.stats.firstBrick) this.stats.firstBrick = performance.now();
    this.stats.bricks++;
    this.stats.voxels += b.value.byteLength / this.grid.bytesPerVoxel;
    this.apply(k, b.offset, b.value, false);
  }

  /**
   * apply stores a brick in the cache. A tile older (by log offset) than
   * the cached one is ignored, so a live write is never overwritten by a
   * stale copy from a concurrent stream. Live tiles are kept only for
   * bricks that are cached or wanted.
   */
  private apply(k: Key, offset: bigint, value: Uint8Array, live: boolean): void {
    const t0 = performance.now();
    const g = this.grid, id = keyId(k);
    const n = levelGrid(g, k.lod);
    if (k.lod >= g.levels || k.x >= n.x || k.y >= n.y || k.z >= n.z) {
      this.badTiles++;
      return;
    }
    if (live) this.missing.delete(id);
    const old = this.cache.peek(id);
    if (old && old.offset > offset) return;
    if (live && !old && !this.wantedIds.has(id)) return;
    const ls = levelShape(g, k.lod), B = g.brick;
    const nb = { x: Math.min(B.x, ls.x - k.x * B.x), y: Math.min(B.y, ls.y - k.y * B.y), z: Math.min(B.z, ls.z - k.z * B.z) };
    const d = decodeBrick(this.type, B, nb, offset, value);
    if (!d) {
      this.badTiles++;
      return;
    }
    this.missing.delete(id);
    if (!this.cache.put(id, d, d.bytes)) {
      if (k.lod === this.coarsest) this.refused.add(id);
      return;
    }
    if (k.lod === this.coarsest) this.scan(d, nb);
    this.stats.applyMs += performance.now() - t0;
    this.host.changed(k, brickBox(g, k));
  }

  /**
   * badBrick records a brick whose frame could not be decoded: it is shown
   * as missing (never as voxels) and the page says which brick and why.
   */
  private badBrick(k: Key, why: string): void {
    const id = keyId(k);
    this.stats.badBricks++;
    this.badTiles++;
    this.missing.add(id);
    this.cache.delete(id);
    this.host.message(`Brick ${id} (level/x/y/z) of ${this.name} cannot be shown: ${why}. The volume's stored data may be damaged: check it with the server's logs or read it again with 'ldm volume recompress'.`, "decode");
    this.host.changed(k, brickBox(this.grid, k));
  }

  /** scan widens min and max by a coarsest-level brick's finite values. */
  private scan(d: BrickData, n: Vec3): void {
    let lo = this.min, hi = this.max;
    const v = d.voxels;
    // Integer voxels are all finite, and a brick whose rows and planes are
    // its whole extent is one run: a plain loop (it is on the way to the
    // first picture).
    if (!(v instanceof Float32Array) && d.sx === n.x && d.sy === n.y) {
      const end = Math.min(v.length, n.x * n.y * n.z);
      for (let i = 0; i < end; i++) {
        const x = v[i];
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      }
      this.min = lo;
      this.max = hi;
      return;
    }
    for (let z = 0; z < n.z; z++) {
      for (let y = 0; y < n.y; y++) {
        const s = (z * d.sy + y) * d.sx;
        for (let i = 0; i < n.x; i++) {
          const x = v[s + i];
          // NaN and +-Inf (float32 only) would make the window infinite.
          if (x - x !== 0) continue;
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
      }
    }
    this.min = lo;
    this.max = hi;
  }

  /** coarsestComplete reports whether every brick of the coarsest level is held (or known missing). */
  coarsestComplete(): boolean {
    let n = 0;
    for (const k of levelBricks(this.grid, this.coarsest)) {
      const id = keyId(k);
      if (this.cache.has(id) || this.missing.has(id)) n++;
    }
    return n === this.coarsestCount;
  }

  /** holds reports whether brick k is cached or known not to exist. */
  holds(k: Key): boolean {
    const id = keyId(k);
    return this.cache.has(id) || this.missing.has(id);
  }

  /** brick returns a cached brick without changing the cache's order (drawing must not reorder it). */
  brick(lod: number, x: number, y: number, z: number): BrickData | undefined {
    return this.cache.peek(`${lod}/${x}/${y}/${z}`);
  }

  /** lodAt returns the finest level held at LOD 0 voxel p, or -1. */
  lodAt(p: Vec3): number {
    const B = this.grid.brick;
    for (let l = 0; l < this.grid.levels; l++) {
      if (this.brick(l, Math.floor((p.x >> l) / B.x), Math.floor((p.y >> l) / B.y), Math.floor((p.z >> l) / B.z))) return l;
    }
    return -1;
  }

  /** value returns the value at LOD 0 voxel p from the finest level held (or at level lod when given), or NaN. */
  value(p: Vec3, lod = -1): number {
    const l = lod >= 0 ? lod : this.lodAt(p);
    if (l < 0) return NaN;
    const B = this.grid.brick;
    const x = p.x >> l, y = p.y >> l, z = p.z >> l;
    const d = this.brick(l, Math.floor(x / B.x), Math.floor(y / B.y), Math.floor(z / B.z));
    if (!d) return NaN;
    return d.voxels[(x % B.x) + d.sx * ((y % B.y) + d.sy * (z % B.z))];
  }

  /** loaded reports whether everything the views need now is held (or known missing) and no stream is running. */
  loaded(): boolean {
    if (this.flights.size) return false;
    for (const k of this.now) {
      const id = keyId(k);
      if (!this.cache.has(id) && !this.missing.has(id)) return false;
    }
    return true;
  }

  /** nowComplete reports whether everything needed now is held (prefetch may still run). */
  nowComplete(): boolean {
    for (const k of this.now) {
      const id = keyId(k);
      if (!this.cache.has(id) && !this.missing.has(id)) return false;
    }
    return true;
  }

  get streaming(): boolean {
    return this.flights.size > 0;
  }

  progress(): Progress {
    let held = 0;
    for (const id of this.wantedIds) if (this.cache.has(id) || this.missing.has(id)) held++;
    const secs = Math.max(1e-3, (performance.now() - this.t0) / 1000);
    const mbs = this.received / 1e6 / secs;
    const avg = this.stats.bricks ? this.stats.bytes / this.stats.bricks : brickBytes(this.grid);
    const left = (this.wantedIds.size - held) * avg;
    return {
      wanted: this.wantedIds.size,
      held,
      bytes: this.stats.bytes,
      voxels: this.stats.voxels,
      voxelBytes: this.stats.voxels * this.grid.bytesPerVoxel,
      start: this.t0,
      mbs,
      etaMs: mbs > 0 && this.streaming ? (left / 1e6 / mbs) * 1000 : -1,
      streaming: this.streaming,
    };
  }

  /** requests lists the streams running: how many keys each has still to deliver, the first of them, and whether it prefetches. */
  requests(): { left: number; first: string; prefetch: boolean }[] {
    return [...this.flights].map((f) => ({ left: f.keys.size, first: f.keys.values().next().value ?? "", prefetch: f.prefetch }));
  }

  cacheStats(): CacheStats {
    return this.cache.stats();
  }

  // ---- live updates ----

  /**
   * follow tails the volume's log from where it was opened (or from where
   * it stopped) and applies every brick written that is cached or wanted.
   * A transient failure is retried from the last tile seen, after 1 s
   * doubling to 10 s; a deleted volume or a refused token stops it.
   */
  async follow(attempt = 0): Promise<void> {
    if (this.closed) return;
    this.live?.abort();
    const ctl = new AbortController();
    this.live = ctl;
    const retry = (e: unknown): void => {
      if (ctl.signal.aborted || this.live !== ctl || this.closed) return;
      if (e !== undefined) {
        if (isNotFound(e)) {
          this.host.message(`Volume ${this.name} was deleted.`, "follow");
          this.host.gone();
          return;
        }
        this.host.message(describe(e, `following ${this.name}`), "follow");
        if (!retriable(e)) return;
      }
      setTimeout(() => {
        if (this.live === ctl && !ctl.signal.aborted) void this.follow(attempt + 1);
      }, Math.min(10000, 1000 * 2 ** Math.min(attempt, 4)));
    };
    try {
      for await (const res of this.clients.tiles.readTileStream({ volume: this.name, offset: this.followNext, follow: true }, { signal: ctl.signal })) {
        const t = res.tile;
        if (!t || this.closed) continue;
        this.followNext = t.offset + 1n;
        attempt = 0;
        this.host.message("", "follow");
        if (!t.key) continue;
        this.stats.liveTiles++;
        const k: Key = { lod: t.key.lod, x: t.key.x, y: t.key.y, z: t.key.z };
        let value: Uint8Array;
        try {
          value = await decodeTile(this.grid, k, t.codec, t.value);
        } catch (e) {
          if (!(e instanceof FrameError) || this.closed) throw e;
          this.badBrick(k, e.message);
          continue;
        }
        if (this.closed) continue;
        this.apply(k, t.offset, value, true);
      }
    } catch (e) {
      if (ctl.signal.aborted || isCanceled(e)) return;
      retry(e);
      return;
    }
    // The server ended the stream (a deleted volume, or a server that is
    // stopping): find out which, and follow again if the volume is there.
    if (ctl.signal.aborted || this.live !== ctl || this.closed) return;
    try {
      await this.clients.volumes.getVolume({ name: this.name });
    } catch (e) {
      if (!isCanceled(e)) retry(e);
      return;
    }
    retry(undefined);
  }

  /** following reports whether the live stream runs (or waits to retry). */
  get following(): boolean {
    return this.live !== null;
  }

  /** unfollow stops the live stream; follow resumes where it stopped. */
  unfollow(): void {
    this.live?.abort();
    this.live = null;
  }
}

function countBricks(g: Grid, l: number): number {
  const n = levelGrid(g, l);
  return n.x * n.y * n.z;
}
