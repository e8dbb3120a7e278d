// SliceView draws one orthogonal slice of a volume on a 2D canvas with
// nearest-neighbour scaling, so each voxel's centre shows exactly its
// colour-mapped value. It draws from the session's brick cache, only the
// part the viewport shows, at the level the session planned for it (its
// voxels match the screen's pixels); where a brick of that level has not
// arrived, the finest coarser brick held fills in. Which voxel axis is the slice's depth and which way
// the others run on screen come from the volume's orientation (orient.ts):
// the axial view is always a slice across the patient's S/I axis, and so on,
// whatever the storage order. With no known orientation (or an identity LPS
// transform) axial shows x right, y down at a fixed z; coronal x right, z up
// at a fixed y; sagittal y right, z up at a fixed x. Letters on each side
// name the patient direction that way.

import { IndexTable, lutIndex, type Window } from "./colormap";
import type { Axis, ViewLayout } from "./orient";
import type { SliceWant } from "./session";
import type { Vec3 } from "./selection";

/** SliceSource is what a slice view reads: the session, seen from here. */
export interface SliceSource {
  grid: { shape: Vec3; brick: Vec3; levels: number };
  spacing: Vec3;
  brick(lod: number, x: number, y: number, z: number): { voxels: ArrayLike<number>; sx: number; sy: number } | undefined;
}

export type { Axis } from "./orient";

/** storageLayout is the layout of a view key with no known orientation. */
export function storageLayout(key: Axis): ViewLayout {
  if (key === "z") return { depth: "z", u: "x", v: "y", flipU: false, flipV: false, left: "", right: "", top: "", bottom: "" };
  if (key === "y") return { depth: "y", u: "x", v: "z", flipU: false, flipV: true, left: "", right: "", top: "", bottom: "" };
  return { depth: "x", u: "y", v: "z", flipU: false, flipV: true, left: "", right: "", top: "", bottom: "" };
}

export interface SliceHost {
  /** pick moves the crosshair (and the other views' slices) to a voxel. */
  pick(p: Vec3): void;
  /** hover reports the voxel under the pointer (null when it leaves). */
  hover(p: Vec3 | null): void;
  /** moved reports that this view's slice position changed. */
  moved(axis: Axis, pos: number): void;
  /** viewed reports that this view's zoom or pan changed. */
  viewed(axis: Axis): void;
}

export class SliceView {
  /** axis is the view's key: "z" axial, "y" coronal, "x" sagittal. */
  readonly axis: Axis;
  readonly canvas: HTMLCanvasElement;
  readonly slider: HTMLInputElement;
  private readonly label: HTMLElement;
  private readonly sides: Record<"left" | "right" | "top" | "bottom", HTMLElement>;
  /** map says how voxels map to this view's screen image. */
  map: ViewLayout;
  private readonly title: string;
  private readonly host: SliceHost;
  private readonly off = document.createElement("canvas");
  private data: SliceSource | null = null;
  private w = 0;
  private h = 0;
  private image: ImageData | null = null;
  // Where the offscreen image goes, in screen voxels of LOD 0 (x0, y0, and
  // the size of one image pixel), set by render.
  private place = { x0: 0, y0: 0, f: 1, w: 0, h: 0 };
  /** level is the level of detail drawn (set by the owner from the session's plan). */
  level = 0;
  /** drawnLevels counts the image's pixels by the level they came from (-1: none yet). */
  drawnLevels = new Map<number, number>();
  pos = 0;
  zoom = 1;
  panX = 0;
  panY = 0;
  // Crosshair position (LOD 0 voxels) shown as lines, or null.
  cross: Vec3 | null = null;
  showCross = true;

