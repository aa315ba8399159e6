/**
 * Runtime glue: serve a Flocker over node:http (works in Node, Bun and Deno alike), with the
 * `upgrade` event carrying hijacked streams (attach, exec start) as raw bytes to the engine.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import type { Flocker } from "../flocker.ts";
import type { EngineTls } from "./host-fetch.ts";
import type { StreamSocket } from "./front.ts";
import { statusLine } from "./http1.ts";
import { gathers, splice } from "./splice.ts";
import { DenoTlsStream } from "./deno/socket.ts";
import { dial, frontOver, native } from "./native.ts";
import type { ServerTls } from "./bun/socket.ts";
import { FrontThreads } from "./front-threads.ts";
import { noteAppRequest } from "./memory.ts";
import { SESSION_HEADER } from "../api/hijack.ts";

export type Listen = { host: string; port: number } | { path: string };

export interface ServeOptions {
  listen: Listen;
  /** TLS for clients, like dockerd's --tlsverify when `ca` is given. */
  tls?: ServerTls;
  /** Client certificates for `https://` engines. */
  engineTls?: EngineTls;
  /**
   * Threads serving the front (plain TCP listeners). Default: under Bun one per two CPUs (at
   * least 1, at most 4); 1 under Deno, where a second gained nothing measurable and cost ~18 MB.
   */
  threads?: number;
}

export interface RunningServer {
  server: Server;
  address: string;
  close: () => Promise<void>;
}

const PRIVATE_DIR_PREFIX = "flocker-";

/**
 * Fails (EADDRINUSE) when something listens on the port already. Threads share the port with
 * SO_REUSEPORT, which would otherwise share it just as quietly with a second flocker started there.
 */
function assertPortFree(listen: { host: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen({ host: listen.host, port: listen.port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/**
 * A flocker killed outright (SIGKILL, a crash) leaves its private socket directory behind: remove
 * those whose socket no longer answers. Best effort, in the background; live ones are left alone.
 */
async function removeStaleDirs() {
  try {
    for (const name of readdirSync(tmpdir())) {
      if (!name.startsWith(PRIVATE_DIR_PREFIX)) continue;
      const dir = join(tmpdir(), name);
      // A minute old at least: a flocker starting right now has its directory before its socket listens.
      if (Date.now() - statSync(dir).mtimeMs < 60_000) continue;
      const entries = readdirSync(dir);
      if (entries.length > 1 || (entries.length === 1 && entries[0] !== "api.sock")) continue; // not one of ours
      const alive = entries.length === 1 && await new Promise<boolean>((resolve) => {
        const probe = net.connect({ path: join(dir, "api.sock") });
        probe.once("connect", () => (probe.destroy(), resolve(true)));
        probe.once("error", () => resolve(false));
      });
      if (!alive) rmSync(dir, { recursive: true, force: true });
    }
  } catch {
    // another user's directory, or one that vanished meanwhile
  }
}

export async function serve(flocker: Flocker, options: ServeOptions): Promise<RunningServer> {
  // The full Docker API: node:http + Hono, on a private unix socket (0700 directory) so nothing
  // reaches it except through the front, where TLS and client certificates are checked.
  const handle = getRequestListener(flocker.fetch);
  const server: Server = createHttpServer({
    // As dockerd (Go's limit): `docker build` sends every registry login of the CLI's config in
    // one X-Registry-Config header, which can pass the runtimes' 16 KB default.
    maxHeaderSize: 1 << 20,
  }, (req, res) => {
    noteAppRequest();
    return handle(req, res);
  });
  // Streams (logs -f, events, uploads) may be long and quiet: no request or idle timeouts.
  server.requestTimeout = 0;
  server.timeout = 0;
  server.keepAliveTimeout = 0;
  server.on("upgrade", upgradeHandler(flocker, options.engineTls));
  server.on("clientError", (_err, socket) => {
    if (socket.writable) {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"message":"malformed HTTP request"}\n');
    } else socket.destroy();
  });
  void removeStaleDirs();
  const dir = mkdtempSync(join(tmpdir(), PRIVATE_DIR_PREFIX));
  const inner = join(dir, "api.sock");
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(inner, () => resolve());
  });

  const sockets = new Set<StreamSocket>();
  const front = frontOver(flocker, inner, options.engineTls);
  const accept = (socket: StreamSocket) => {
    flocker.telemetry.noteConnections(0, 1);
    sockets.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      flocker.telemetry.noteConnections(0, 0, 1);
    });
    front.accept(socket);
  };
  let frontThreads: FrontThreads | undefined;
  const closeAll = (listenerClosed: () => void) =>
    new Promise<void>((r) => {
      // First, so that a process stopped while connections drain leaves nothing behind.
      rmSync(dir, { recursive: true, force: true });
      frontThreads?.close();
      for (const s of sockets) s.destroy();
      front.close();
      listenerClosed();
      server.close(() => r());
      server.closeAllConnections?.();
    });
  // The public listener; when it cannot listen (the port is taken...), nothing is left behind.
  const listen = async (): Promise<RunningServer> => {
    if (native && (!options.tls || native.servesTls(options.tls))) {
      // More front threads: each listens on the same TCP port (SO_REUSEPORT) and asks this thread
      // for routes; the kernel spreads the connections (and, serving TLS, their handshakes).
      const threads = options.threads ?? defaultFrontThreads();
      const more = "path" in options.listen ? 0 : Math.max(0, threads - 1);
      if (more > 0 && !("path" in options.listen) && options.listen.port !== 0) await assertPortFree(options.listen);
      const listener = native.listen(options.listen, accept, more > 0, options.tls);
      const address = "path" in options.listen ? `unix://${options.listen.path}` : `${options.listen.host}:${listener.port}`;
      if (more > 0 && !("path" in options.listen)) {
        frontThreads = new FrontThreads(flocker, { listen: { host: options.listen.host, port: listener.port! }, apiPath: inner, engineTls: options.engineTls, tls: options.tls });
        await frontThreads.start(more);
      }
      return { server, address, close: () => closeAll(() => listener.stop()) };
    }
    const listener: net.Server = options.tls
      ? tls.createServer({
        cert: options.tls.cert,
        key: options.tls.key,
        ca: options.tls.ca,
        requestCert: !!options.tls.ca,
        rejectUnauthorized: !!options.tls.ca,
        ALPNProtocols: ["http/1.1"], // never h2: hijacking needs HTTP/1.1
        allowHalfOpen: true,
      } as tls.TlsOptions, "Deno" in globalThis ? (socket: StreamSocket) => accept(DenoTlsStream.over(socket)) : accept)
      : net.createServer({ allowHalfOpen: true }, accept);
    return new Promise((resolve, reject) => {
      listener.once("error", reject);
      const done = () => {
        listener.off("error", reject);
        const a = listener.address();
        const address = typeof a === "string" ? `unix://${a}` : a ? `${a.address}:${a.port}` : "";
        resolve({
          server,
          address,
          close: () => closeAll(() => listener.close()),
        });
      };
      if ("path" in options.listen) listener.listen(options.listen.path, done);
      else listener.listen(options.listen.port, options.listen.host, done);
    });
  };
  try {
    return await listen();
  } catch (err) {
    await closeAll(() => {});
    throw err;
  }
}

