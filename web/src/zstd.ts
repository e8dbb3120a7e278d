// Decoding of zstd bricks (Tile.codec CODEC_ZSTD): each is one Zstandard
// frame whose header holds its content size. The decoder is zstddec (the
// reference C decoder compiled to WebAssembly; about ten times faster than
// the pure JavaScript fzstd on a 64^3 uint16 brick). It is a file of its
// own (zstd_wasm.ts, built as dist/zstd_wasm.*.js), imported by zstdReady
// on first use: the page and the streaming worker load it only for a zstd
// volume, and the viewer's bundles do not carry it. decodeFrame reads the
// content size from the header and refuses a frame that does not claim
// one of the sizes the brick may have before anything is allocated, then
// refuses one that does not decode to exactly that size (damaged, wrong
// checksum, truncated): a bad frame is an error, never voxels. No DOM:
// unit-tested in node.

import type { Decode } from "./zstd_wasm";

/** FrameError is a zstd brick that cannot be decoded; its message says why. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

const magic = 0xfd2fb528;

/**
 * contentSize returns the content size a zstd frame's header declares. It
 * throws FrameError when frame is not a zstd frame or declares none.
 */
export function contentSize(frame: Uint8Array): number {
  if (frame.byteLength < 6) throw new FrameError(`the zstd frame is ${frame.byteLength} bytes, too short for a frame header`);
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (dv.getUint32(0, true) !== magic) throw new FrameError("the brick is not a zstd frame (wrong magic number)");
  const fhd = frame[4];
  const fcsFlag = fhd >> 6, single = (fhd >> 5) & 1, dictFlag = fhd & 3;
  if ((fhd >> 3) & 1) throw new FrameError("the zstd frame header sets a reserved bit");
  let p = 5 + (single ? 0 : 1) + [0, 1, 2, 4][dictFlag];
  const fcsBytes = fcsFlag === 0 ? (single ? 1 : 0) : [0, 2, 4, 8][fcsFlag];
  if (fcsBytes === 0) throw new FrameError("the zstd frame does not declare its content size; write frames with the content size in their header");
  if (frame.byteLength < p + fcsBytes) throw new FrameError("the zstd frame header is truncated");
  switch (fcsBytes) {
    case 1:
      return frame[p];
    case 2:
      return dv.getUint16(p, true) + 256;
    case 4:
      return dv.getUint32(p, true);
  }
  const lo = dv.getUint32(p, true), hi = dv.getUint32(p + 4, true);
  return hi * 2 ** 32 + lo;
}

let ready: Promise<void> | null = null;
let decode: Decode | null = null;

/**
 * DecoderLoadError is a decoder that could not load (the network, a page
 * older than the server's files, no WebAssembly). It is not a FrameError:
 * the bricks are fine, so the stream that needed them fails and is retried
 * (a later zstdReady imports again), and they are never marked damaged.
 */
export class DecoderLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DecoderLoadError";
  }
}

type DecoderModule = { load(): Promise<Decode> };

/**
 * zstdReady loads the decoder (once per page or worker: it imports
 * zstd_wasm.js, a file of its own, and compiles it); decodeFrame may be
 * called when it has resolved. It rejects with DecoderLoadError when the
 * decoder cannot load. importer replaces the import (tests).
 */
export function zstdReady(importer: () => Promise<DecoderModule> = () => import("./zstd_wasm.js")): Promise<void> {
  if (!ready) {
    // The build keeps this import as it is (the file is built beside the
    // bundles, see build.mjs), so the path is relative to app.js and
    // stream.js in the browser.
    // The marks time the load in the page's (or the worker's) timeline.
    performance.mark("zstd-decoder-load");
    ready = importer()
      .then((m) => {
        performance.mark("zstd-decoder-imported");
        return m.load();
      })
      .then(
        (d) => {
          performance.mark("zstd-decoder-ready");
          decode = d;
        },
        (e: unknown) => {
          ready = null; // a later call tries again
          throw new DecoderLoadError(`the zstd decoder could not load (${e instanceof Error ? e.message : String(e)}): reload the page; this browser must allow WebAssembly`);
        },
      );
  }
  return ready;
}

/**
 * decodeFrame decodes one zstd frame that must hold exactly one of sizes
 * bytes (a brick padded to the full brick shape, or clipped to its level)
 * and returns the bytes in a buffer of their own (transferable). It throws
 * FrameError for a frame that claims another size, or is damaged. Call
 * zstdReady first.
 */
export function decodeFrame(frame: Uint8Array, sizes: readonly number[]): Uint8Array {
  if (!decode) throw new FrameError("the zstd decoder is not loaded yet (await zstdReady())");
  const n = contentSize(frame);
  if (!sizes.includes(n)) {
    throw new FrameError(`the zstd frame declares ${n} bytes, but the brick has ${sizes.join(" or ")}: the stored brick does not belong to this volume's shape`);
  }
  // zstddec returns an empty array when the frame does not decode (its
  // error codes are negative sizes), and fewer bytes for a frame that ends
  // early.
  const out = n === 0 ? new Uint8Array(0) : decode(frame, n);
  if (out.byteLength !== n) {
    throw new FrameError(`the zstd frame is damaged: it does not decode to the ${n} bytes it declares (corrupt data, wrong checksum or truncated)`);
  }
  return out;
}
