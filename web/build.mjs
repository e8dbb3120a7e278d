// Builds the viewer into dist/: app.js (esbuild bundle of src/main.ts, with
// the generated client and its runtime), stream.js (the streaming worker),
// zstd_wasm.HASH.js (the zstd decoder, src/zstd_wasm.ts, which app.js and
// stream.js import only when they meet a zstd volume), index.html and
// style.css. HASH is the first 24 hex digits of the SHA-256 of the
// decoder file, so its content never changes under its name and the
// server lets browsers keep it (web.Handler). The output is deterministic,
// so CI rebuilds it and fails on any difference from the committed bundle
// (make check-bundle).
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFile, mkdir, rm, writeFile } from "node:fs/promises";

const dist = new URL("./dist/", import.meta.url);
const src = (f) => new URL(`./src/${f}`, import.meta.url).pathname;
const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
};
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const dec = await build({ ...common, entryPoints: [src("zstd_wasm.ts")], write: false, outdir: dist.pathname });
const code = dec.outputFiles[0].contents;
const decoder = `zstd_wasm.${createHash("sha256").update(code).digest("hex").slice(0, 24)}.js`;
await writeFile(new URL(decoder, dist), code);

// zstd.ts imports "./zstd_wasm.js": keep that import in the bundles, under
// the decoder file's name (a path relative to app.js and stream.js).
const decoderFile = {
  name: "zstd-decoder-file",
  setup(b) {
    b.onResolve({ filter: /^\.\/zstd_wasm\.js$/ }, () => ({ path: `./${decoder}`, external: true }));
  },
};
await build({
  ...common,
  entryPoints: { app: src("main.ts"), stream: src("stream_worker.ts") },
  outdir: dist.pathname,
  plugins: [decoderFile],
});
for (const f of ["index.html", "style.css"]) {
  await copyFile(new URL(`./src/${f}`, import.meta.url), new URL(f, dist));
}