  constructor(root: HTMLElement, axis: Axis, title: string, host: SliceHost) {
    this.axis = axis;
    this.map = storageLayout(axis);
    this.title = title;
    this.host = host;
    root.classList.add("view");
    root.innerHTML = "";
    const head = document.createElement("div");
    head.className = "view-head";
    this.label = document.createElement("span");
    head.append(this.label);
    this.canvas = document.createElement("canvas");
    this.canvas.tabIndex = 0;
    this.canvas.setAttribute("aria-label", `${title} slice; arrow keys move the slice, + and - zoom`);
    this.slider = document.createElement("input");
    this.slider.type = "range";
    this.slider.min = "0";
    this.slider.max = "0";
    this.slider.setAttribute("aria-label", `${title} slice position`);
    const wrap = document.createElement("div");
    wrap.className = "canvas-wrap";
    wrap.append(this.canvas);
    const side = (k: string) => {
      const e = document.createElement("span");
      e.className = `orient-label ${k}`;
      e.dataset.side = k;
      wrap.append(e);
      return e;
    };
    this.sides = { left: side("left"), right: side("right"), top: side("top"), bottom: side("bottom") };
    root.append(head, wrap, this.slider);
    this.slider.addEventListener("input", () => this.setPos(Number(this.slider.value)));
    this.bindPointer();
    this.bindKeys();
    this.updateLabel();
  }

  /** depth is the voxel axis this view's slider moves along. */
  get depth(): Axis {
    return this.map.depth;
  }

  /** dims returns the slice's width and height in voxels and the voxel sizes along them. */
  private dims(): { w: number; h: number; su: number; sv: number; depth: number } {
    const d = this.data!;
    const S = d.grid.shape, P = d.spacing, m = this.map;
    return { w: S[m.u], h: S[m.v], su: P[m.u], sv: P[m.v], depth: S[m.depth] };
  }

  /** setVolume shows a volume laid out by map (see orient.ts). */
  setVolume(d: SliceSource | null, map: ViewLayout = storageLayout(this.axis)): void {
    this.data = d;
    this.zoom = 1;
    this.panX = this.panY = 0;
    this.setSides(d ? map : storageLayout(this.axis));
    if (!d) return;
    this.map = map;
    const { w, h, depth } = this.dims();
    this.w = w;
    this.h = h;
    this.image = null;
    this.place = { x0: 0, y0: 0, f: 1, w: 0, h: 0 };
    this.slider.max = String(depth - 1);
    this.pos = Math.floor(depth / 2);
    this.slider.value = String(this.pos);
    this.updateLabel();
  }

  /** setLayout changes how the volume is laid out (e.g. the convention), keeping the slice. */
  setLayout(map: ViewLayout): void {
    if (!this.data) return;
    const pos = map.depth === this.map.depth ? this.pos : -1;
    const { zoom, panX, panY } = this;
    this.setVolume(this.data, map);
    if (pos >= 0) {
      this.pos = pos;
      this.slider.value = String(pos);
      this.zoom = zoom;
      this.panX = panX;
      this.panY = panY;
      this.updateLabel();
    }
  }

  private setSides(map: ViewLayout): void {
    for (const k of ["left", "right", "top", "bottom"] as const) {
      this.sides[k].textContent = map[k];
      this.sides[k].hidden = map[k] === "";
    }
  }

  /** sideLabels returns the letters shown on each side. */
  sideLabels(): { left: string; right: string; top: string; bottom: string } {
    const s = this.sides;
    return { left: s.left.textContent ?? "", right: s.right.textContent ?? "", top: s.top.textContent ?? "", bottom: s.bottom.textContent ?? "" };
  }

  setPos(p: number, notify = true): void {
    if (!this.data) return;
    const depth = this.dims().depth;
    p = Math.max(0, Math.min(depth - 1, Math.round(p)));
    if (p === this.pos) return;
    this.pos = p;
    this.slider.value = String(p);
    this.updateLabel();
    if (notify) this.host.moved(this.axis, p);
  }

  private updateLabel(): void {
    const depth = this.data ? this.dims().depth : 0;
    this.label.textContent = `${this.title}  ${this.map.depth} = ${this.pos} / ${Math.max(0, depth - 1)}`;
  }

