// The zstd decoder proper: zstddec (the reference C decoder compiled to
// WebAssembly, inlined as base64, about 75 KB). The build emits it as a
// file of its own (dist/zstd_wasm.*.js) that zstd.ts imports on demand,
// so a page or worker that never meets a zstd volume never loads it. It
// does no checking: zstd.ts checks each frame before and after decoding.

import { ZSTDDecoder } from "zstddec";

/** Decode returns the n bytes frame decodes to: fewer, or none, when the frame is damaged. */
export type Decode = (frame: Uint8Array, n: number) => Uint8Array;

/** load compiles the decoder (once per thread) and returns its decode function. */
export async function load(): Promise<Decode> {
  const d = new ZSTDDecoder();
  await d.init();
  return (frame, n) => d.decode(frame, n);
}
