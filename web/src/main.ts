// The viewer's page: wires the DOM (volume list, display controls, the
// three slice views and the 3D view) to the open volume's Session, which
// owns its requests, brick cache and live updates (session.ts), and
// schedules drawing. window.ldm exposes its state for tests and scripts.

import { fromBinary } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { BrickStreamer } from "./bricks";
import { Space, type Volume } from "./gen/ldm/v1/types_pb";
import { GetVolumeResponseSchema, type GetVolumeResponse } from "./gen/ldm/v1/volume_pb";
import { connect, describe, isNotFound, type Clients, type Protocol } from "./api";
import { colormapNames, lut, type ColormapName, type Window } from "./colormap";
import { SliceView, type Axis } from "./slice";
import { affineOf, layout, orient, world, type Convention, type Orientation, type Role, type SpaceName } from "./orient";
import { View3D } from "./render3d";
import { defaultBudget, Session, type SliceWant } from "./session";
import { drawLevel, levelBricks, keyId, type Key, type Vec3 } from "./selection";
import { bytesPerVoxel, dataTypeName } from "./volume";

/** scriptAt is when the page's script started (ms since navigation). */
const scriptAt = performance.now();

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

class App {
  private clients!: Clients;
  private streamer!: BrickStreamer;
  private session: Session | null = null;
  private volumes: Volume[] = [];
  private views!: Record<Axis, SliceView>;
  // The open volume's LOD 0 voxel-to-world affine, its space and how the views lay it out.
  private affine: number[] = [];
  private space: SpaceName = "";
  private orientation: Orientation | null = null;
  private convention: Convention = "radiological";
  private view3d!: View3D;
  private win: Window = { level: 127.5, width: 255 };
  private cmap: ColormapName = "gray";
  private table = lut("gray");
  private budget = defaultBudget;
  private dirty = new Set<Axis>();
  private dirty3d = new Map<string, Key>(); // 3D bricks to fill again
  private render3d = false; // the 3D view needs drawing
  private replan = false; // the views changed: plan the bricks again
  private frame = 0;
  private lastSlices = 0;
  private sliceMs = 0; // the last slice drawing took
  private last3d = 0;
  private autoWindow = true;
  private filled3d = new Map<string, number>(); // level each 3D brick was filled from
  // The level the 3D texture holds: the coarsest until every brick of the
  // session's 3D level has arrived (a small texture fills and draws fast).
  private tex3d = 0;
  private openSeq = 0;
  private startLive: (() => void) | null = null;
  // The metadata of the volume named in the URL, asked for at start.
  private early: { name: string; res: Promise<GetVolumeResponse> } | null = null;
  // The session of the volume named in the URL when the page carries its
  // metadata: made, and its coarsest level asked for, before the views are.
  private primed: Session | null = null;
  // Run after the next frame is drawn (a session's finer streams).
  private afterDraw: (() => void)[] = [];

  constructor() {
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
    // A volume named in the URL is asked for before anything else is set
    // up (the views, the WebGL context): its metadata gates its first bricks.
    const named = params.get("volume");
    // The server embeds its metadata in the page when it can: no round trip.
    const embedded = named ? embeddedVolume(named) : null;
    if (named) this.early = { name: named, res: embedded ? Promise.resolve(embedded) : this.clients.volumes.getVolume({ name: named }) };
    // The cache budget in MiB: the page's field, first from ?budget=.
    const mib = Number(params.get("budget") ?? sessionStorage.getItem("ldm-budget") ?? defaultBudget / 2 ** 20);
    this.budget = Math.max(1, Number.isFinite(mib) ? mib : defaultBudget / 2 ** 20) * 2 ** 20;
    // With the metadata at hand, the coarsest level (the first picture) is
    // asked for now: setting up the views and the WebGL context takes tens
    // of ms that its round trip overlaps.
    const ev = embedded?.volume;
    if (ev && ev.shape && bytesPerVoxel(ev.dataType) !== 0) {
      this.primed = this.newSession(ev, performance.now());
      this.primed.prime();
    }
  }

