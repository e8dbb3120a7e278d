// The viewer: lists volumes, streams a volume's bricks coarse to fine
// (nearest the slices first), shows three linked slices and a 3D view, and
// follows live writes. window.ldm exposes its state for tests and scripts.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BrickStreamer } from "./bricks";
import { Space, type Volume } from "./gen/ldm/v1/types_pb";
import { connect, describe, isCanceled, isNotFound, retriable, type Clients, type Protocol } from "./api";
import { colormapNames, lut, type ColormapName, type Window } from "./colormap";
import { SliceView, type Axis } from "./slice";
import { affineOf, layout, orient, world, type Convention, type Orientation, type Role, type SpaceName } from "./orient";
import { View3D } from "./render3d";
import { bytesPerVoxel, dataTypeName, VolumeData, type Vec3 } from "./volume";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** Stats of the current volume's loading, in ms since page load. */
interface Stats {
  volume: string;
  openedAt: number; // when the volume was chosen
  firstSlices: number; // the coarsest level complete and drawn in the slices
  firstPicture: number; // ... and in the 3D view too
  fullResolution: number; // LOD 0 complete and drawn
  bytes: number; // brick bytes received by StreamBricks
  bricks: number;
  streamMs: number; // time spent streaming (sum over streams)
  liveTiles: number; // tiles received by the live stream
  streams: number; // StreamBricks calls made (restarts re-prioritise)
  firstBrick: number; // the first brick arrived
  applyMs: number; // time spent copying bricks into the volume
  drawMs: number; // time spent drawing slices
  draw3dMs: number; // time spent sampling, uploading and drawing the 3D view
  // The focus and first brick of the latest StreamBricks call.
  lastFocus: Vec3 | null;
  lastFirst: { lod: number; x: number; y: number; z: number } | null;
}

class App {
  private clients!: Clients;
  private streamer!: BrickStreamer;
  private data: VolumeData | null = null;
  private volumes: Volume[] = [];
  private views: Record<Axis, SliceView>;
  // The open volume's LOD 0 voxel-to-world affine, its space and how the views lay it out.
  private affine: number[] = [];
  private space: SpaceName = "";
  private orientation: Orientation | null = null;
  private convention: Convention = "radiological";
  private view3d: View3D;
  private win: Window = { level: 127.5, width: 255 };
  private cmap: ColormapName = "gray";
  private table = lut("gray");
  private focus: Vec3 = { x: 0, y: 0, z: 0 };
  private stream: AbortController | null = null;
  private live: AbortController | null = null;
  private restartTimer = 0;
  // The log offset the live stream of the open volume continues from.
  private followNext: bigint | null = null;
  private dirty = new Set<Axis>();
  private dirty3d = false;
  private frame = 0;
  private lastSlices = 0;
  private last3d = 0;
  private autoWindow = true;
  private first3d = 0;
  private openSeq = 0; // when the 3D view was first drawn with the coarsest level complete
  streaming = false;
  streamError = "";
  progress = { index: 0, total: 0, lod: -1, bytes: 0, start: 0, end: 0 };
  stats: Stats = this.emptyStats("");

