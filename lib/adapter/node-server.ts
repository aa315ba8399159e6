/**
 * Runtime glue: serve a Flocker over node:http (works in Node, Bun and Deno alike), with the
 * `upgrade` event carrying hijacked streams (attach, exec start) as raw bytes to the engine.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import type { Flocker } from "../flocker.ts";
import type { Host } from "../cluster/host.ts";
import type { EngineTls } from "./host-fetch.ts";

export type Listen = { host: string; port: number } | { path: string };

export interface ServeOptions {
  listen: Listen;
  /** TLS for clients, like dockerd's --tlsverify when `ca` is given. */
  tls?: { cert: string; key: string; ca?: string };
  /** Client certificates for `https://` engines. */
  engineTls?: EngineTls;
}

export interface RunningServer {
  server: Server;
  address: string;
  close: () => Promise<void>;
}

export function serve(flocker: Flocker, options: ServeOptions): Promise<RunningServer> {
  const listener = getRequestListener(flocker.fetch);
  // The HTTP server does not listen itself: `front` accepts (and terminates TLS), looks at the first
  // request head for the legacy hijack form, and hands every other connection to it.
  const server: Server = createHttpServer(listener);
  // Streams (logs -f, events, uploads) may be long and quiet: no request or idle timeouts.
  server.requestTimeout = 0;
  server.timeout = 0;
  server.keepAliveTimeout = 60_000;
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    void hijack(flocker, req, socket, head, options.engineTls);
  });
  server.on("clientError", (_err, socket) => {
    if (socket.writable) {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"message":"malformed HTTP request"}\n');
    } else socket.destroy();
  });
  const sockets = new Set<Duplex>();
  const accept = (s: net.Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    sniff(flocker, server, s, options.engineTls);
  };
  const front: net.Server = options.tls
    ? tls.createServer({
      cert: options.tls.cert,
      key: options.tls.key,
      ca: options.tls.ca,
      requestCert: !!options.tls.ca,
      rejectUnauthorized: !!options.tls.ca,
      ALPNProtocols: ["http/1.1"], // never h2: hijacking needs HTTP/1.1
      allowHalfOpen: true,
    } as tls.TlsOptions, accept)
    : net.createServer({ allowHalfOpen: true }, accept);
  return new Promise((resolve, reject) => {
    front.once("error", reject);
    const done = () => {
      front.off("error", reject);
      const a = front.address();
      const address = typeof a === "string" ? `unix://${a}` : a ? `${a.address}:${a.port}` : "";
      resolve({
        server,
        address,
        close: () =>
          new Promise<void>((r) => {
            front.close(() => r());
            for (const s of sockets) s.destroy();
          }),
      });
    };
    if ("path" in options.listen) front.listen(options.listen.path, done);
    else front.listen(options.listen.port, options.listen.host, done);
  });
}

function dial(host: Host, engineTls?: EngineTls): net.Socket {
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

async function writeResponse(socket: Duplex, res: Response) {
  const body = await res.text();
  const head = [`HTTP/1.1 ${res.status} ${res.statusText || "Error"}`];
  res.headers.forEach((v, k) => head.push(`${k}: ${v}`));
  head.push(`Content-Length: ${Buffer.byteLength(body)}`, "Connection: close");
  socket.end(head.join("\r\n") + "\r\n\r\n" + body);
}

/** Largest request head looked at for the legacy hijack form (a longer one goes to the HTTP server). */
const MAX_SNIFF = 16 * 1024;

/**
 * The legacy hijack form: attach / exec start WITHOUT `Connection: Upgrade`. The engine answers
 * `200 OK` and then streams raw bytes both ways until it closes. node:http would never emit
 * `upgrade` for it: it would re-frame the engine's stream as chunked and parse the client's stdin
 * as a next request. So the first request head of each connection is read here: the legacy form
 * is piped to its engine like an upgrade; anything else (bytes unread) goes to the HTTP server.
 */
function sniff(flocker: Flocker, server: Server, socket: net.Socket, engineTls?: EngineTls) {
  let buffered: Buffer = Buffer.alloc(0);
  const ignore = () => {};
  const onEnd = () => socket.destroy(); // closed before a whole request head: nothing to answer
  const onData = (chunk: Buffer) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    const end = buffered.indexOf("\r\n\r\n");
    if (end < 0 && buffered.length < MAX_SNIFF) return;
    socket.off("data", onData);
    socket.off("end", onEnd);
    socket.off("error", ignore);
    socket.pause();
    const pathname = end < 0 ? undefined : legacyHijackPath(flocker, buffered.subarray(0, end).toString("latin1"));
    if (pathname) return void legacyHijack(flocker, pathname, socket, buffered, engineTls);
    socket.unshift(buffered);
    server.emit("connection", socket);
    socket.resume();
  };
  socket.on("error", ignore);
  socket.on("end", onEnd);
  socket.on("data", onData);
}