  /** scale returns canvas pixels per voxel along u and v, and the image's top-left corner. */
  private layout(): { ku: number; kv: number; ox: number; oy: number } {
    const { w, h, su, sv } = this.dims();
    const cw = this.canvas.width, ch = this.canvas.height;
    const fit = Math.min(cw / (w * su), ch / (h * sv));
    const ku = fit * this.zoom * su, kv = fit * this.zoom * sv;
    return { ku, kv, ox: cw / 2 + this.panX - (w * ku) / 2, oy: ch / 2 + this.panY - (h * kv) / 2 };
  }

  /** toScreen maps a LOD 0 voxel to this view's image column and row. */
  private toScreen(p: Vec3): [number, number] {
    const m = this.map;
    const u = p[m.u], v = p[m.v];
    return [m.flipU ? this.w - 1 - u : u, m.flipV ? this.h - 1 - v : v];
  }

  /** voxelToCanvas returns the canvas pixel (device pixels) at the centre of voxel p. */
  voxelToCanvas(p: Vec3): { x: number; y: number } {
    const [sx, sy] = this.toScreen(p);
    const { ku, kv, ox, oy } = this.layout();
    return { x: ox + (sx + 0.5) * ku, y: oy + (sy + 0.5) * kv };
  }

  /** canvasToVoxel returns the voxel under a canvas pixel, or null outside the image. */
  canvasToVoxel(cx: number, cy: number): Vec3 | null {
    if (!this.data) return null;
    const { ku, kv, ox, oy } = this.layout();
    const sx = Math.floor((cx - ox) / ku);
    const sy = Math.floor((cy - oy) / kv);
    if (sx < 0 || sy < 0 || sx >= this.w || sy >= this.h) return null;
    const m = this.map;
    const p = { x: 0, y: 0, z: 0 };
    p[m.u] = m.flipU ? this.w - 1 - sx : sx;
    p[m.v] = m.flipV ? this.h - 1 - sy : sy;
    p[m.depth] = this.pos;
    return p;
  }

  /** resize matches the canvas's pixel size to its box. */
  resize(): void {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
  }

  /**
   * want returns what this view shows for the session to plan: the plane,
   * the rectangle of it inside the viewport (LOD 0 voxels) and how many
   * voxels a device pixel covers.
   */
  want(): SliceWant | null {
    if (!this.data) return null;
    const m = this.map;
    const { ku, kv, ox, oy } = this.layout();
    const cw = this.canvas.width, ch = this.canvas.height;
    const [u0, u1] = this.visible(m.flipU, this.w, (0 - ox) / ku, (cw - ox) / ku);
    const [v0, v1] = this.visible(m.flipV, this.h, (0 - oy) / kv, (ch - oy) / kv);
    return { key: this.axis, depth: m.depth, pos: this.pos, u: m.u, v: m.v, u0, u1, v0, v1, voxelsPerPixel: Math.min(1 / ku, 1 / kv) };
  }

  /** visible turns a range of screen columns (LOD 0 voxels) into the voxel range it shows along an axis of n voxels. */
  private visible(flip: boolean, n: number, s0: number, s1: number): [number, number] {
    const a = Math.max(0, Math.floor(s0)), b = Math.min(n, Math.ceil(s1));
    if (b <= a) return [0, 0];
    return flip ? [n - b, n - a] : [a, b];
  }

