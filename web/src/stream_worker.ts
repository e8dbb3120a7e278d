// The streaming worker: runs StreamBricks for a set of brick keys off the main thread (fetch,
// envelope and protobuf decoding, and zstd decoding of compressed bricks,
// see streamKeys) and hands each brick's voxels to the page
// by transfer, without copying. Messages in: {type: "start", id, baseUrl,
// protocol, token, request}, {type: "cancel", id} and {type: "zstd"} (a
// zstd volume is open: load the decoder now, before its first brick; it is
// loaded on the first zstd brick otherwise, and never for raw volumes).
// Messages out: "brick",
// "done" and "error" (with the Connect code and message), tagged with id;
// and "ready" once, when the worker has loaded.

import { Code, ConnectError } from "@connectrpc/connect";
import { connect, type Protocol } from "./api";
import { streamKeys, type StartMessage, type WorkerMessage } from "./bricks";
import { zstdReady } from "./zstd";

const running = new Map<number, AbortController>();
const post = (m: WorkerMessage, transfer: Transferable[] = []) => (self as unknown as Worker).postMessage(m, transfer);

self.onmessage = async (e: MessageEvent<StartMessage | { type: "cancel"; id: number } | { type: "zstd" }>) => {
  const m = e.data;
  if (m.type === "zstd") {
    zstdReady().catch(() => {}); // a failure is reported with the first zstd brick
    return;
  }
  if (m.type === "cancel") {
    running.get(m.id)?.abort();
    running.delete(m.id);
    return;
  }
  const ctl = new AbortController();
  running.set(m.id, ctl);
  const clients = connect(m.baseUrl, m.protocol as Protocol, () => m.token);
  try {
    for await (const b of streamKeys(clients, m.request, ctl.signal)) {
      // Each message has its own buffer (one per envelope, or the decoder's
      // output for a zstd brick): transfer it.
      post({ type: "brick", id: m.id, ...b }, b.value.byteLength ? [b.value.buffer] : []);
    }
    post({ type: "done", id: m.id });
  } catch (err) {
    const ce = ConnectError.from(err);
    post({ type: "error", id: m.id, code: ctl.signal.aborted ? Code.Canceled : ce.code, message: ce.rawMessage });
  } finally {
    running.delete(m.id);
  }
};

post({ type: "ready", id: 0 });
