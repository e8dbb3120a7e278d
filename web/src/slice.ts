// SliceView draws one orthogonal slice of a volume on a 2D canvas with
// nearest-neighbour scaling, so each voxel's centre shows exactly its
// colour-mapped value. Which voxel axis is the slice's depth and which way
// the others run on screen come from the volume's orientation (orient.ts):
// the axial view is always a slice across the patient's S/I axis, and so on,
// whatever the storage order. With no known orientation (or an identity LPS
// transform) axial shows x right, y down at a fixed z; coronal x right, z up
// at a fixed y; sagittal y right, z up at a fixed x. Letters on each side
// name the patient direction that way.

import { lutIndex, type Window } from "./colormap";
import type { Axis, ViewLayout } from "./orient";
import type { Vec3, VolumeData } from "./volume";

export type { Axis } from "./orient";

/** storageLayout is the layout of a view key with no known orientation. */
export function storageLayout(key: Axis): ViewLayout {
  if (key === "z") return { depth: "z", u: "x", v: "y", flipU: false, flipV: false, left: "", right: "", top: "", bottom: "" };
  if (key === "y") return { depth: "y", u: "x", v: "z", flipU: false, flipV: true, left: "", right: "", top: "", bottom: "" };
  return { depth: "x", u: "y", v: "z", flipU: false, flipV: true, left: "", right: "", top: "", bottom: "" };
}

/** natural returns the (first, second) voxel axes of VolumeData.slice for a depth axis. */
function natural(depth: Axis): [Axis, Axis] {
  return depth === "z" ? ["x", "y"] : depth === "y" ? ["x", "z"] : ["y", "z"];
}

export interface SliceHost {
  /** pick moves the crosshair (and the other views' slices) to a voxel. */
  pick(p: Vec3): void;
  /** hover reports the voxel under the pointer (null when it leaves). */
  hover(p: Vec3 | null): void;
  /** moved reports that this view's slice position changed. */
  moved(axis: Axis, pos: number): void;
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
  private data: VolumeData | null = null;
  private values = new Float64Array(0);
  private w = 0;
  private h = 0;
  private image: ImageData | null = null;
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
    const S = d.shape, P = d.spacing, m = this.map;
    return { w: S[m.u], h: S[m.v], su: P[m.u], sv: P[m.v], depth: S[m.depth] };
  }

  /** setVolume shows a volume laid out by map (see orient.ts). */
  setVolume(d: VolumeData | null, map: ViewLayout = storageLayout(this.axis)): void {
    this.data = d;
    this.zoom = 1;
    this.panX = this.panY = 0;
    this.setSides(d ? map : storageLayout(this.axis));
    if (!d) return;
    this.map = map;
    const { w, h, depth } = this.dims();
    this.w = w;
    this.h = h;
    this.values = new Float64Array(w * h);
    this.off.width = w;
    this.off.height = h;
    this.image = new ImageData(w, h);
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

  /** render recomputes the slice image from the volume and draws it. */
  render(win: Window, table: Uint8Array): void {
    if (!this.data || !this.image) return;
    const m = this.map;
    this.data.slice(m.depth, this.pos, this.values);
    const px = this.image.data;
    const vals = this.values;
    // The slice comes in VolumeData.slice's order (natural first axis
    // fastest); screen pixel (sx, sy) reads voxel (u, v) of the layout.
    const [first] = natural(m.depth);
    const nw = first === m.u ? this.w : this.h; // length of the natural first axis
    const W = this.w, H = this.h;
    for (let i = 0, n = W * H; i < n; i++) {
      const sx = i % W, sy = (i / W) | 0;
      const u = m.flipU ? W - 1 - sx : sx;
      const vv = m.flipV ? H - 1 - sy : sy;
      const a = first === m.u ? u : vv, b = first === m.u ? vv : u;
      const v = vals[b * nw + a];
      const o = i * 4;
      if (v !== v) {
        // Not streamed yet: a dark checkerboard (in voxel coordinates).
        const c = (a >> 3) + (b >> 3);
        px[o] = px[o + 1] = px[o + 2] = c & 1 ? 28 : 18;
      } else {
        const k = lutIndex(v, win) * 4;
        px[o] = table[k];
        px[o + 1] = table[k + 1];
        px[o + 2] = table[k + 2];
      }
      px[o + 3] = 255;
    }
    this.off.getContext("2d")!.putImageData(this.image, 0, 0);
    this.draw();
  }

  /** draw paints the current slice image with zoom, pan and crosshair. */
  draw(): void {
    const ctx = this.canvas.getContext("2d")!;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.data) return;
    const { ku, kv, ox, oy } = this.layout();
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, ox, oy, this.w * ku, this.h * kv);
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
  }

  resetView(): void {
    this.zoom = 1;
    this.panX = this.panY = 0;
    this.draw();
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
