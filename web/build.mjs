// Builds the viewer into dist/: app.js (esbuild bundle of src/main.ts, with
// the generated client and its runtime), stream.js (the streaming worker),
// index.html and style.css. The
// output is deterministic, so CI rebuilds it and fails on any difference
// from the committed bundle (make check-bundle).
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const dist = new URL("./dist/", import.meta.url);
await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await build({
  entryPoints: {
    app: new URL("./src/main.ts", import.meta.url).pathname,
    stream: new URL("./src/stream_worker.ts", import.meta.url).pathname,
  },
  outdir: dist.pathname,
  bundle: true,
  format: "esm",
  target: "es2022",
  platform: "browser",
  minify: true,
  sourcemap: false,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
for (const f of ["index.html", "style.css"]) {
  await copyFile(new URL(`./src/${f}`, import.meta.url), new URL(f, dist));
}
