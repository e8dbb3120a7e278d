// SliceView draws one orthogonal slice of a volume on a 2D canvas with
// nearest-neighbour scaling, so each voxel's centre shows exactly its
// colour-mapped value. Axial shows x right, y down at a fixed z; coronal x
// right, z up at a fixed y; sagittal y right, z up at a fixed x.

import { lutIndex, type Window } from "./colormap";
import type { Vec3, VolumeData } from "./volume";

export type Axis = "x" | "y" | "z";

export interface SliceHost {
  /** pick moves the crosshair (and the other views' slices) to a voxel. */
  pick(p: Vec3): void;
  /** hover reports the voxel under the pointer (null when it leaves). */
  hover(p: Vec3 | null): void;
  /** moved reports that this view's slice position changed. */
  moved(axis: Axis, pos: number): void;
}

export class SliceView {
  readonly axis: Axis;
  readonly canvas: HTMLCanvasElement;
  readonly slider: HTMLInputElement;
  private readonly label: HTMLElement;
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
    root.append(head, this.canvas, this.slider);
    this.slider.addEventListener("input", () => this.setPos(Number(this.slider.value)));
    this.bindPointer();
    this.bindKeys();
    this.updateLabel();
  }

  /** flip reports whether rows run bottom-up (z up). */
  private get flip(): boolean {
    return this.axis !== "z";
  }

  /** dims returns the slice's width and height in voxels and the voxel sizes along them. */
  private dims(): { w: number; h: number; su: number; sv: number; depth: number } {
    const d = this.data!;
    const S = d.shape, P = d.spacing;
    if (this.axis === "z") return { w: S.x, h: S.y, su: P.x, sv: P.y, depth: S.z };
    if (this.axis === "y") return { w: S.x, h: S.z, su: P.x, sv: P.z, depth: S.y };
    return { w: S.y, h: S.z, su: P.y, sv: P.z, depth: S.x };
  }

  setVolume(d: VolumeData | null): void {
    this.data = d;
    this.zoom = 1;
    this.panX = this.panY = 0;
    if (!d) return;
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
    this.label.textContent = `${this.title}  ${this.axis} = ${this.pos} / ${Math.max(0, depth - 1)}`;
  }

  /** scale returns canvas pixels per voxel along u and v, and the image's top-left corner. */
  private layout(): { ku: number; kv: number; ox: number; oy: number } {
    const { w, h, su, sv } = this.dims();
    const cw = this.canvas.width, ch = this.canvas.height;
    const fit = Math.min(cw / (w * su), ch / (h * sv));
    const ku = fit * this.zoom * su, kv = fit * this.zoom * sv;
    return { ku, kv, ox: cw / 2 + this.panX - (w * ku) / 2, oy: ch / 2 + this.panY - (h * kv) / 2 };
  }

  /** toUV maps a LOD 0 voxel to this view's (u, v). */
  private toUV(p: Vec3): [number, number] {
    if (this.axis === "z") return [p.x, p.y];
    if (this.axis === "y") return [p.x, p.z];
    return [p.y, p.z];
  }

  /** voxelToCanvas returns the canvas pixel (device pixels) at the centre of voxel p's (u, v). */
  voxelToCanvas(p: Vec3): { x: number; y: number } {
    const [u, v] = this.toUV(p);
    const { ku, kv, ox, oy } = this.layout();
    const y = this.flip ? oy + (this.h - v - 0.5) * kv : oy + (v + 0.5) * kv;
    return { x: ox + (u + 0.5) * ku, y };
  }

  /** canvasToVoxel returns the voxel under a canvas pixel, or null outside the image. */
  canvasToVoxel(cx: number, cy: number): Vec3 | null {
    if (!this.data) return null;
    const { ku, kv, ox, oy } = this.layout();
    const u = Math.floor((cx - ox) / ku);
    let v = Math.floor((cy - oy) / kv);
    if (this.flip) v = this.h - 1 - v;
    if (u < 0 || v < 0 || u >= this.w || v >= this.h) return null;
    if (this.axis === "z") return { x: u, y: v, z: this.pos };
    if (this.axis === "y") return { x: u, y: this.pos, z: v };
    return { x: this.pos, y: u, z: v };
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
    this.data.slice(this.axis, this.pos, this.values);
    const px = this.image.data;
    const vals = this.values;
    for (let i = 0; i < vals.length; i++) {
      const v = vals[i];
      const o = i * 4;
      if (v !== v) {
        // Not streamed yet: a dark checkerboard.
        const c = ((i % this.w) >> 3) + ((i / this.w) >> 3);
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
    if (this.flip) {
      ctx.setTransform(1, 0, 0, -1, 0, oy + this.h * kv + oy);
      ctx.drawImage(this.off, ox, oy, this.w * ku, this.h * kv);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
    } else {
      ctx.drawImage(this.off, ox, oy, this.w * ku, this.h * kv);
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
