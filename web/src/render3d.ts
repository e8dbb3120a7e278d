// View3D ray-marches a maximum-intensity projection of the volume in
// WebGL2. The 3D texture holds one level of detail (the finest within the
// session's 3D voxel budget), mapped through the current window to 8 bits
// (0 for voxels not yet streamed); it is filled brick by brick as bricks of
// that level arrive, with coarser bricks standing in until then. A 256x1
// texture holds the colormap. The camera is orthographic and orbits the volume's centre.

import { IndexTable, lutIndex, type Window } from "./colormap";
import type { Key, Vec3 } from "./selection";
import type { SliceSource } from "./slice";

const vertexSrc = `#version 300 es
in vec2 a_pos;
out vec2 v_ndc;
void main() {
  v_ndc = a_pos;
  gl_Position = vec4(a_pos, 0.0, 1.0);
}`;

const fragmentSrc = `#version 300 es
precision highp float;
precision highp sampler3D;
in vec2 v_ndc;
out vec4 outColor;
uniform sampler3D u_vol;
uniform sampler2D u_lut;
uniform mat3 u_rot;     // camera to volume rotation
uniform vec3 u_half;    // half extent of the box (max axis = 1)
uniform vec2 u_scale;   // view half size in box units (x, y)
uniform int u_steps;
void main() {
  vec3 ro = u_rot * vec3(v_ndc * u_scale, -4.0);
  vec3 rd = u_rot * vec3(0.0, 0.0, 1.0);
  vec3 inv = 1.0 / rd;
  vec3 t0 = (-u_half - ro) * inv;
  vec3 t1 = (u_half - ro) * inv;
  vec3 tmin = min(t0, t1), tmax = max(t0, t1);
  float tn = max(max(tmin.x, tmin.y), tmin.z);
  float tf = min(min(tmax.x, tmax.y), tmax.z);
  if (tf <= tn) {
    outColor = vec4(0.06, 0.06, 0.08, 1.0);
    return;
  }
  float m = 0.0;
  float dt = (tf - tn) / float(u_steps);
  for (int i = 0; i < 1024; i++) {
    if (i >= u_steps) break;
    vec3 p = ro + rd * (tn + (float(i) + 0.5) * dt);
    m = max(m, texture(u_vol, p / (2.0 * u_half) + 0.5).r);
  }
  outColor = vec4(texture(u_lut, vec2((m * 255.0 + 0.5) / 256.0, 0.5)).rgb, 1.0);
}`;

/** Orientation of the camera: yaw about the volume's y axis, then pitch. */
export interface Camera {
  yaw: number;
  pitch: number;
  zoom: number;
}

export class View3D {
  readonly canvas: HTMLCanvasElement;
  readonly ok: boolean;
  readonly error: string = "";
  private gl: WebGL2RenderingContext | null = null;
  private prog: WebGLProgram | null = null;
  private volTex: WebGLTexture | null = null;
  private lutTex: WebGLTexture | null = null;
  private half: Vec3 = { x: 1, y: 1, z: 1 };
  private dims: Vec3 = { x: 1, y: 1, z: 1 };
  cam: Camera = { yaw: 0, pitch: 0, zoom: 1 };

  constructor(canvas: HTMLCanvasElement) {
    this.canvas = canvas;
    const gl = canvas.getContext("webgl2", { preserveDrawingBuffer: true, antialias: false });
    if (!gl) {
      this.ok = false;
      this.error = "WebGL2 is not available in this browser: the 3D view is off.";
      return;
    }
    this.gl = gl;
    try {
      this.prog = this.program(vertexSrc, fragmentSrc);
    } catch (e) {
      this.ok = false;
      this.error = `3D view: ${(e as Error).message}`;
      return;
    }
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(this.prog, "a_pos");
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    this.volTex = gl.createTexture();
    this.lutTex = gl.createTexture();
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    this.ok = true;
    this.bind();
  }

