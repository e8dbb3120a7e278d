// The zstd decoder proper: zstddec (the reference C decoder compiled to
// WebAssembly, inlined as base64, about 75 KB). The build emits it as a
// file of its own (dist/zstd_wasm.*.js) that zstd.ts imports on demand,
// so a page or worker that never meets a zstd volume never loads it. It
// does no checking: zstd.ts checks each frame before and after decoding.
//
// Compiling starts when the module is evaluated: the page of a zstd volume
// named in its URL runs this file as an async module script of its own
// (web.HandlerWith), so the decoder compiles while app.js loads and the
// first bricks are on their way, not after.

import { ZSTDDecoder } from "zstddec";

/** Decode returns the n bytes frame decodes to: fewer, or none, when the frame is damaged. */
export type Decode = (frame: Uint8Array, n: number) => Uint8Array;

let compiled: Promise<Decode> | null = null;

/** load compiles the decoder (once per thread) and returns its decode function. */
export function load(): Promise<Decode> {
  if (!compiled) {
    const d = new ZSTDDecoder();
    compiled = d.init().then(
      () => (frame, n) => d.decode(frame, n),
      (e: unknown) => {
        compiled = null; // a later call tries again
        throw e;
      },
    );
  }
  return compiled;
}

load().catch(() => {}); // a failure is reported by the load that needs it
