// The connection to the ldm server: a Connect (binary) or gRPC-Web
// transport to the page's own origin, a bearer token on every call, and
// plain-language messages for the errors a user can act on.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { VolumeService } from "./gen/ldm/v1/volume_pb";
import { TileService } from "./gen/ldm/v1/tile_pb";

export type Protocol = "connect" | "grpc-web";

export interface Clients {
  volumes: Client<typeof VolumeService>;
  tiles: Client<typeof TileService>;
}

/** connect builds clients for baseUrl; token (if any) is sent as "Authorization: Bearer <token>". */
export function connect(baseUrl: string, protocol: Protocol, token: () => string): Clients {
  const auth: Interceptor = (next) => async (req) => {
    const t = token().trim();
    if (t) req.header.set("Authorization", `Bearer ${t}`);
    return next(req);
  };
  const opts = { baseUrl, useBinaryFormat: true, interceptors: [auth] };
  const transport = protocol === "grpc-web" ? createGrpcWebTransport(opts) : createConnectTransport(opts);
  return { volumes: createClient(VolumeService, transport), tiles: createClient(TileService, transport) };
}

/** isCanceled reports whether err is the result of aborting a call. */
export function isCanceled(err: unknown): boolean {
  return ConnectError.from(err).code === Code.Canceled;
}

/**
 * retriable reports whether a failed call may succeed when repeated: the
 * server was unreachable, restarting or busy. A refused token, a missing
 * volume or a bad request is not retried.
 */
export function retriable(err: unknown): boolean {
  switch (ConnectError.from(err).code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.Internal:
    case Code.DeadlineExceeded:
    case Code.ResourceExhausted:
    case Code.Aborted:
      return true;
  }
  return false;
}

/** describe turns an error from a call into a message that says what to do. */
export function describe(err: unknown, what: string): string {
  const e = ConnectError.from(err);
  switch (e.code) {
    case Code.Unavailable:
    case Code.Unknown:
      if (/fetch|network|load failed/i.test(e.rawMessage) || e.code === Code.Unavailable) {
        return `The server is not reachable (${what}): is "ldm serve" running at ${location.origin}? (${e.rawMessage})`;
      }
      break;
    case Code.Unauthenticated:
      return `Authentication required (${what}): enter a bearer token above. (${e.rawMessage})`;
    case Code.PermissionDenied:
      return `Permission denied (${what}): this token may not do that. (${e.rawMessage})`;
    case Code.NotFound:
      return `Not found (${what}): the volume was deleted or never existed. (${e.rawMessage})`;
    case Code.ResourceExhausted:
      return `The server refused: too much at once (${what}). (${e.rawMessage})`;
    case Code.DataLoss:
      return `The server found corrupt data (${what}). (${e.rawMessage})`;
  }
  return `${what} failed: [${Code[e.code]}] ${e.rawMessage}`;
}

/** isNotFound reports whether err says the volume does not exist. */
export function isNotFound(err: unknown): boolean {
  return ConnectError.from(err).code === Code.NotFound;
}