  /**
   * init sets up the views, the WebGL context and the controls, then opens
   * the volume named in the URL. It runs after the constructor has yielded
   * once, so that the primed session's first request is on the wire while
   * it works.
   */
  init(): void {
    const params = new URLSearchParams(location.search);
    const host = {
      pick: (p: Vec3) => this.pick(p),
      hover: (p: Vec3 | null) => this.hover(p),
      moved: (axis: Axis, pos: number) => this.moved(axis, pos),
      viewed: (axis: Axis) => this.viewed(axis),
    };
    this.views = {
      z: new SliceView($("view-axial"), "z", "Axial", host),
      y: new SliceView($("view-coronal"), "y", "Coronal", host),
      x: new SliceView($("view-sagittal"), "x", "Sagittal", host),
    };
    this.view3d = new View3D($<HTMLCanvasElement>("canvas-3d"));
    if (!this.view3d.ok) this.message(this.view3d.error, "info");
    this.view3d.setLUT(this.table);


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
      if ((e.target as HTMLInputElement).checked) void this.session?.follow();
      else this.session?.unfollow();
    });
    const budget = $<HTMLInputElement>("budget");
    budget.value = String(this.budget / 2 ** 20);
    budget.addEventListener("change", () => {
      const n = Number(budget.value);
      if (!(n >= 1)) {
        budget.value = String(this.budget / 2 ** 20);
        return;
      }
      sessionStorage.setItem("ldm-budget", String(n));
      this.setBudget(n * 2 ** 20);
    });
    new ResizeObserver(() => this.layout()).observe($("views"));
    this.layout();
    // A volume named in the URL opens at once; the list loads after its
    // first requests have started.
    const v = params.get("volume");
    if (v) void this.open(v).then(() => this.refresh());
    else void this.refresh();
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
      b.className = this.session?.name === v.name ? "active" : "";
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

  /** open loads a volume: its metadata, then a session that streams what the views show, and live writes. */
  async open(name: string): Promise<void> {
    this.session?.close();
    this.session = null;
    const seq = ++this.openSeq;
    const openedAt = performance.now();
    // The session made at start for this volume, its first bricks on their way.
    let primed = this.primed;
    this.primed = null;
    if (primed && primed.name !== name) {
      primed.close();
      primed = null;
    }
    let v: Volume | undefined;
    try {
      const early = this.early;
      this.early = null;
      v = (await (early?.name === name ? early.res : this.clients.volumes.getVolume({ name }))).volume;
    } catch (e) {
      primed?.close();
      if (seq !== this.openSeq) return;
      this.message(describe(e, `opening ${name}`));
      if (isNotFound(e)) void this.refresh();
      return;
    }
    if (seq !== this.openSeq) {
      primed?.close();
      return; // another volume was opened meanwhile
    }
    if (!v || !v.shape || bytesPerVoxel(v.dataType) === 0) {
      this.message(`Volume ${name} has a data type this viewer does not know (${v?.dataType}).`);
      return;
    }
    this.message("");
    const s = primed ?? this.newSession(v, openedAt);
    this.session = s;
    this.autoWindow = true;
    this.affine = affineOf(v.transform, v.spacing);
    this.space = spaceName(v.space);
    this.orientation = orient(this.affine, this.space);
    for (const view of Object.values(this.views)) {
      view.setVolume(s, layout(this.orientation, roles[view.axis], this.convention));
    }
    this.setCross();
    this.plan();
    this.reset3d(s.coarsest);
    this.markAll();
    // Live updates start once the first picture is up (or after 2 s): the
    // browser has few connections per server and the first bricks come first.
    const live = () => {
      if (this.session === s && !s.following && $<HTMLInputElement>("live").checked) void s.follow();
    };
    this.startLive = live;
    window.setTimeout(live, 2000);
    this.showMeta(v);
    this.showOrientation();
    this.renderList();
  }

  /** newSession makes the session of volume v, reporting to this page while it is the open one. */
  private newSession(v: Volume, openedAt: number): Session {
    const s: Session = new Session(v, this.clients, this.streamer, this.budget, {
      changed: (k, box) => this.changed(s, k, box),
      message: (text, source) => {
        if (this.session !== s) return;
        if (text) this.message(text, "error", source);
        else if (this.msgSource === source) this.message("");
      },
      gone: () => void this.refresh(),
      // The finer streams start after the frame that draws the coarse
      // cover (or after 250 ms: a hidden page draws no frames).
      coverIn: (go) => {
        this.afterDraw.push(go);
        this.schedule();
        window.setTimeout(go, 250);
      },
    });
    s.stats.openedAt = openedAt;
    s.stats.scriptAt = scriptAt;
    return s;
  }

  /** wants returns what each slice view shows. */
  private wants(): SliceWant[] {
    return Object.values(this.views).map((v) => v.want()).filter((w): w is SliceWant => w !== null);
  }

  /** plan tells the session what the views show and takes the levels it chose. */
  private plan(): void {
    const s = this.session;
    if (!s) return;
    this.replan = false;
    const l3 = s.level3d;
    s.setViews(this.wants());
    for (const v of Object.values(this.views)) {
      const l = s.sliceLevels[v.axis] ?? s.coarsest;
      if (v.level !== l) {
        v.level = l;
        this.dirty.add(v.axis);
      }
    }
    if (s.level3d !== l3) this.reset3d(s.coarsest);
  }

  /** reset3d allocates the 3D texture at level lod and fills it from what is held. */
  private reset3d(lod: number): void {
    const s = this.session;
    if (!s || !this.view3d.ok) return;
    this.tex3d = lod;
    this.view3d.setVolume(s, lod);
    this.filled3d.clear();
    this.dirty3d.clear();
    for (const k of levelBricks(s.grid, lod)) this.dirty3d.set(keyId(k), k);
    this.render3d = true;
  }

  /** changed marks the views that show a brick that arrived. */
  private changed(s: Session, k: Key, box: { min: Vec3; max: Vec3 }): void {
    if (this.session !== s || !this.views) return;
    for (const a of ["x", "y", "z"] as Axis[]) {
      const v = this.views[a], dp = v.depth;
      if (k.lod >= v.level && v.pos >= box.min[dp] && v.pos < box.max[dp]) this.dirty.add(a);
    }
    if (this.view3d.ok && k.lod >= this.tex3d) {
      if (k.lod === this.tex3d) this.dirty3d.set(keyId(k), k);
      else {
        // A coarser brick stands in for the texture's bricks it covers that are not held better.
        for (const b of levelBricks(s.grid, this.tex3d)) {
          const sh = k.lod - this.tex3d;
          if (b.x >> sh !== k.x || b.y >> sh !== k.y || b.z >> sh !== k.z) continue;
          const id = keyId(b);
          const got = this.filled3d.get(id);
          if (got === undefined || got < 0 || got >= k.lod) this.dirty3d.set(id, b);
        }
      }
    }
    if (this.autoWindow && k.lod === s.coarsest && s.coarsestComplete()) this.applyAutoWindow(false);
    this.schedule();
  }

  private markAll(): void {
    this.dirty = new Set<Axis>(["x", "y", "z"]);
    const s = this.session;
    if (s) for (const k of levelBricks(s.grid, this.tex3d)) this.dirty3d.set(keyId(k), k);
    this.render3d = true;
    this.schedule(true);
  }

  /** schedule draws dirty views on the next frame. */
  private schedule(now = false): void {
    void now;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      try {
        this.draw();
      } finally {
        const after = this.afterDraw;
        this.afterDraw = [];
        for (const go of after) go();
      }
    });
  }

  /**
   * draw plans again if the views moved, then renders what changed. While
   * what the views need is streaming, slices are redrawn at most every
   * 100 ms (or four times as long as their last drawing took, so that
   * drawing keeps to a quarter of the main thread) and the 3D view every
   * 500 ms, except for the first picture, drawn as soon as the slices can
   * be covered: the slices and the 3D view in the same frame. Once it has
   * all arrived (neighbours may still stream) everything is drawn at once.
   */
  private draw(): void {
    const s = this.session;
    if (!s) return;
    if (this.replan) this.plan();
    const t = performance.now();
    const st = s.stats;
    // Before the first brick there is nothing to draw but what the views
    // already show: leave the main thread to the streams.
    if (st.bricks === 0 && s.cache.bytes === 0) {
      this.showProgress();
      return;
    }
    const first = !st.firstPicture;
    const busy = !first && s.streaming && !s.nowComplete();
    let drewSlices = false;
    if (this.dirty.size && (!busy || t - this.lastSlices > Math.max(100, 4 * this.sliceMs)) && !(first && st.firstSlices && this.render3d)) {
      for (const a of this.dirty) this.renderView(s, this.views[a]);
      this.dirty.clear();
      this.lastSlices = t;
      drewSlices = true;
      this.sliceMs = performance.now() - t;
      st.drawMs += this.sliceMs;
      if (!st.firstSlices && Object.values(this.views).every((v) => covered(v))) st.firstSlices = performance.now();
    }
    // The 3D texture moves to the 3D level once all of it has arrived.
    if (this.view3d.ok && this.tex3d !== s.level3d && levelBricks(s.grid, s.level3d).every((k) => s.holds(k))) this.reset3d(s.level3d);
    // The first picture: the 3D view is drawn in the frame that covers the
    // slices (from the coarse level its texture is small).
    if (this.view3d.ok && (this.dirty3d.size || this.render3d) && !(first && drewSlices && !st.firstSlices) && (!busy || t - this.last3d > 500)) {
      const t3 = performance.now();
      for (const [id, k] of this.dirty3d) this.filled3d.set(id, this.view3d.fillBrick(k, this.win));
      this.dirty3d.clear();
      this.view3d.render();
      this.render3d = false;
      this.last3d = performance.now();
      st.draw3dMs += this.last3d - t3;
      if (st.firstSlices && !st.firstPicture && this.all3d(false)) {
        st.firstPicture = this.last3d;
        st.firstPictureBytes = st.bytes;
      }
    }
    if (st.firstPicture && this.startLive) {
      this.startLive();
      this.startLive = null;
    }
    if (st.firstSlices && !st.firstPicture && !this.view3d.ok) {
      st.firstPicture = st.firstSlices;
      st.firstPictureBytes = st.bytes;
    }
    if (st.firstPicture && st.lastSharp <= st.lastMove && this.sharp()) {
      st.lastSharp = performance.now();
      if (!st.fullResolution) st.fullResolution = st.lastSharp;
    }
    this.showProgress();
    if (this.dirty.size || this.dirty3d.size || this.render3d) this.schedule();
  }

  /**
   * renderView draws slice view v at the level drawLevel picks while its
   * own level's bricks arrive: at first the coarsest held (the same picture
   * from an image with far fewer pixels to fill), or, when the view went
   * coarser, the finer level it holds whole (if its image is at most four
   * times the canvas's pixels).
   */
  private renderView(s: Session, v: SliceView): void {
    const plan = v.level, w = v.want();
    const has = (k: Key) => s.cache.has(keyId(k));
    const l = w ? drawLevel(s.grid, w, plan, has, (k) => s.holds(k), 4 * v.canvas.width * v.canvas.height) : plan;
    v.level = l;
    try {
      v.render(this.win, this.table);
    } finally {
      v.level = plan;
    }
  }

  /** all3d reports whether every brick of the 3D texture is filled (at its own level when exact). */
  private all3d(exact: boolean): boolean {
    const s = this.session;
    if (!s || !this.view3d.ok) return true;
    if (exact && this.tex3d !== s.level3d) return false;
    const ks = levelBricks(s.grid, this.tex3d);
    if (this.filled3d.size < ks.length) return false;
    for (const l of this.filled3d.values()) if (l < 0 || (exact && l !== s.level3d)) return false;
    return true;
  }

  /** sharp reports whether every view shows its own level everywhere and nothing is left to fetch or draw. */
  private sharp(): boolean {
    const s = this.session;
    if (!s || !s.nowComplete() || this.dirty.size || this.dirty3d.size) return false;
    for (const v of Object.values(this.views)) {
      for (const l of v.drawnLevels.keys()) if (l !== v.level) return false;
    }
    return this.all3d(true);
  }

  private showProgress(): void {
    const s = this.session;
    if (!s) return;
    const p = s.progress(), c = s.cacheStats();
    const state = p.streaming ? "streaming" : this.sharp() ? "at screen resolution" : s.streamError ? "stopped" : "idle";
    const eta = p.etaMs >= 0 ? `, ETA ${(p.etaMs / 1000).toFixed(1)} s` : "";
    $("progress").textContent =
      `${state}\nbricks ${p.held} / ${p.wanted}\n${fmtBytes(p.bytes)} on the wire at ${p.mbs.toFixed(1)} MB/s${eta}\n${fmtCount(p.voxels)} voxels decoded (${fmtBytes(p.voxelBytes)})\ncache ${fmtBytes(c.bytes)} / ${fmtBytes(c.budget)}` +
      (s.stats.liveTiles ? `\nlive tiles ${s.stats.liveTiles}` : "");
    $("progress-fill").style.width = `${p.wanted ? (100 * p.held) / p.wanted : 0}%`;
    $("levels").textContent = Object.values(this.views).map((v) => `${roles[v.axis]}: LOD ${v.level}`).join("\n") + `\n3D: LOD ${s.level3d}`;
  }

  /** setBudget changes the cache's byte budget; the views are planned again. */
  setBudget(bytes: number): void {
    this.budget = bytes;
    $<HTMLInputElement>("budget").value = String(bytes / 2 ** 20);
    const s = this.session;
    if (!s) return;
    s.cache.setBudget(bytes);
    this.plan();
    this.markAll();
  }

  private applyAutoWindow(redraw = true): void {
    const d = this.session;
    if (!d || !(d.max >= d.min)) return;
    const width = Math.max(d.max - d.min, d.type === 5 ? 1e-6 : 1);
    this.setWindow({ level: d.min + width / 2, width }, redraw);
  }

  setWindow(w: Window, redraw = true): void {
    this.win = w;
    $<HTMLInputElement>("level").value = String(+w.level.toPrecision(6));
    $<HTMLInputElement>("width").value = String(+w.width.toPrecision(6));
    this.markAll();
    void redraw;
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
    if (!this.session || !o) return;
    for (const v of Object.values(this.views)) v.setLayout(layout(o, roles[v.axis], c));
    this.setCross();
    this.replan = true;
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

  /** viewed: a view was zoomed or panned; it shows another part, maybe at another level. */
  private viewed(axis: Axis): void {
    if (this.session) this.session.stats.lastMove = performance.now();
    this.dirty.add(axis);
    this.replan = true;
    this.schedule();
  }

  /** afterMove redraws the crosshair; the next frame plans the bricks for the new planes (cancelling what is not needed any more). */
  private afterMove(): void {
    if (this.session) this.session.stats.lastMove = performance.now();
    this.setCross();
    for (const v of Object.values(this.views)) v.draw();
    this.replan = true;
    this.schedule();
  }

  private hover(p: Vec3 | null): void {
    const d = this.session;
    if (!d || !p) {
      $("cursor").textContent = "-";
      return;
    }
    const l = d.lodAt(p);
    const v = d.value(p, l);
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
    this.replan = true;
    this.markAll();
  }

  /** api is what window.ldm exposes to tests and scripts. */
  api() {
    return {
      open: (name: string) => this.open(name),
      refresh: () => this.refresh(),
      /** state reports loading progress; idle means nothing is left to stream or draw. */
      state: () => ({
        volume: this.session?.name ?? "",
        streaming: this.session?.streaming ?? false,
        // loaded: everything the views need now has arrived and no request runs.
        loaded: this.session?.loaded() ?? false,
        // sharp: every view shows its own level everywhere.
        sharp: this.sharp(),
        idle: !!this.session && this.session.loaded() && !this.replan && this.dirty.size === 0 && this.dirty3d.size === 0 && !this.render3d && this.frame === 0,
        progress: this.session?.progress() ?? null,
        stats: this.session ? { ...this.session.stats } : null,
        cache: this.session?.cacheStats() ?? null,
        requests: this.session?.requests() ?? [],
        // The level each view draws, and how many of its pixels came from each level (-1: none).
        levels: { z: this.views.z.level, y: this.views.y.level, x: this.views.x.level, "3d": this.session?.level3d ?? 0 },
        drawn: Object.fromEntries(Object.values(this.views).map((v) => [v.axis, Object.fromEntries(v.drawnLevels)])),
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
      /** canvasToVoxel gives the LOD 0 voxel under a device pixel of a slice view (null outside the volume). */
      canvasToVoxel: (axis: Axis, x: number, y: number) => this.views[axis].canvasToVoxel(x, y),
      /** voxelToCanvas gives the device pixel of a voxel in a slice view ("z" axial, "y" coronal, "x" sagittal). */
      voxelToCanvas: (axis: Axis, p: Vec3) => this.views[axis].voxelToCanvas(p),
      /** project3D gives the device pixel where a voxel appears in the 3D view. */
      project3D: (p: Vec3) => (this.session ? this.view3d.project(p) : null),
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
      /** value is the voxel at p from the finest level held, or at level lod. */
      value: (p: Vec3, lod = -1) => this.session?.value(p, lod) ?? NaN,
      /** lodAt is the finest level held at p (-1: none). */
      lodAt: (p: Vec3) => this.session?.lodAt(p) ?? -1,
      /** shape is the open volume's size in LOD 0 voxels. */
      shape: () => (this.session ? { ...this.session.shape } : null),
      /** canvasSize is a view's drawing buffer size in device pixels. */
      canvasSize: (view: Axis | "3d") => {
        const c = view === "3d" ? this.view3d.canvas : this.views[view].canvas;
        return { w: c.width, h: c.height };
      },
      /** setBudget sets the brick cache's budget in bytes. */
      setBudget: (bytes: number) => this.setBudget(bytes),
      /** zoom sets a slice view's zoom (1: the whole slice fits) and pan (device pixels), as the wheel and drag do. */
      zoom: (axis: Axis, zoom: number, panX = 0, panY = 0) => {
        const v = this.views[axis];
        v.zoom = zoom;
        v.panX = panX;
        v.panY = panY;
        v.draw();
        this.viewed(axis);
      },
    };
  }
}

/**
 * embeddedVolume returns the GetVolume response of volume name that the
 * server put in the page (a script element of type application/json, id
 * ldm-volume: {"name", "getVolume": base64 of the binary response}), or
 * null when the page has none for that name or it does not decode.
 */
function embeddedVolume(name: string): GetVolumeResponse | null {
  const el = document.getElementById("ldm-volume");
  if (!el?.textContent) return null;
  try {
    const d = JSON.parse(el.textContent) as { name?: unknown; getVolume?: unknown };
    if (d.name !== name || typeof d.getVolume !== "string") return null;
    const bin = atob(d.getVolume);
    const b = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
    return fromBinary(GetVolumeResponseSchema, b);
  } catch {
    return null;
  }
}

/** covered reports whether a slice view has drawn every pixel of its image from some level. */
function covered(v: SliceView): boolean {
  return v.drawnLevels.size > 0 && !v.drawnLevels.has(-1);
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

/** fmtCount writes a count with an SI prefix (k, M, G). */
function fmtCount(n: number): string {
  if (n < 1000) return String(n);
  const u = ["k", "M", "G", "T"];
  let i = -1;
  do {
    n /= 1000;
    i++;
  } while (n >= 1000 && i < u.length - 1);
  return `${n.toFixed(n < 10 ? 2 : 1)} ${u[i]}`;
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
// Let the primed session's request go out (the client's calls start from
// promise callbacks) before the views and the WebGL context are made.
await new Promise((r) => setTimeout(r, 0));
app.init();
(window as unknown as { ldm: ReturnType<App["api"]> }).ldm = app.api();