  constructor() {
    const host = {
      pick: (p: Vec3) => this.pick(p),
      hover: (p: Vec3 | null) => this.hover(p),
      moved: (axis: Axis, pos: number) => this.moved(axis, pos),
    };
    this.views = {
      z: new SliceView($("view-axial"), "z", "Axial", host),
      y: new SliceView($("view-coronal"), "y", "Coronal", host),
      x: new SliceView($("view-sagittal"), "x", "Sagittal", host),
    };
    this.view3d = new View3D($<HTMLCanvasElement>("canvas-3d"));
    if (!this.view3d.ok) this.message(this.view3d.error, "info");
    this.view3d.setLUT(this.table);

    const params = new URLSearchParams(location.search);
    const proto = $<HTMLSelectElement>("protocol");
    proto.value = params.get("protocol") === "grpc-web" ? "grpc-web" : "connect";
    const token = $<HTMLInputElement>("token");
    token.value = sessionStorage.getItem("ldm-token") ?? "";
    // A share link (ldm share) carries its token as ?share=...: it is sent
    // as the bearer token, like one typed in.
    const share = params.get("share");
    if (share) {
      token.value = share;
      sessionStorage.setItem("ldm-token", share);
    }
    // A token is applied once: the input's own change event on blur must not
    // reload the list again (re-rendering it under a click swallows the click).
    let appliedToken = token.value;
    token.addEventListener("change", () => {
      if (token.value === appliedToken) return;
      appliedToken = token.value;
      sessionStorage.setItem("ldm-token", token.value);
      void this.refresh();
    });
    const mkClients = () => (this.clients = connect(location.origin, proto.value as Protocol, () => token.value));
    mkClients();
    this.streamer = new BrickStreamer(location.origin, () => proto.value as Protocol, () => token.value, () => this.clients);
    proto.addEventListener("change", () => {
      mkClients();
      void this.refresh();
    });
    $("refresh").addEventListener("click", () => void this.refresh());

    const cm = $<HTMLSelectElement>("colormap");
    for (const n of colormapNames) cm.add(new Option(n, n));
    cm.addEventListener("change", () => this.setColormap(cm.value as ColormapName));
    const level = $<HTMLInputElement>("level"), width = $<HTMLInputElement>("width");
    const onWin = () => {
      this.autoWindow = false;
      this.setWindow({ level: Number(level.value), width: Math.max(Number(width.value), 1e-9) });
    };
    level.addEventListener("change", onWin);
    width.addEventListener("change", onWin);
    $("auto").addEventListener("click", () => {
      this.autoWindow = true;
      this.applyAutoWindow();
    });
    $<HTMLInputElement>("crosshair").addEventListener("change", (e) => {
      for (const v of Object.values(this.views)) {
        v.showCross = (e.target as HTMLInputElement).checked;
        v.draw();
      }
    });
    $<HTMLSelectElement>("convention").addEventListener("change", (e) => this.setConvention((e.target as HTMLSelectElement).value as Convention));
    $<HTMLInputElement>("live").addEventListener("change", (e) => {
      // Resume where live mode stopped, so writes made meanwhile appear.
      if ((e.target as HTMLInputElement).checked) void this.follow(this.followNext ?? undefined);
      else this.live?.abort();
    });
    new ResizeObserver(() => this.layout()).observe($("views"));
    this.layout();
    // A volume named in the URL opens at once, while the list loads.
    const v = params.get("volume");
    void this.refresh();
    if (v) void this.open(v);
  }

  private emptyStats(volume: string): Stats {
    return { volume, openedAt: performance.now(), firstSlices: 0, firstPicture: 0, fullResolution: 0, bytes: 0, bricks: 0, streamMs: 0, liveTiles: 0, streams: 0, firstBrick: 0, applyMs: 0, drawMs: 0, draw3dMs: 0, lastFocus: null, lastFirst: null };
  }

  private msgSource = "";

  /** message shows text (empty hides it); source names what set it, so that only its own success clears it. */
  message(text: string, kind: "error" | "info" = "error", source = ""): void {
    this.msgSource = source;
    const m = $("message");
    m.textContent = text;
    m.className = kind;
    m.hidden = text === "";
  }

  /** refresh reloads the volume list. */
  async refresh(): Promise<void> {
    try {
      const res = await this.clients.volumes.listVolumes({});
      this.volumes = res.volumes;
      if (this.msgSource === "list") this.message("");
    } catch (e) {
      this.volumes = [];
      this.message(describe(e, "listing volumes"), "error", "list");
    }
    this.renderList();
  }