  private program(vs: string, fs: string): WebGLProgram {
    const gl = this.gl!;
    const p = gl.createProgram()!;
    for (const [type, src] of [
      [gl.VERTEX_SHADER, vs],
      [gl.FRAGMENT_SHADER, fs],
    ] as const) {
      const s = gl.createShader(type)!;
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s) ?? "shader error");
      gl.attachShader(p, s);
    }
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p) ?? "link error");
    return p;
  }

  /** setLUT uploads a 256-entry RGBA colormap. */
  setLUT(table: Uint8Array): void {
    const gl = this.gl;
    if (!gl) return;
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, this.lutTex);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, 256, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, table);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
  }

  private src: SliceSource | null = null;
  private lod = 0;
  private shape: Vec3 = { x: 1, y: 1, z: 1 };

  /** setVolume allocates the texture for level lod of src (every texel 0). */
  setVolume(src: SliceSource, lod: number): void {
    const gl = this.gl;
    this.src = src;
    this.lod = lod;
    const S = src.grid.shape, f = 2 ** lod;
    this.shape = { ...S };
    this.dims = { x: Math.ceil(S.x / f), y: Math.ceil(S.y / f), z: Math.ceil(S.z / f) };
    const ex = S.x * src.spacing.x, ey = S.y * src.spacing.y, ez = S.z * src.spacing.z;
    const m = Math.max(ex, ey, ez);
    this.half = { x: ex / m, y: ey / m, z: ez / m };
    if (!gl) return;
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_3D, this.volTex);
    gl.texImage3D(gl.TEXTURE_3D, 0, gl.R8, this.dims.x, this.dims.y, this.dims.z, 0, gl.RED, gl.UNSIGNED_BYTE, null);
    gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_3D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    for (const w of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T, gl.TEXTURE_WRAP_R]) gl.texParameteri(gl.TEXTURE_3D, w, gl.CLAMP_TO_EDGE);
  }

  private readonly tables = new IndexTable();

  /** level is the level of detail the texture holds. */
  get level(): number {
    return this.lod;
  }

  /**
   * fillBrick maps brick k of the texture's level through win and uploads
   * it, from that brick if held, else from the finest coarser brick held;
   * it reports the level used (-1: none, the texels are 0).
   */
  fillBrick(k: Key, win: Window): number {
    const gl = this.gl, src = this.src;
    if (!gl || !src) return -1;
    const B = src.grid.brick, D = this.dims;
    const x0 = k.x * B.x, y0 = k.y * B.y, z0 = k.z * B.z;
    const nx = Math.min(B.x, D.x - x0), ny = Math.min(B.y, D.y - y0), nz = Math.min(B.z, D.z - z0);
    if (nx <= 0 || ny <= 0 || nz <= 0) return -1;
    let l = k.lod;
    let b: ReturnType<SliceSource["brick"]>;
    for (; l < src.grid.levels; l++) {
      const s = l - k.lod;
      b = src.brick(l, k.x >> s, k.y >> s, k.z >> s);
      if (b) break;
    }
    const out = new Uint8Array(nx * ny * nz);
    if (b) {
      const s = l - k.lod, v = b.voxels;
      const it = this.tables.for(v, win);
      if (it) {
        const tab = it.t, off = it.off;
        let i = 0;
        for (let z = 0; z < nz; z++) {
          const lz = ((z0 + z) >> s) % B.z;
          for (let y = 0; y < ny; y++) {
            const row = b.sx * (((y0 + y) >> s) % B.y + b.sy * lz);
            if (s === 0) {
              for (let x = 0; x < nx; x++) out[i++] = tab[v[row + x] + off];
            } else {
              for (let x = 0; x < nx; x++) out[i++] = tab[v[row + (((x0 + x) >> s) % B.x)] + off];
            }
          }
        }
      } else {
        let i = 0;
        for (let z = 0; z < nz; z++) {
          const lz = ((z0 + z) >> s) % B.z;
          for (let y = 0; y < ny; y++) {
            const row = b.sx * (((y0 + y) >> s) % B.y + b.sy * lz);
            if (s === 0) {
              for (let x = 0; x < nx; x++) out[i++] = lutIndex(v[row + x], win);
            } else {
              for (let x = 0; x < nx; x++) out[i++] = lutIndex(v[row + (((x0 + x) >> s) % B.x)], win);
            }
          }
        }
      }
    }
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_3D, this.volTex);
    gl.texSubImage3D(gl.TEXTURE_3D, 0, x0, y0, z0, nx, ny, nz, gl.RED, gl.UNSIGNED_BYTE, out);
    return b ? l : -1;
  }

  /** rotation returns the camera-to-volume rotation (column-major 3x3). */
  private rotation(): number[] {
    const cy = Math.cos(this.cam.yaw), sy = Math.sin(this.cam.yaw);
    const cp = Math.cos(this.cam.pitch), sp = Math.sin(this.cam.pitch);
    // R = Ry(yaw) * Rx(pitch); the camera looks along +z of the volume
    // with x to the right and y down (like the axial slice) when both are 0.
    // Screen y is flipped so that volume y grows downwards.
    const r = [
      [cy, sy * sp, sy * cp],
      [0, cp, -sp],
      [-sy, cy * sp, cy * cp],
    ];
    const flip = [1, -1, 1];
    // column-major: column j = R * e_j (with screen y flipped)
    return [0, 1, 2].flatMap((j) => [r[0][j] * flip[j], r[1][j] * flip[j], r[2][j] * flip[j]]);
  }

  /** view half-size in box units, keeping voxels square. */
  private scale(): [number, number] {
    const a = this.canvas.width / Math.max(1, this.canvas.height);
    const s = 1.05 / this.cam.zoom;
    return a >= 1 ? [s * a, s] : [s, s / a];
  }

  /** maxPixels caps the drawing buffer's longer side (ray marching costs per pixel; CSS scales it up). */
  maxPixels = 512;

  resize(): void {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const k = Math.min(dpr, this.maxPixels / Math.max(1, r.width, r.height));
    const w = Math.max(1, Math.round(r.width * k)), h = Math.max(1, Math.round(r.height * k));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
  }

  render(): void {
    const gl = this.gl;
    if (!gl || !this.prog) return;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.useProgram(this.prog);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_3D, this.volTex);
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, this.lutTex);
    gl.uniform1i(gl.getUniformLocation(this.prog, "u_vol"), 0);
    gl.uniform1i(gl.getUniformLocation(this.prog, "u_lut"), 1);
    gl.uniformMatrix3fv(gl.getUniformLocation(this.prog, "u_rot"), false, this.rotation());
    gl.uniform3f(gl.getUniformLocation(this.prog, "u_half"), this.half.x, this.half.y, this.half.z);
    const [sx, sy] = this.scale();
    gl.uniform2f(gl.getUniformLocation(this.prog, "u_scale"), sx, sy);
    gl.uniform1i(gl.getUniformLocation(this.prog, "u_steps"), Math.min(384, Math.ceil(1.5 * Math.max(this.dims.x, this.dims.y, this.dims.z))));
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  /**
   * project returns the canvas pixel where a LOD 0 voxel centre of d
   * appears, ignoring depth (orthographic).
   */
  project(p: Vec3): { x: number; y: number } {
    const S = this.shape;
    const b = [
      ((p.x + 0.5) / S.x - 0.5) * 2 * this.half.x,
      ((p.y + 0.5) / S.y - 0.5) * 2 * this.half.y,
      ((p.z + 0.5) / S.z - 0.5) * 2 * this.half.z,
    ];
    const R = this.rotation(); // column-major camera->volume; volume->camera is its transpose
    const cx = R[0] * b[0] + R[1] * b[1] + R[2] * b[2];
    const cy = R[3] * b[0] + R[4] * b[1] + R[5] * b[2];
    const [sx, sy] = this.scale();
    return { x: ((cx / sx + 1) / 2) * this.canvas.width, y: ((1 - cy / sy) / 2) * this.canvas.height };
  }

  private bind(): void {
    let drag = false, lx = 0, ly = 0;
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      drag = true;
      lx = e.clientX;
      ly = e.clientY;
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.cam.yaw += (e.clientX - lx) * 0.01;
      this.cam.pitch = Math.max(-1.55, Math.min(1.55, this.cam.pitch + (e.clientY - ly) * 0.01));
      lx = e.clientX;
      ly = e.clientY;
      this.render();
    });
    c.addEventListener("pointerup", () => (drag = false));
    c.addEventListener("pointercancel", () => (drag = false));
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.cam.zoom = Math.max(0.3, Math.min(10, this.cam.zoom * Math.exp(-e.deltaY * 0.002)));
        this.render();
      },
      { passive: false },
    );
    c.addEventListener("dblclick", () => {
      this.cam = { yaw: 0, pitch: 0, zoom: 1 };
      this.render();
    });
  }
}
