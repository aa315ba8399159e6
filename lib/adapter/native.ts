/**
 * Runtime glue: the runtime's own sockets, where it has them (Bun's, Deno's; Node keeps node:net),
 * engines dialled over them (TLS engines too), and the front built on both. Used by the
 * server's thread and by its other front threads alike.
 */
import net from "node:net";
import tls from "node:tls";
import { type Host, type HostAddress, newHostStatus, parseHostAddress } from "../cluster/host.ts";
import type { EngineTls } from "./host-fetch.ts";
import { Front, type FrontBackend, type StreamSocket } from "./front.ts";
import { splice } from "./splice.ts";
import { connectBun, listenBun, type ServerTls } from "./bun/socket.ts";
import { connectDeno, listenDeno } from "./deno/socket.ts";

export type Address = { host: string; port: number } | { path: string };

export interface NativeSockets {
  /** `reusePort`: several threads listen on one TCP port, the kernel spreads connections over them. */
  listen: (a: Address, accept: (s: StreamSocket) => void, reusePort?: boolean, tls?: ServerTls) => { port?: number; stop: () => void };
  /** With `tls`: over TLS (a tcp address), the server's certificate checked. */
  connect: (a: Address, tls?: EngineTls) => StreamSocket;
  /** Whether `listen` serves these TLS clients (with a CA: client certificates checked, as dockerd --tlsverify). */
  servesTls: (tls: ServerTls) => boolean;
}

export const native: NativeSockets | undefined = "Bun" in globalThis
  ? {
    listen: (a, accept, reusePort, tls) => listenBun("path" in a ? { unix: a.path } : { hostname: a.host, port: a.port }, accept, reusePort, tls),
    connect: (a, tls) => connectBun("path" in a ? { unix: a.path } : { hostname: a.host, port: a.port }, tls),
    servesTls: () => true,
  }
  : "Deno" in globalThis
  ? {
    listen: (a, accept, reusePort, tls) => listenDeno("path" in a ? a : { hostname: a.host, port: a.port }, accept, reusePort, tls),
    connect: (a, tls) => connectDeno("path" in a ? a : { hostname: a.host, port: a.port }, tls),
    servesTls: (tls) => !tls.ca, // Deno.listenTls asks no client certificate: node:tls checks them
  }
  : undefined;

/** A raw connection to an engine: on the runtime's sockets (TLS too), else on node:net/node:tls. */
export function dial(host: HostAddress, engineTls?: EngineTls): StreamSocket {
  if (native) return native.connect(host.dial, host.tls ? engineTls ?? {} : undefined);
  if ("path" in host.dial) return net.connect({ path: host.dial.path, allowHalfOpen: true });
  if (host.tls) {
    return tls.connect({
      host: host.dial.host,
      port: host.dial.port,
      ca: engineTls?.ca,
      cert: engineTls?.cert,
      key: engineTls?.key,
      ALPNProtocols: ["http/1.1"],
      allowHalfOpen: true,
    } as tls.ConnectionOptions);
  }
  return net.connect({ host: host.dial.host, port: host.dial.port, allowHalfOpen: true });
}

/**
 * The front over a backend, with the full HTTP server (node:http + the app) on the unix socket
 * `apiPath` behind it: what the front does not take itself goes there.
 */
export function frontOver(backend: FrontBackend, apiPath: string, engineTls?: EngineTls): Front {
  const api: Host = {
    ...parseHostAddress(`flocker-api=unix://${apiPath}`),
    status: newHostStatus(),
    fetch: () => Promise.reject(new Error("not fetched")),
  };
  return new Front({
    flocker: backend,
    api,
    dial: (host) => dial(host, engineTls),
    handOff: (socket, buffered) => {
      const upstream = native ? native.connect({ path: apiPath }) : net.connect({ path: apiPath, allowHalfOpen: true });
      upstream.setNoDelay(true);
      if (buffered.length) upstream.write(buffered);
      splice(socket, upstream);
    },
  });
}