  private renderList(): void {
    const ul = $("volumes");
    ul.innerHTML = "";
    if (this.volumes.length === 0) {
      const li = document.createElement("li");
      li.textContent = "No volumes. Try: ldm serve --demo, or ldm import.";
      ul.append(li);
    }
    for (const v of this.volumes) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.volume = v.name;
      b.className = this.data?.name === v.name ? "active" : "";
      const s = v.shape;
      b.textContent = v.name;
      const small = document.createElement("small");
      small.textContent = `${s?.x}×${s?.y}×${s?.z} ${dataTypeName(v.dataType)} · ${v.lodCount} LOD · ${fmtBytes(Number(v.sizeBytes))}`;
      b.append(small);
      b.addEventListener("click", () => void this.open(v.name));
      li.append(b);
      ul.append(li);
    }
  }

  private showMeta(v: Volume): void {
    const dl = $("meta");
    dl.innerHTML = "";
    const s = v.shape, b = v.brickShape;
    const rows: [string, string][] = [
      ["name", v.name],
      ["shape", `${s?.x} × ${s?.y} × ${s?.z}`],
      ["type", dataTypeName(v.dataType)],
      ["bricks", `${b?.x} × ${b?.y} × ${b?.z}`],
      ["LODs", String(v.lodCount)],
      ["spacing", v.spacing.length ? v.spacing.map((x) => +x.toPrecision(6)).join(" × ") : "1 × 1 × 1"],
      ["space", this.space || "unknown"],
      ["transform", fmtAffine(this.affine)],
      ["tiles", String(v.nextOffset)],
      ["size", fmtBytes(Number(v.sizeBytes))],
      ["created", v.createTime ? timestampDate(v.createTime).toISOString() : "-"],
    ];
    for (const [k, val] of Object.entries(v.labels)) rows.push([k, val]);
    for (const [k, val] of rows) {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = val;
      dl.append(dt, dd);
    }
    $("meta-section").hidden = false;
  }

  /** open loads a volume: metadata, then bricks coarse to fine, then live writes. */
  async open(name: string): Promise<void> {
    clearTimeout(this.restartTimer);
    this.stream?.abort();
    this.live?.abort();
    this.stats = this.emptyStats(name);
    this.first3d = 0;
    const seq = ++this.openSeq;
    let v: Volume | undefined;
    try {
      v = (await this.clients.volumes.getVolume({ name })).volume;
    } catch (e) {
      if (seq !== this.openSeq) return;
      this.message(describe(e, `opening ${name}`));
      if (isNotFound(e)) void this.refresh();
      return;
    }
    if (seq !== this.openSeq) return; // another volume was opened meanwhile
    if (!v || !v.shape || bytesPerVoxel(v.dataType) === 0) {
      this.message(`Volume ${name} has a data type this viewer does not know (${v?.dataType}).`);
      return;
    }
    this.message("");
    const d = new VolumeData(v);
    this.data = d;
    this.autoWindow = true;
    this.affine = affineOf(v.transform, v.spacing);
    this.space = spaceName(v.space);
    this.orientation = orient(this.affine, this.space);
    this.showMeta(v);
    this.showOrientation();
    this.renderList();
    for (const view of Object.values(this.views)) {
      view.setVolume(d, layout(this.orientation, roles[view.axis], this.convention));
      view.draw();
    }
    this.focus = this.cursor();
    this.setCross();
    this.markAll();
    void this.load();
    this.followNext = v.nextOffset;
    void this.follow(v.nextOffset);
  }

  /**
   * load streams every level not yet complete, nearest the focus first. A
   * transient failure (server unreachable or restarting) streams again what
   * is missing after 1 s, doubling to 10 s.
   */
  private async load(attempt = 0): Promise<void> {
    const d = this.data;
    if (!d) return;
    clearTimeout(this.restartTimer);
    this.stream?.abort();
    let maxLod = -1;
    for (let l = d.levels.length - 1; l >= 0; l--) {
      if (!d.complete(l)) {
        maxLod = l;
        break;
      }
    }
    if (maxLod < 0) return;
    const ctl = new AbortController();
    this.stream = ctl;
    this.streaming = true;
    this.streamError = "";
    this.stats.streams++;
    const t0 = performance.now();
    this.progress = { index: 0, total: 0, lod: maxLod, bytes: 0, start: t0, end: 0 };
    try {
      this.stats.lastFocus = { ...this.focus };
      this.stats.lastFirst = null;
      const it = this.streamer.stream({ volume: d.name, minLod: 0, maxLod, focus: { ...this.focus } }, ctl.signal);
      for await (const b of it) {
        if (this.data !== d) break;
        if (!this.stats.lastFirst) this.stats.lastFirst = { lod: b.lod, x: b.x, y: b.y, z: b.z };
        this.progress.index = b.index + 1;
        this.progress.total = b.total;
        this.progress.lod = b.lod;
        this.progress.bytes += b.value.byteLength;
        this.stats.bytes += b.value.byteLength;
        this.stats.bricks++;
        if (!this.stats.firstBrick) this.stats.firstBrick = performance.now();
        if (attempt > 0) {
          attempt = 0;
          if (this.msgSource === "stream") this.message("");
        }
        this.applyTile(b.lod, b.x, b.y, b.z, b.offset, b.value);
      }
    } catch (e) {
      if (ctl.signal.aborted || isCanceled(e)) return;
      this.streamError = describe(e, `streaming ${d.name}`);
      this.message(this.streamError, "error", "stream");
      if (isNotFound(e)) void this.refresh();
      else if (retriable(e) && this.stream === ctl) {
        const delay = Math.min(10000, 1000 * 2 ** Math.min(attempt, 4));
        this.restartTimer = window.setTimeout(() => {
          if (this.data === d && this.stream === null) void this.load(attempt + 1);
        }, delay);
      }
    } finally {
      this.progress.end = performance.now();
      this.stats.streamMs += this.progress.end - t0;
      if (this.stream === ctl) {
        this.streaming = false;
        this.stream = null;
        this.dirty3d = true;
        this.schedule(true);
      }
    }
  }

  /**
   * follow tails the volume's log from offset and applies every brick
   * written. A transient failure (server unreachable or restarting) is
   * retried from the last tile seen, after 1 s doubling to 10 s; a deleted
   * volume or a refused token stops it.
   */
  private async follow(offset?: bigint, attempt = 0): Promise<void> {
    const d = this.data;
    if (!d || !$<HTMLInputElement>("live").checked) return;
    this.live?.abort();
    const ctl = new AbortController();
    this.live = ctl;
    const retry = (from: bigint | undefined, e: unknown): void => {
      if (ctl.signal.aborted || this.live !== ctl || this.data !== d) return;
      if (e !== undefined) {
        if (isNotFound(e)) {
          this.message(`Volume ${d.name} was deleted.`);
          void this.refresh();
          return;
        }
        this.message(describe(e, `following ${d.name}`), "error", "follow");
        if (!retriable(e)) return;
      }
      window.setTimeout(() => {
        if (this.live === ctl && !ctl.signal.aborted) void this.follow(from, attempt + 1);
      }, Math.min(10000, 1000 * 2 ** Math.min(attempt, 4)));
    };
    let from = offset;
    if (from === undefined) {
      try {
        from = (await this.clients.volumes.getVolume({ name: d.name })).volume?.nextOffset ?? 0n;
      } catch (e) {
        if (!isCanceled(e)) retry(undefined, e);
        return;
      }
    }
    let next = from;
    try {
      for await (const res of this.clients.tiles.readTileStream({ volume: d.name, offset: from, follow: true }, { signal: ctl.signal })) {
        const t = res.tile;
        if (!t || this.data !== d) continue;
        next = t.offset + 1n;
        this.followNext = next;
        attempt = 0;
        if (this.msgSource === "follow") this.message("");
        if (!t.key) continue;
        this.stats.liveTiles++;
        this.applyTile(t.key.lod, t.key.x, t.key.y, t.key.z, t.offset, t.value);
        this.schedule(true);
      }
    } catch (e) {
      if (ctl.signal.aborted || isCanceled(e)) return;
      retry(next, e);
      return;
    }
    // The server ended the stream (a deleted volume, or a server that is
    // stopping): find out which, and follow again if the volume is there.
    if (ctl.signal.aborted || this.live !== ctl || this.data !== d) return;
    try {
      await this.clients.volumes.getVolume({ name: d.name });
    } catch (e) {
      if (!isCanceled(e)) retry(next, e);
      return;
    }
    retry(next, undefined);
  }

  private applyTile(lod: number, x: number, y: number, z: number, offset: bigint, value: Uint8Array): void {
    const d = this.data!;
    const t0 = performance.now();
    const r = d.apply(lod, x, y, z, offset, value);
    this.stats.applyMs += performance.now() - t0;
    if (!r.applied) return;
    for (const a of ["x", "y", "z"] as Axis[]) {
      const v = this.views[a], dp = v.depth;
      if (v.pos >= r.min[dp] && v.pos < r.max[dp]) this.dirty.add(a);
    }
    this.dirty3d = true;
    if (this.autoWindow && lod === d.levels.length - 1 && d.complete(lod)) this.applyAutoWindow(false);
    this.schedule();
  }

  private markAll(): void {
    this.dirty = new Set<Axis>(["x", "y", "z"]);
    this.dirty3d = true;
    this.schedule(true);
  }

  /** schedule draws dirty views on the next frame; while streaming at most every 80 ms (3D: 500 ms). */
  private schedule(now = false): void {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw(now);
    });
  }

  /**
   * draw renders what changed. While streaming, slices are redrawn at most
   * every 150 ms and the 3D view every second (it is the costliest), except
   * right after the coarsest level completes: that first whole picture is
   * drawn at once, slices first, the 3D view on the next frame.
   */
  private draw(force: boolean): void {
    const d = this.data;
    if (!d) return;
    const t = performance.now();
    const coarsest = d.levels.length - 1;
    const first = !this.stats.firstPicture && d.complete(coarsest);
    const busy = this.streaming && !force && !first;
    // Once the first slices are up, the 3D view goes next, before any more
    // slice updates.
    const only3d = first && this.stats.firstSlices > 0 && this.dirty3d;
    let drewSlices = false;
    // Before the first brick there is nothing to draw but the checkerboard
    // the views already show: leave the time to the stream.
    const empty = d.levels.every((L) => L.count === 0);
    if (empty) this.dirty.clear();
    if (this.dirty.size && !only3d && (!busy || t - this.lastSlices > 150)) {
      for (const a of this.dirty) this.views[a].render(this.win, this.table);
      this.dirty.clear();
      this.lastSlices = t;
      drewSlices = true;
      this.stats.drawMs += performance.now() - t;
      if (first && !this.stats.firstSlices) this.stats.firstSlices = performance.now();
    }
    if (this.dirty3d && !drewSlices && this.view3d.ok && (!busy || t - this.last3d > 1000)) {
      const t3 = performance.now();
      if (d.levels[coarsest].count > 0) {
        this.view3d.setVolume(d, this.win);
        this.view3d.render();
      }
      this.dirty3d = false;
      this.last3d = performance.now();
      this.stats.draw3dMs += this.last3d - t3;
      if (first && !this.first3d) this.first3d = this.last3d;
    }
    const now = performance.now();
    if (first && this.stats.firstSlices && (this.first3d || !this.view3d.ok)) this.stats.firstPicture = Math.max(this.stats.firstSlices, this.first3d);
    if (!this.stats.fullResolution && d.complete(0) && this.dirty.size === 0 && !this.dirty3d) this.stats.fullResolution = now;
    this.showProgress();
    if (this.dirty.size || this.dirty3d) this.schedule(!this.streaming);
  }

  private showProgress(): void {
    const d = this.data;
    if (!d) return;
    const p = this.progress;
    const secs = Math.max(1e-3, ((p.end || performance.now()) - p.start) / 1000);
    const mbs = p.bytes / 1e6 / secs;
    const state = this.streaming ? `refining LOD ${p.lod}` : d.complete(0) ? "full resolution" : this.streamError ? "stopped" : "idle";
    $("progress").textContent =
      `${state}\nbricks ${p.index} / ${p.total}\n${fmtBytes(p.bytes)} at ${mbs.toFixed(1)} MB/s` +
      (this.stats.liveTiles ? `\nlive tiles ${this.stats.liveTiles}` : "");
    $("progress-fill").style.width = `${p.total ? (100 * p.index) / p.total : 0}%`;
    $("levels").textContent = d.levels.map((L, l) => `LOD ${l}: ${L.count}/${d.brickCount(l)}`).join("\n");
  }

  private applyAutoWindow(redraw = true): void {
    const d = this.data;
    if (!d || !(d.max >= d.min)) return;
    const width = Math.max(d.max - d.min, d.type === 5 ? 1e-6 : 1);
    this.setWindow({ level: d.min + width / 2, width }, redraw);
  }

  setWindow(w: Window, redraw = true): void {
    this.win = w;
    $<HTMLInputElement>("level").value = String(+w.level.toPrecision(6));
    $<HTMLInputElement>("width").value = String(+w.width.toPrecision(6));
    if (redraw) this.markAll();
    else {
      this.dirty = new Set<Axis>(["x", "y", "z"]);
      this.dirty3d = true;
    }
  }

  setColormap(name: ColormapName): void {
    this.cmap = name;
    $<HTMLSelectElement>("colormap").value = name;
    this.table = lut(name);
    this.view3d.setLUT(this.table);
    this.markAll();
  }

  /** cursor returns the voxel where the three slices meet. */
  private cursor(): Vec3 {
    const c = { x: 0, y: 0, z: 0 };
    for (const v of Object.values(this.views)) c[v.depth] = v.pos;
    return c;
  }

  private setCross(): void {
    const c = this.cursor();
    for (const v of Object.values(this.views)) v.cross = c;
  }

  /** pick moves all three slices to a voxel. */
  private pick(p: Vec3): void {
    for (const a of ["x", "y", "z"] as Axis[]) {
      const v = this.views[a];
      if (v.pos !== p[v.depth]) {
        v.setPos(p[v.depth], false);
        this.dirty.add(a);
      }
    }
    this.afterMove();
  }

  /** setConvention shows the axial and coronal views in the radiological (patient's left on the right) or neurological convention. */
  setConvention(c: Convention): void {
    this.convention = c;
    $<HTMLSelectElement>("convention").value = c;
    const o = this.orientation;
    if (!this.data || !o) return;
    for (const v of Object.values(this.views)) v.setLayout(layout(o, roles[v.axis], c));
    this.setCross();
    this.markAll();
  }

  /** showOrientation says how the volume is placed: its space, and whether it is oblique or of unknown orientation. */
  private showOrientation(): void {
    const o = this.orientation, note = $("orient-note");
    let text = "";
    if (o && !o.known) {
      text = "Orientation unknown: the volume has no patient space (RAS or LPS), so its axes are shown as stored and the views are not labelled.";
    } else if (o?.oblique) {
      text = `Oblique volume: its axes are up to ${o.obliqueDegrees.toFixed(1)}° off the patient's axes; each view shows the nearest anatomical orientation (not resampled).`;
    }
    note.textContent = text;
    note.hidden = text === "";
  }

  private moved(axis: Axis, _pos: number): void {
    this.dirty.add(axis);
    this.afterMove();
  }

  /** afterMove redraws the crosshair and re-prioritises streaming around the new focus. */
  private afterMove(): void {
    this.setCross();
    for (const v of Object.values(this.views)) v.draw();
    this.schedule(true);
    this.focus = this.cursor();
    // A stream that failed is started again around the new focus too.
    if (!this.streaming && !(this.streamError && this.data && !this.data.complete(0))) return;
    // Browsers cannot send on an open stream: cancel it and start one around
    // the new focus (after a short pause, so dragging does not thrash).
    clearTimeout(this.restartTimer);
    this.restartTimer = window.setTimeout(() => void this.load(), 150);
  }

  private hover(p: Vec3 | null): void {
    const d = this.data;
    if (!d || !p) {
      $("cursor").textContent = "-";
      return;
    }
    const v = d.value(p.x, p.y, p.z);
    const l = d.lodAt(p.x, p.y, p.z);
    const w = world(this.affine, p).map((c) => (Math.abs(c) < 5e-7 ? 0 : c).toFixed(2));
    const sp = this.space === "RAS" || this.space === "LPS" ? ` ${this.space}` : "";
    $("cursor").textContent =
      `voxel (${p.x}, ${p.y}, ${p.z})\nworld (${w.join(", ")}) mm${sp}\nvalue ${l < 0 ? "not loaded" : v}` + (l >= 0 ? `  (LOD ${l})` : "");
  }

  private layout(): void {
    for (const v of Object.values(this.views)) {
      v.resize();
      v.draw();
    }
    this.view3d.resize();
    this.markAll();
  }

  /** api is what window.ldm exposes to tests and scripts. */
  api() {
    return {
      open: (name: string) => this.open(name),
      refresh: () => this.refresh(),
      /** state reports loading progress; idle means nothing is left to stream or draw. */
      state: () => ({
        volume: this.data?.name ?? "",
        streaming: this.streaming,
        complete: this.data ? this.data.levels.map((_, l) => this.data!.complete(l)) : [],
        idle: !!this.data && !this.streaming && this.dirty.size === 0 && !this.dirty3d && this.frame === 0,
        progress: { ...this.progress },
        stats: { ...this.stats },
        window: { ...this.win },
        colormap: this.cmap,
        error: $("message").hidden ? "" : $("message").textContent,
        slices: this.cursor(),
        worker: this.streamer.usesWorker,
      }),
      setWindow: (level: number, width: number) => {
        this.autoWindow = false;
        this.setWindow({ level, width });
      },
      setColormap: (n: ColormapName) => this.setColormap(n),
      setSlices: (p: Vec3) => this.pick(p),
      setCrosshair: (on: boolean) => {
        const c = $<HTMLInputElement>("crosshair");
        c.checked = on;
        c.dispatchEvent(new Event("change"));
      },
      /** setConvention switches the axial and coronal views between "radiological" and "neurological". */
      setConvention: (c: Convention) => this.setConvention(c),
      /**
       * orientation reports how the open volume is shown: its space, whether
       * it is oblique, the note shown, and per view (axial, coronal,
       * sagittal) the voxel axis it slices and the letters on each side.
       */
      orientation: () => ({
        space: this.space,
        convention: this.convention,
        oblique: this.orientation?.oblique ?? false,
        known: this.orientation?.known ?? false,
        note: $("orient-note").hidden ? "" : $("orient-note").textContent,
        views: Object.fromEntries(Object.values(this.views).map((v) => [roles[v.axis], { depth: v.depth, ...v.sideLabels() }])),
      }),
      /** voxelToCanvas gives the device pixel of a voxel in a slice view ("z" axial, "y" coronal, "x" sagittal). */
      voxelToCanvas: (axis: Axis, p: Vec3) => this.views[axis].voxelToCanvas(p),
      /** project3D gives the device pixel where a voxel appears in the 3D view. */
      project3D: (p: Vec3) => (this.data ? this.view3d.project(this.data, p) : null),
      /** pixel reads the RGBA of one device pixel of a view ("x", "y", "z" or "3d"). */
      pixel: (view: Axis | "3d", x: number, y: number) => {
        const c = view === "3d" ? this.view3d.canvas : this.views[view].canvas;
        const tmp = document.createElement("canvas");
        tmp.width = tmp.height = 1;
        const ctx = tmp.getContext("2d")!;
        ctx.drawImage(c, Math.floor(x), Math.floor(y), 1, 1, 0, 0, 1, 1);
        return Array.from(ctx.getImageData(0, 0, 1, 1).data);
      },
      /** rotate3D sets the 3D camera's yaw and pitch (radians) and redraws. */
      rotate3D: (yaw: number, pitch: number) => {
        this.view3d.cam.yaw = yaw;
        this.view3d.cam.pitch = pitch;
        this.view3d.render();
      },
      lut: () => Array.from(this.table),
      value: (p: Vec3) => this.data?.value(p.x, p.y, p.z) ?? NaN,
    };
  }
}

/** roles names the view of each key. */
const roles: Record<Axis, Role> = { z: "axial", y: "coronal", x: "sagittal" };

function spaceName(s: Space): SpaceName {
  return s === Space.RAS ? "RAS" : s === Space.LPS ? "LPS" : s === Space.SCANNER ? "scanner" : "";
}

/** fmtAffine shows the three rows of an affine. */
function fmtAffine(a: number[]): string {
  const f = (v: number) => String(+v.toPrecision(6));
  return [0, 1, 2].map((r) => `[${a.slice(4 * r, 4 * r + 4).map(f).join(" ")}]`).join(" ");
}

function fmtBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 2 : 1)} ${u[i]}`;
}

const app = new App();
(window as unknown as { ldm: ReturnType<App["api"]> }).ldm = app.api();