/** The path of a hijack request sent without an Upgrade header, else undefined. */
function legacyHijackPath(flocker: Flocker, head: string): string | undefined {
  const [requestLine, ...headers] = head.split("\r\n");
  const m = /^POST (\S+) HTTP\/1\.[01]$/.exec(requestLine);
  if (!m || headers.some((h) => /^upgrade\s*:/i.test(h))) return undefined;
  const pathname = m[1].split("?")[0];
  return flocker.isHijackPath(pathname) ? pathname : undefined;
}

async function legacyHijack(flocker: Flocker, pathname: string, socket: net.Socket, bytes: Buffer, engineTls?: EngineTls) {
  socket.on("error", () => {});
  const target = await flocker.hijack(pathname);
  if (target instanceof Response) return writeResponse(socket, target);
  const upstream = connectEngine(target, socket, engineTls);
  upstream.write(bytes); // the request head as received, and whatever followed it
  splice(socket, upstream);
}

/** A raw connection to the engine; an error before its first byte is answered as a 502. */
function connectEngine(target: Host, socket: Duplex, engineTls?: EngineTls): net.Socket {
  (socket as net.Socket).setNoDelay?.(true);
  const upstream = dial(target, engineTls);
  upstream.setNoDelay(true);
  upstream.on("error", (err) => {
    if (!upstream.bytesRead) {
      void writeResponse(socket, new Response(JSON.stringify({ message: `flocker: host ${target.name} is unreachable: ${err.message}` }), { status: 502 }));
    } else socket.destroy();
  });
  return upstream;
}

/** Copy both ways, keeping half-close: the client's EOF reaches the engine, the rest of the output still comes back. */
function splice(socket: Duplex, upstream: net.Socket) {
  socket.pipe(upstream);
  upstream.pipe(socket);
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => {
    if (!socket.writableEnded) socket.end();
  });
}

/**
 * Pipe a hijacked request to its engine. The request head is replayed as received; the engine's
 * own `101 UPGRADED` (or error) flows back untouched. Half-close is kept both ways: stdin EOF
 * reaches the container while its remaining output still reaches the client.
 */
async function hijack(flocker: Flocker, req: IncomingMessage, socket: Duplex, head: Buffer, engineTls?: EngineTls) {
  socket.on("error", () => {});
  const pathname = (req.url ?? "/").split("?")[0];
  const target = await flocker.hijack(pathname);
  if (target instanceof Response) return writeResponse(socket, target);
  const upstream = connectEngine(target, socket, engineTls);
  const lines = [`${req.method} ${req.url} HTTP/1.1`];
  for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
  upstream.write(lines.join("\r\n") + "\r\n\r\n");
  if (head.length) upstream.write(head);
  // Bun and Deno deliver the request body (exec start's JSON) through `req`, Node through `head`.
  let missing = Number(req.headers["content-length"] ?? 0) - head.length;
  if (missing > 0) {
    const onData = (chunk: Buffer) => {
      upstream.write(chunk);
      missing -= chunk.length;
      if (missing <= 0) req.off("data", onData);
    };
    req.on("data", onData);
  }
  splice(socket, upstream);
}