  /** render draws the visible part of the slice from the source's bricks at this.level (coarser ones fill gaps). */
  render(win: Window, table: Uint8Array): void {
    const d = this.data;
    if (!d) return;
    const m = this.map, want = this.want()!;
    const L = Math.max(0, Math.min(d.grid.levels - 1, this.level)), f = 2 ** L;
    const B = d.grid.brick;
    // The visible box in level-L voxels.
    const lw = Math.ceil(this.w / f), lh = Math.ceil(this.h / f);
    const a0 = Math.floor(want.u0 / f), a1 = Math.min(lw, Math.ceil(want.u1 / f));
    const b0 = Math.floor(want.v0 / f), b1 = Math.min(lh, Math.ceil(want.v1 / f));
    const iw = Math.max(0, a1 - a0), ih = Math.max(0, b1 - b0);
    this.drawnLevels = new Map();
    if (iw === 0 || ih === 0) {
      this.image = null;
      this.draw();
      return;
    }
    if (!this.image || this.image.width !== iw || this.image.height !== ih) {
      this.image = new ImageData(iw, ih);
      this.off.width = iw;
      this.off.height = ih;
    }
    const px = this.image.data;
    const depthL = this.pos >> L;
    const counts = new Map<number, number>();
    // Each image row is one v (level L); runs along u share a brick.
    for (let j = 0; j < ih; j++) {
      const vL = m.flipV ? b1 - 1 - j : b0 + j;
      let i = 0;
      while (i < iw) {
        const uL = m.flipU ? a1 - 1 - i : a0 + i;
        // The run: the image pixels whose u is in the same level-L brick.
        const bu = Math.floor(uL / B[m.u]);
        const runEnd = m.flipU ? uL - bu * B[m.u] + 1 : (bu + 1) * B[m.u] - uL;
        const run = Math.min(iw - i, runEnd);
        // The finest level at or above L that holds this brick.
        let src: { voxels: ArrayLike<number>; sx: number; sy: number } | undefined;
        let l = L;
        const p = { x: 0, y: 0, z: 0 };
        for (; l < d.grid.levels; l++) {
          const s = l - L;
          p[m.u] = uL >> s;
          p[m.v] = vL >> s;
          p[m.depth] = depthL >> s;
          src = d.brick(l, Math.floor(p.x / B.x), Math.floor(p.y / B.y), Math.floor(p.z / B.z));
          if (src) break;
        }
        counts.set(src ? l : -1, (counts.get(src ? l : -1) ?? 0) + run);
        const it = src ? this.tables.for(src.voxels, win) : null;
        const tab = it?.t, toff = it?.off ?? 0;
        for (let r = 0; r < run; r++, i++) {
          const o = (j * iw + i) * 4;
          const u = m.flipU ? a1 - 1 - i : a0 + i;
          if (!src) {
            // Not streamed yet: a dark checkerboard (in level voxels).
            const c = (u >> 3) + (vL >> 3);
            px[o] = px[o + 1] = px[o + 2] = c & 1 ? 28 : 18;
          } else {
            const s = l - L;
            p[m.u] = u >> s;
            p[m.v] = vL >> s;
            p[m.depth] = depthL >> s;
            const v = src.voxels[(p.x % B.x) + src.sx * ((p.y % B.y) + src.sy * (p.z % B.z))];
            const k = (tab ? tab[v + toff] : lutIndex(v, win)) * 4;
            px[o] = table[k];
            px[o + 1] = table[k + 1];
            px[o + 2] = table[k + 2];
          }
          px[o + 3] = 255;
        }
      }
    }
    this.drawnLevels = counts;
    this.off.getContext("2d")!.putImageData(this.image, 0, 0);
    // Screen position (LOD 0 voxels) of the image's top-left corner.
    const x0 = m.flipU ? this.w - a1 * f : a0 * f;
    const y0 = m.flipV ? this.h - b1 * f : b0 * f;
    this.place = { x0, y0, f, w: iw, h: ih };
    this.draw();
  }

  private readonly tables = new IndexTable();

