import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { brickSizes, decodeTile } from "../src/bricks";
import { Codec } from "../src/gen/ldm/v1/types_pb";
import { contentSize, DecoderLoadError, decodeFrame, FrameError, zstdReady } from "../src/zstd";

// The fixture is a 16^3 uint16 brick of the procedural phantom with noise,
// encoded by the server's encoder (test/fixtures/gen.go): npm test runs in web/.
const frame = new Uint8Array(readFileSync("test/fixtures/brick16_u16.zst"));
const raw = new Uint8Array(readFileSync("test/fixtures/brick16_u16.raw"));
const grid = { shape: { x: 40, y: 16, z: 16 }, brick: { x: 16, y: 16, z: 16 }, levels: 2, bytesPerVoxel: 2 };

// First in the file: the decoder is not loaded yet.
test("a decoder that cannot load is a DecoderLoadError (the stream is retried), and a later call loads it", async () => {
  await assert.rejects(
    zstdReady(() => Promise.reject(new TypeError("Failed to fetch dynamically imported module"))),
    (e: unknown) => e instanceof DecoderLoadError && !(e instanceof FrameError) && /reload the page/.test((e as Error).message),
  );
  await zstdReady();
  assert.deepEqual(decodeFrame(frame, [raw.byteLength]), raw);
});

test("a frame of the server's encoder decodes to the brick's voxels", async () => {
  await zstdReady();
  assert.ok(frame.byteLength < raw.byteLength, "the fixture is compressed");
  assert.equal(contentSize(frame), raw.byteLength);
  const out = decodeFrame(frame, [raw.byteLength]);
  assert.deepEqual(out, raw);
  assert.equal(out.byteOffset, 0);
  assert.equal(out.buffer.byteLength, raw.byteLength, "the voxels have a buffer of their own (transferable)");
  // Through the tile path, and a raw tile as it is.
  assert.deepEqual(await decodeTile(grid, { lod: 0, x: 0, y: 0, z: 0 }, Codec.ZSTD, frame), raw);
  assert.equal(await decodeTile(grid, { lod: 0, x: 0, y: 0, z: 0 }, Codec.RAW, raw), raw);
});

test("a damaged frame is an error, never voxels", async () => {
  await zstdReady();
  const bad = (f: Uint8Array, want: RegExp) => assert.throws(() => decodeFrame(f, [raw.byteLength]), (e: unknown) => e instanceof FrameError && want.test(e.message));
  const mid = frame.slice();
  for (let i = 100; i < 140; i++) mid[i] ^= 0x5a;
  bad(mid, /damaged/);
  const sum = frame.slice();
  sum[sum.length - 1] ^= 0xff; // the content checksum
  bad(sum, /damaged/);
  bad(frame.slice(0, frame.length - 10), /damaged/);
  bad(frame.slice(0, 5), /too short/);
  bad(raw, /not a zstd frame/);
  // A header without a content size (single segment off, FCS flag 0).
  const nofcs = frame.slice();
  nofcs[4] &= 0x1f;
  bad(nofcs, /does not declare its content size/);
  await assert.rejects(decodeTile(grid, { lod: 0, x: 0, y: 0, z: 0 }, 7 as Codec, raw), /unknown codec 7/);
});

test("a frame of another size than the brick's is refused before decoding", async () => {
  await zstdReady();
  assert.throws(() => decodeFrame(frame, [4096, 2048]), (e: unknown) => e instanceof FrameError && /declares 8192 bytes, but the brick has 4096 or 2048/.test(e.message));
  // A volume of 8^3 bricks cannot hold it.
  const small = { ...grid, brick: { x: 8, y: 8, z: 8 } };
  await assert.rejects(decodeTile(small, { lod: 0, x: 0, y: 0, z: 0 }, Codec.ZSTD, frame), /declares 8192 bytes, but the brick has 1024/);
  // A header claiming a huge size is refused without allocating it.
  const huge = frame.slice();
  huge[4] = (huge[4] & 0x3f) | 0xc0; // an 8-byte content size field...
  assert.throws(() => decodeFrame(huge, [raw.byteLength]), FrameError);
});

test("the header's content size is read in each of its widths", () => {
  const h = (fhd: number, ...rest: number[]) => new Uint8Array([0x28, 0xb5, 0x2f, 0xfd, fhd, ...rest, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(contentSize(h(0x20, 200)), 200); // single segment, 1 byte
  assert.equal(contentSize(h(0x40, 0x70, 0x00, 0x01)), 256 + 256); // window byte, 2 bytes + 256
  assert.equal(contentSize(h(0x80, 0x70, 0x00, 0x00, 0x08, 0x00)), 512 * 1024); // 4 bytes
  assert.equal(contentSize(h(0xc0, 0x70, 0, 0, 0, 0, 1, 0, 0, 0)), 2 ** 32); // 8 bytes
  assert.equal(contentSize(h(0x21, 9, 100)), 100); // a 1-byte dictionary id first
});

test("an edge brick may be padded or clipped", () => {
  assert.deepEqual(brickSizes(grid, { lod: 0, x: 0, y: 0, z: 0 }), [8192]);
  assert.deepEqual(brickSizes(grid, { lod: 0, x: 2, y: 0, z: 0 }), [8192, 8 * 16 * 16 * 2]);
  assert.deepEqual(brickSizes(grid, { lod: 1, x: 1, y: 0, z: 0 }), [8192, 4 * 8 * 8 * 2]);
});
