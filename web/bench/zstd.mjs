// Measures zstd decoders on one brick: MB/s of voxels decoded (and of
// frames read) for zstddec (the viewer's) and, when installed, fzstd.
//
//	go run ./web/test/fixtures/gen.go -n 64 -out /tmp/zbench   # a 64^3 uint16 CT-like brick
//	cd web && npm install --no-save fzstd@0.1.1                # optional, to compare
//	node bench/zstd.mjs /tmp/zbench/brick64_u16.zst /tmp/zbench/brick64_u16.raw
import { readFileSync } from "node:fs";
import { ZSTDDecoder } from "zstddec";

const [framePath, rawPath, secs = "2"] = process.argv.slice(2);
if (!framePath || !rawPath) {
  console.error("usage: node bench/zstd.mjs FRAME.zst RAW [seconds]");
  process.exit(2);
}
const frame = new Uint8Array(readFileSync(framePath));
const raw = new Uint8Array(readFileSync(rawPath));
const same = (a) => a.length === raw.length && a.every((v, i) => v === raw[i]);

const z = new ZSTDDecoder();
await z.init();
const decoders = { zstddec: () => z.decode(frame, raw.length) };
try {
  const { decompress } = await import("fzstd");
  decoders.fzstd = () => decompress(frame, new Uint8Array(raw.length));
} catch {
  console.log("fzstd is not installed: measuring zstddec only");
}
console.log(`brick: ${raw.length} bytes, frame ${frame.length} (${(raw.length / frame.length).toFixed(2)}x)`);
for (const [name, decode] of Object.entries(decoders)) {
  if (!same(decode())) throw new Error(`${name} decodes the frame wrongly`);
  for (let i = 0; i < 20; i++) decode();
  const t0 = performance.now();
  let n = 0;
  while (performance.now() - t0 < Number(secs) * 1000) {
    decode();
    n++;
  }
  const s = (performance.now() - t0) / 1000;
  console.log(`${name}: ${((n * raw.length) / 1e6 / s).toFixed(0)} MB/s of voxels, ${((n * frame.length) / 1e6 / s).toFixed(0)} MB/s of frames, ${((s * 1000) / n).toFixed(2)} ms a brick`);
}
