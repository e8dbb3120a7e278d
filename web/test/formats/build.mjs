// Bundles Neuroglancer (the npm package) into dist/ for the browser tests:
// dist/index.html loads dist/lib/main.js, which starts the chunk worker
// dist/lib/chunk_worker.bundle.js and the decoders in
// dist/async_computation.bundle.js (the layout Neuroglancer's
// `new URL(..., import.meta.url)` references expect).
import { build } from "esbuild";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";

const here = new URL(".", import.meta.url).pathname;
const lib = join(here, "node_modules", "neuroglancer", "lib");
const out = process.argv[2] ?? join(here, "dist"); // usage: node build.mjs [OUTDIR]
const require = createRequire(import.meta.url);

// "x.svg?raw" imports are the SVG's text. Neuroglancer pins its icon set
// (ikonate) to a GitHub commit, which npm cannot fetch here; package.json
// overrides it with ikonate's registry release, and icons that release
// lacks become an empty SVG (they only decorate buttons).
const rawSvg = {
  name: "raw-svg",
  setup(b) {
    b.onResolve({ filter: /\.svg\?raw$/ }, (args) => {
      const spec = args.path.slice(0, -"?raw".length);
      try {
        const path = spec.startsWith(".") ? join(args.resolveDir, spec) : require.resolve(spec, { paths: [args.resolveDir] });
        return { path, namespace: "raw-svg" };
      } catch {
        return { path: spec, namespace: "blank-svg" };
      }
    });
    b.onLoad({ filter: /.*/, namespace: "blank-svg" }, () => ({
      contents: '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"></svg>',
      loader: "text",
    }));
    b.onLoad({ filter: /.*/, namespace: "raw-svg" }, (args) => ({
      contents: readFileSync(args.path, "utf8"),
      loader: "text",
    }));
  },
};

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  logLevel: "warning",
  minify: false,
  plugins: [rawSvg],
  loader: { ".wasm": "file", ".html": "file" },
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
};
mkdirSync(join(out, "lib"), { recursive: true });
await build({ ...common, entryPoints: { main: join(lib, "main.bundle.js") }, outdir: join(out, "lib") });
await build({ ...common, entryPoints: { "chunk_worker.bundle": join(lib, "chunk_worker.bundle.js") }, outdir: join(out, "lib") });
await build({ ...common, entryPoints: { "async_computation.bundle": join(lib, "async_computation.bundle.js") }, outdir: out });
writeFileSync(
  join(out, "index.html"),
  `<!doctype html>
<html><head><meta charset="utf-8"><title>neuroglancer test</title>
<link rel="stylesheet" href="lib/main.css">
<style>html,body{margin:0;height:100%;overflow:hidden}#neuroglancer-container{width:100%;height:100%}</style>
</head><body><script type="module" src="lib/main.js"></script></body></html>
`,
);
console.log("built", out);