  /** draw paints the current slice image with zoom, pan and crosshair. */
  draw(): void {
    const ctx = this.canvas.getContext("2d")!;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.data) return;
    const { ku, kv, ox, oy } = this.layout();
    ctx.imageSmoothingEnabled = false;
    if (this.image) {
      // A level voxel at the volume's far edge may reach past it: clip to the volume.
      ctx.save();
      ctx.beginPath();
      ctx.rect(ox, oy, this.w * ku, this.h * kv);
      ctx.clip();
      const P = this.place;
      ctx.drawImage(this.off, ox + P.x0 * ku, oy + P.y0 * kv, P.w * P.f * ku, P.h * P.f * kv);
      ctx.restore();
    }
    if (this.showCross && this.cross) {
      const c = this.voxelToCanvas(this.cross);
      ctx.strokeStyle = "rgba(80, 220, 120, 0.8)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(0, Math.round(c.y) + 0.5);
      ctx.lineTo(this.canvas.width, Math.round(c.y) + 0.5);
      ctx.moveTo(Math.round(c.x) + 0.5, 0);
      ctx.lineTo(Math.round(c.x) + 0.5, this.canvas.height);
      ctx.stroke();
    }
  }

  /** zoomAt multiplies the zoom by f, keeping canvas point (cx, cy) fixed. */
  zoomAt(f: number, cx: number, cy: number): void {
    const z = Math.max(0.25, Math.min(64, this.zoom * f));
    f = z / this.zoom;
    const mx = this.canvas.width / 2 + this.panX, my = this.canvas.height / 2 + this.panY;
    this.panX += (cx - mx) * (1 - f);
    this.panY += (cy - my) * (1 - f);
    this.zoom = z;
    this.draw();
    this.host.viewed(this.axis);
  }

  resetView(): void {
    this.zoom = 1;
    this.panX = this.panY = 0;
    this.draw();
    this.host.viewed(this.axis);
  }

  private devicePoint(e: MouseEvent): [number, number] {
    const r = this.canvas.getBoundingClientRect();
    const dpr = this.canvas.width / Math.max(1, r.width);
    return [(e.clientX - r.left) * dpr, (e.clientY - r.top) * dpr];
  }

  private bindPointer(): void {
    let mode: "pick" | "pan" | null = null;
    let lx = 0, ly = 0;
    const c = this.canvas;
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    c.addEventListener("pointerdown", (e) => {
      c.focus();
      c.setPointerCapture(e.pointerId);
      [lx, ly] = this.devicePoint(e);
      mode = e.button === 0 && !e.shiftKey ? "pick" : "pan";
      if (mode === "pick") {
        const p = this.canvasToVoxel(lx, ly);
        if (p) this.host.pick(p);
      }
    });
    c.addEventListener("pointermove", (e) => {
      const [x, y] = this.devicePoint(e);
      this.host.hover(this.canvasToVoxel(x, y));
      if (mode === "pan") {
        this.panX += x - lx;
        this.panY += y - ly;
        this.draw();
        this.host.viewed(this.axis);
      } else if (mode === "pick") {
        const p = this.canvasToVoxel(x, y);
        if (p) this.host.pick(p);
      }
      lx = x;
      ly = y;
    });
    const end = () => (mode = null);
    c.addEventListener("pointerup", end);
    c.addEventListener("pointercancel", end);
    c.addEventListener("pointerleave", () => this.host.hover(null));
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        const [x, y] = this.devicePoint(e);
        this.zoomAt(Math.exp(-e.deltaY * 0.002), x, y);
      },
      { passive: false },
    );
    c.addEventListener("dblclick", () => this.resetView());
  }

  private bindKeys(): void {
    this.canvas.addEventListener("keydown", (e) => {
      const step: Record<string, number> = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
      if (e.key in step) {
        this.setPos(this.pos + step[e.key]);
      } else if (e.key === "Home") {
        this.setPos(0);
      } else if (e.key === "End") {
        this.setPos(Infinity);
      } else if (e.key === "+" || e.key === "=") {
        this.zoomAt(1.25, this.canvas.width / 2, this.canvas.height / 2);
      } else if (e.key === "-") {
        this.zoomAt(0.8, this.canvas.width / 2, this.canvas.height / 2);
      } else if (e.key === "0") {
        this.resetView();
      } else {
        return;
      }
      e.preventDefault();
    });
  }
}
