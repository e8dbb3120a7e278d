// BrickStreamer runs StreamBricks for an exact set of bricks in a worker
// (stream_worker.ts, bundled as stream.js) so that fetching and decoding
// overlap with drawing on the main thread. Small requests (the first, tiny
// fallback level) run on the main thread, so they need not wait for the
// worker to start; where workers are unavailable every request does.
// Either way streamKeys decodes zstd bricks (zstd.ts), so the page only
// ever sees voxels.

import { Code, ConnectError } from "@connectrpc/connect";
import type { Clients, Protocol } from "./api";
import { Codec } from "./gen/ldm/v1/types_pb";
import { levelShape, type Grid, type Key } from "./selection";
import { decodeFrame, FrameError, zstdReady } from "./zstd";

export interface StreamRequest {
  volume: string;
  keys: Key[];
  grid: Grid; // the volume's, to check the size of each brick decoded
}

/**
 * Brick is one response: a brick's voxels (decoded when it came as a zstd
 * frame), or missing (no such brick; value empty), or a brick that could
 * not be decoded (error says why; value empty).
 */
export interface Brick {
  lod: number;
  x: number;
  y: number;
  z: number;
  offset: bigint;
  value: Uint8Array;
  missing: boolean;
  wire: number; // bytes of the brick as received (the frame for zstd)
  zstd: boolean; // it came as a zstd frame
  error: string; // not empty: the frame could not be decoded
  index: number;
  total: number;
}

/** brickSizes returns the sizes in bytes brick k may have: padded to the full brick shape, or clipped to its level. */
export function brickSizes(g: Grid, k: Key): number[] {
  const B = g.brick, ls = levelShape(g, k.lod), bpv = g.bytesPerVoxel;
  const full = B.x * B.y * B.z * bpv;
  const clipped = Math.min(B.x, ls.x - k.x * B.x) * Math.min(B.y, ls.y - k.y * B.y) * Math.min(B.z, ls.z - k.z * B.z) * bpv;
  return clipped > 0 && clipped !== full ? [full, clipped] : [full];
}

/**
 * decodeTile returns a tile's voxels: value itself for a raw tile, the
 * decoded frame for a zstd one (after loading the decoder). It throws
 * FrameError for a frame that cannot be decoded to one of the brick's
 * sizes, and for a codec it does not know.
 */
export async function decodeTile(g: Grid, k: Key, codec: Codec, value: Uint8Array): Promise<Uint8Array> {
  if (codec === Codec.ZSTD) {
    await zstdReady();
    return decodeFrame(value, brickSizes(g, k));
  }
  if (codec === Codec.RAW || codec === Codec.UNSPECIFIED) return value;
  throw new FrameError(`unknown codec ${codec}: reload the page to get a viewer that knows it`);
}

/** directMax is the largest request run on the main thread when a worker is there. */
const directMax = 8;

export interface StartMessage {
  type: "start";
  id: number;
  baseUrl: string;
  protocol: string;
  token: string;
  request: StreamRequest;
}

export type WorkerMessage =
  | ({ type: "brick"; id: number } & Brick)
  | { type: "done"; id: number }
  | { type: "ready"; id: number }
  | { type: "error"; id: number; code: Code; message: string };

interface Pending {
  queue: Brick[];
  done: boolean;
  error: ConnectError | null;
  wake: (() => void) | null;
}

export class BrickStreamer {
  private worker: Worker | null = null;
  // Until the worker has loaded, requests run on the main thread: the
  // first bricks need not wait for the worker's script.
  private ready = false;
  private nextId = 1;
  private pending = new Map<number, Pending>();

