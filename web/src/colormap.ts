// Colormaps: 256-entry RGB lookup tables, and the window/level mapping from a
// voxel value to a table index shared by the slice views and the 3D view.

export type ColormapName = "gray" | "hot" | "viridis" | "cool-warm";

export const colormapNames: ColormapName[] = ["gray", "hot", "viridis", "cool-warm"];

const stops: Record<ColormapName, number[][]> = {
  gray: [
    [0, 0, 0],
    [255, 255, 255],
  ],
  hot: [
    [0, 0, 0],
    [230, 0, 0],
    [255, 210, 0],
    [255, 255, 255],
  ],
  viridis: [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ],
  "cool-warm": [
    [59, 76, 192],
    [221, 221, 221],
    [180, 4, 38],
  ],
};

/** lut returns 256 RGBA entries (4 bytes each) interpolating the map's stops. */
export function lut(name: ColormapName): Uint8Array {
  const s = stops[name];
  const out = new Uint8Array(256 * 4);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (s.length - 1);
    const k = Math.min(s.length - 2, Math.floor(t));
    const f = t - k;
    for (let c = 0; c < 3; c++) out[i * 4 + c] = Math.round(s[k][c] + (s[k + 1][c] - s[k][c]) * f);
    out[i * 4 + 3] = 255;
  }
  return out;
}

/** Window is a contrast setting: values in [level-width/2, level+width/2] span the colormap. */
export interface Window {
  level: number;
  width: number;
}

/**
 * lutIndex maps a value to a colormap index: round(clamp((v - lo) / width) * 255)
 * with lo = level - width/2. The browser test computes the same formula.
 */
export function lutIndex(v: number, w: Window): number {
  const lo = w.level - w.width / 2;
  let t = (v - lo) / (w.width > 0 ? w.width : 1);
  if (t < 0) t = 0;
  if (t > 1) t = 1;
  return Math.floor(t * 255 + 0.5);
}

/**
 * IndexTable maps every value of an 8- or 16-bit integer type to its
 * colormap index for one window (256 or 65536 entries, built when the type
 * or window changes), so that mapping a brick is one lookup per voxel:
 * index = t[v + off].
 */
export class IndexTable {
  private key = "";
  t = new Uint8Array(0);
  off = 0;

  /** for returns the table for v's type and win, or null for 32-bit and float voxels. */
  for(v: ArrayLike<number>, win: Window): IndexTable | null {
    let lo: number, n: number;
    if (v instanceof Uint8Array) [lo, n] = [0, 256];
    else if (v instanceof Uint16Array) [lo, n] = [0, 65536];
    else if (v instanceof Int16Array) [lo, n] = [-32768, 65536];
    else return null;
    const key = `${lo}/${n}/${win.level}/${win.width}`;
    if (key !== this.key) {
      this.key = key;
      this.off = -lo;
      this.t = new Uint8Array(n);
      for (let i = 0; i < n; i++) this.t[i] = lutIndex(lo + i, win);
    }
    return this;
  }
}