/** Headers writeResponse writes itself (the body is sent whole, then the connection closes). */
const FRAMING = new Set(["content-length", "transfer-encoding", "connection"]);

async function writeResponse(socket: Duplex, res: Response) {
  const body = await res.text();
  const head = [statusLine(res)];
  res.headers.forEach((v, k) => !FRAMING.has(k) && head.push(`${k}: ${v}`));
  head.push(`Content-Length: ${Buffer.byteLength(body)}`, "Connection: close");
  socket.end(head.join("\r\n") + "\r\n\r\n" + body);
}

/**
 * Pipe a hijacked request to its engine. The request head is replayed as received; the engine's
 * own `101 UPGRADED` (or error) flows back untouched. Half-close is kept both ways: stdin EOF
 * reaches the container while its remaining output still reaches the client.
 */
async function hijack(flocker: Flocker, req: IncomingMessage, socket: Duplex, head: Buffer, engineTls?: EngineTls) {
  socket.on("error", () => {});
  const pathname = (req.url ?? "/").split("?")[0];
  if (req.method !== "POST" || !flocker.isHijackPath(pathname)) {
    // An upgrade flocker does not pipe (BuildKit's /grpc, say): the app's answer, as for any request.
    let res: Response;
    try {
      const headers = new Headers();
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
      res = await flocker.fetch(new Request(`http://localhost${pathname.startsWith("/") ? req.url : "/"}`, { method: req.method, headers }));
    } catch (err) {
      res = Response.json({ message: `bad request: ${err instanceof Error ? err.message : String(err)}` }, { status: 400 });
    }
    return writeResponse(socket, res);
  }
  const session = req.headers[SESSION_HEADER];
  const target = await flocker.hijack(pathname, typeof session === "string" ? session : undefined);
  if (target instanceof Response) return writeResponse(socket, target);
  (socket as net.Socket).setNoDelay?.(true);
  const upstream = dial(target, engineTls);
  upstream.setNoDelay(true);
  let answered = false;
  upstream.once("data", () => (answered = true));
  upstream.on("error", (err) => {
    if (!answered) {
      void writeResponse(socket, new Response(JSON.stringify({ message: `flocker: host ${target.name} is unreachable: ${err.message}` }), { status: 502 }));
    } else socket.destroy();
  });
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
  flocker.hijackStream(1);
  socket.once("close", () => flocker.hijackStream(-1));
  splice(socket, upstream, gathers(pathname, target));
}

/** A node:http `upgrade` listener that passes attach / exec start to their engine (used by `serve` and the seed API). */
export function upgradeHandler(flocker: Flocker, engineTls?: EngineTls) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer) => void hijack(flocker, req, socket, head, engineTls);
}

/**
 * Front threads by default. Under Bun one per two CPUs: the kernel's work for each request (its
 * recv and send) costs the proxy more than its own code, and the engines and clients share the
 * CPUs. On 2 CPUs a second thread cost ~30% more CPU per routed request (fewer events per wakeup,
 * a second heap) and served fewer requests than one. Deno: one (see `threads`).
 */
export function defaultFrontThreads(): number {
  return "Bun" in globalThis ? Math.max(1, Math.min(4, Math.floor((navigator.hardwareConcurrency || 1) / 2))) : 1;
}