  constructor(
    private readonly baseUrl: string,
    private readonly protocol: () => Protocol,
    private readonly token: () => string,
    private readonly clients: () => Clients,
  ) {
    try {
      this.worker = new Worker(new URL("stream.js", location.href), { type: "module" });
      this.worker.onmessage = (e: MessageEvent<WorkerMessage>) => this.receive(e.data);
      this.worker.onerror = () => {
        // The worker could not start: fail what it was doing, then stream on
        // the main thread from now on.
        this.worker = null;
        for (const p of this.pending.values()) {
          p.error = new ConnectError("the streaming worker failed to start", Code.Unavailable);
          p.wake?.();
        }
      };
    } catch {
      this.worker = null;
    }
  }

  /**
   * loadZstd starts loading the zstd decoder where bricks are decoded (this
   * thread and the worker), for a volume stored as zstd frames, so that
   * its first bricks need not wait for it.
   */
  loadZstd(): void {
    zstdReady().catch(() => {}); // a failure is reported with the first zstd brick
    this.worker?.postMessage({ type: "zstd" });
  }

  /** usesWorker reports whether bricks are fetched off the main thread. */
  get usesWorker(): boolean {
    return this.worker !== null;
  }

  private receive(m: WorkerMessage): void {
    if (m.type === "ready") {
      this.ready = true;
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.type === "brick") p.queue.push(m);
    else if (m.type === "done") p.done = true;
    else p.error = new ConnectError(m.message, m.code);
    const w = p.wake;
    p.wake = null;
    w?.();
  }

  /** stream yields the bricks of req.keys in their order. Aborting signal ends it with Code.Canceled. */
  async *stream(req: StreamRequest, signal: AbortSignal): AsyncGenerator<Brick> {
    if (!this.worker || !this.ready || req.keys.length <= directMax) {
      yield* this.direct(req, signal);
      return;
    }
    const id = this.nextId++;
    const p: Pending = { queue: [], done: false, error: null, wake: null };
    this.pending.set(id, p);
    const onAbort = () => {
      this.worker?.postMessage({ type: "cancel", id });
      p.error = new ConnectError("canceled", Code.Canceled);
      p.wake?.();
    };
    signal.addEventListener("abort", onAbort);
    const start: StartMessage = { type: "start", id, baseUrl: this.baseUrl, protocol: this.protocol(), token: this.token(), request: req };
    this.worker.postMessage(start);
    try {
      for (;;) {
        if (p.error) throw p.error;
        const b = p.queue.shift();
        if (b) {
          yield b;
          continue;
        }
        if (p.done) return;
        await new Promise<void>((r) => (p.wake = r));
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (!p.done && !p.error) this.worker?.postMessage({ type: "cancel", id });
      this.pending.delete(id);
    }
  }

  private async *direct(req: StreamRequest, signal: AbortSignal): AsyncGenerator<Brick> {
    for await (const b of streamKeys(this.clients(), req, signal)) yield b;
  }
}

const empty = new Uint8Array(0);

/** streamKeys calls StreamBricks for req.keys and yields each response as a Brick. */
export async function* streamKeys(c: Clients, req: StreamRequest, signal: AbortSignal): AsyncGenerator<Brick> {
  const it = c.volumes.streamBricks({ volume: req.volume, keys: req.keys }, { signal });
  for await (const res of it) {
    const t = res.tile;
    if (t && t.key) {
      const k: Key = { lod: t.key.lod, x: t.key.x, y: t.key.y, z: t.key.z };
      let value = t.value, error = "";
      try {
        value = await decodeTile(req.grid, k, t.codec, t.value);
      } catch (e) {
        if (!(e instanceof FrameError)) throw e;
        value = empty;
        error = e.message;
      }
      yield { ...k, offset: t.offset, value, missing: false, wire: t.value.byteLength, zstd: t.codec === Codec.ZSTD, error, index: res.index, total: res.total };
    } else if (res.missing) {
      const k = res.missing;
      yield { lod: k.lod, x: k.x, y: k.y, z: k.z, offset: 0n, value: empty, missing: true, wire: 0, zstd: false, error: "", index: res.index, total: res.total };
    }
  }
}
