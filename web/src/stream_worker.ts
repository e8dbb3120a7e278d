// The streaming worker: runs StreamBricks off the main thread (fetch,
// envelope and protobuf decoding) and hands each brick's bytes to the page
// by transfer, without copying. Messages in: {type: "start", id, baseUrl,
// protocol, token, request} and {type: "cancel", id}. Messages out: "brick",
// "done" and "error" (with the Connect code and message), tagged with id.

import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type Protocol } from "./api";
import { BrickOrder } from "./gen/ldm/v1/volume_pb";
import type { StartMessage, WorkerMessage } from "./bricks";

const running = new Map<number, AbortController>();
const post = (m: WorkerMessage, transfer: Transferable[] = []) => (self as unknown as Worker).postMessage(m, transfer);

self.onmessage = async (e: MessageEvent<StartMessage | { type: "cancel"; id: number }>) => {
  const m = e.data;
  if (m.type === "cancel") {
    running.get(m.id)?.abort();
    running.delete(m.id);
    return;
  }
  const ctl = new AbortController();
  running.set(m.id, ctl);
  const clients = connect(m.baseUrl, m.protocol as Protocol, () => m.token);
  const r = m.request;
  try {
    const it = clients.volumes.streamBricks(
      { volume: r.volume, minLod: r.minLod, maxLod: r.maxLod, focus: r.focus, order: BrickOrder.COARSE_TO_FINE },
      { signal: ctl.signal },
    );
    for await (const res of it) {
      const t = res.tile;
      if (!t || !t.key) continue;
      // Each message has its own buffer (one per envelope): transfer it.
      const v = t.value;
      post(
        { type: "brick", id: m.id, lod: t.key.lod, x: t.key.x, y: t.key.y, z: t.key.z, offset: t.offset, value: v, index: res.index, total: res.total },
        [v.buffer],
      );
    }
    post({ type: "done", id: m.id });
  } catch (err) {
    const ce = ConnectError.from(err);
    post({ type: "error", id: m.id, code: ctl.signal.aborted ? Code.Canceled : ce.code, message: ce.rawMessage });
  } finally {
    running.delete(m.id);
  }
};
