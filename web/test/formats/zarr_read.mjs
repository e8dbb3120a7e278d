// Reads every level of OME-Zarr groups served by go-ldm with zarrita, a
// Zarr client go-ldm did not write, and writes each level's voxels (C
// order, little-endian) to OUTDIR/VOLUME.VERSION.LOD.bin.
//
// usage: node zarr_read.mjs BASE_URL OUTDIR VERSION VOLUME... [--header "Authorization: Bearer T"]
//   VERSION is v2 (Zarr v2, OME-NGFF 0.4) or v3 (Zarr v3, OME-NGFF 0.5).
// It prints one JSON line per level: {volume, version, lod, shape, dtype, transforms}.
import * as zarr from "zarrita";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const args = process.argv.slice(2);
let headers = {};
const hi = args.indexOf("--header");
if (hi >= 0) {
  const [k, ...v] = args[hi + 1].split(":");
  headers[k.trim()] = v.join(":").trim();
  args.splice(hi, 2);
}
const [base, outdir, version, ...volumes] = args;
if (!base || !outdir || (version !== "v2" && version !== "v3") || volumes.length === 0) {
  console.error("usage: node zarr_read.mjs BASE_URL OUTDIR v2|v3 VOLUME...");
  process.exit(2);
}
const open = version === "v2" ? zarr.open.v2 : zarr.open.v3;

for (const volume of volumes) {
  const store = new zarr.FetchStore(`${base}/${version === "v2" ? "zarr" : "zarr3"}/${volume}/`, { overrides: { headers } });
  const root = zarr.root(store);
  const group = await open(root, { kind: "group" });
  const ms = version === "v2" ? group.attrs.multiscales : group.attrs.ome.multiscales;
  if (version === "v3" && group.attrs.ome.version !== "0.5") throw new Error(`ome.version ${group.attrs.ome.version}`);
  if (version === "v2" && ms[0].version !== "0.4") throw new Error(`multiscales version ${ms[0].version}`);
  const axes = ms[0].axes.map((a) => `${a.name}:${a.type}:${a.unit}`).join(",");
  for (const ds of ms[0].datasets) {
    const arr = await open(root.resolve(ds.path), { kind: "array" });
    const { data, shape } = await zarr.get(arr);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    writeFileSync(join(outdir, `${volume}.${version}.${ds.path}.bin`), bytes);
    console.log(JSON.stringify({ volume, version, lod: ds.path, shape, dtype: arr.dtype, chunks: arr.chunks, axes, transforms: ds.coordinateTransformations }));
  }
}
