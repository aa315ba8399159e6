/**
 * Runtime glue: the listening socket. It reads each request head itself and
 *  - passes plain routed reads (`GET /containers/ID/json`...) byte for byte to the engine over a
 *    pooled keep-alive connection, reading only the response framing to know where it ends;
 *  - pipes hijacks sent without `Upgrade` (the legacy attach form) raw to their engine;
 *  - hands everything else (and the rest of that connection) to the node:http server behind it.
 * The fast path never parses JSON nor builds Request/Response objects; node:http + Hono stay the
 * one place where the Docker API is implemented.
 */
import net from "node:net";
import type { Flocker } from "../flocker.ts";
import type { Host } from "../cluster/host.ts";

/** Largest request head accepted (docker's own limit is 1 MiB; a CLI head is < 1 KiB). */
const MAX_HEAD = 64 * 1024;
/** Idle keep-alive connections kept per engine. */
const POOL_SIZE = 32;

export interface FrontOptions {
  flocker: Flocker;
  /** Opens a raw connection to an engine (tcp, unix or TLS). */
  dial: (host: Host) => net.Socket;
  /** Hands a connection to the full HTTP server, with the bytes already read. */
  handOff: (socket: net.Socket, buffered: Buffer) => void;
}

interface Head {
  method: string;
  target: string;
  /** Lower-cased header names. */
  headers: Map<string, string>;
  length: number;
}

function parseHead(buf: Buffer, end: number): Head | undefined {
  const text = buf.toString("latin1", 0, end);
  const lines = text.split("\r\n");
  const m = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(lines[0]);
  if (!m) return undefined;
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(":");
    if (colon <= 0) return undefined;
    const name = lines[i].slice(0, colon).toLowerCase();
    if (headers.has(name)) return undefined; // duplicates (e.g. two Content-Lengths): let node:http judge
    headers.set(name, lines[i].slice(colon + 1).trim());
  }
  return { method: m[1], target: m[2], headers, length: end + 4 };
}

export class Front {
  readonly #pools = new Map<Host, net.Socket[]>();

  constructor(private options: FrontOptions) {}

  /** The connection listener for a net.Server or tls.Server. */
  accept = (socket: net.Socket) => {
    socket.setNoDelay(true);
    new ClientConnection(this, socket).start();
  };

  take(host: Host): { socket: net.Socket; reused: boolean } {
    const pool = this.#pools.get(host);
    let socket: net.Socket | undefined;
    while ((socket = pool?.pop())) {
      if (!socket.destroyed) {
        for (const event of ["close", "error", "end"]) socket.removeAllListeners(event);
        return { socket, reused: true };
      }
    }
    return { socket: this.dialFresh(host), reused: false };
  }

  dialFresh(host: Host): net.Socket {
    const socket = this.options.dial(host);
    socket.setNoDelay(true);
    return socket;
  }

  give(host: Host, socket: net.Socket) {
    let pool = this.#pools.get(host);
    if (!pool) this.#pools.set(host, (pool = []));
    if (pool.length >= POOL_SIZE || socket.destroyed) return void socket.destroy();
    socket.removeAllListeners("data");
    socket.removeAllListeners("end");
    socket.removeAllListeners("error");
    socket.removeAllListeners("close");
    const drop = () => {
      const i = pool.indexOf(socket);
      if (i >= 0) pool.splice(i, 1);
      socket.destroy();
    };
    socket.on("error", drop);
    socket.on("close", drop);
    socket.on("end", drop);
    pool.push(socket);
  }

  get flocker() {
    return this.options.flocker;
  }

  handOff(socket: net.Socket, buffered: Buffer) {
    this.options.handOff(socket, buffered);
  }

  close() {
    for (const pool of this.#pools.values()) for (const s of pool) s.destroy();
    this.#pools.clear();
  }
}

/** Where a message ends: by length, by chunked framing, or at close. Bytes pass through untouched. */
class Framing {
  #headDone = false;
  #head: Buffer = Buffer.alloc(0);
  #remaining = 0;
  #mode: "length" | "chunked" | "close" | "none" = "none";
  // chunked state
  #chunkState: "size" | "data" | "crlf" | "trailer" = "size";
  #line = "";
  keepAlive = true;
  done = false;

  constructor(private isHead: boolean) {}

  /** A request body that follows a head already read. */
  static body(chunked: boolean, length: number): Framing {
    const f = new Framing(false);
    f.#headDone = true;
    f.#mode = chunked ? "chunked" : length > 0 ? "length" : "none";
    f.#remaining = length;
    f.done = f.#mode === "none";
    return f;
  }

  /** Feed bytes; returns how many of them belong to this response (the rest is not ours). */
  feed(chunk: Buffer): number {
    let i = 0;
    if (!this.#headDone) {
      const joined = this.#head.length ? Buffer.concat([this.#head, chunk]) : chunk;
      const end = joined.indexOf("\r\n\r\n");
      if (end < 0) {
        this.#head = joined;
        return chunk.length;
      }
      this.#headDone = true;
      const headLen = end + 4;
      i = headLen - this.#head.length;
      this.#parseHead(joined.toString("latin1", 0, end));
      this.#head = Buffer.alloc(0);
      if (this.#mode === "none") {
        this.done = true;
        return i;
      }
    }
    if (this.#mode === "close") return chunk.length;
    if (this.#mode === "length") {
      const take = Math.min(this.#remaining, chunk.length - i);
      this.#remaining -= take;
      if (this.#remaining === 0) this.done = true;
      return i + take;
    }
    // chunked: walk the framing without copying the data
    while (i < chunk.length && !this.done) {
      if (this.#chunkState === "data") {
        const take = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#chunkState = "crlf";
        continue;
      }
      const byte = chunk[i++];
      if (byte !== 0x0a) {
        this.#line += String.fromCharCode(byte);
        continue;
      }
      const line = this.#line.replace(/\r$/, "");
      this.#line = "";
      if (this.#chunkState === "crlf") {
        this.#chunkState = "size";
      } else if (this.#chunkState === "size") {
        const size = parseInt(line.split(";")[0], 16);
        if (Number.isNaN(size)) {
          this.keepAlive = false;
          this.done = true;
        } else if (size === 0) this.#chunkState = "trailer";
        else {
          this.#remaining = size;
          this.#chunkState = "data";
        }
      } else if (line === "") this.done = true; // end of trailers
    }
    return i;
  }

  #parseHead(text: string) {
    const lines = text.split("\r\n");
    const status = Number(lines[0].split(" ")[1]);
    let length: number | undefined;
    let chunked = false;
    for (let k = 1; k < lines.length; k++) {
      const colon = lines[k].indexOf(":");
      const name = lines[k].slice(0, colon).toLowerCase();
      const value = lines[k].slice(colon + 1).trim().toLowerCase();
      if (name === "content-length") length = Number(value);
      else if (name === "transfer-encoding") chunked = value.includes("chunked");
      else if (name === "connection" && value.includes("close")) this.keepAlive = false;
    }
    if (this.isHead || status === 204 || status === 304 || (status >= 100 && status < 200)) this.#mode = "none";
    else if (chunked) this.#mode = "chunked";
    else if (length !== undefined) {
      this.#mode = length > 0 ? "length" : "none";
      this.#remaining = length;
    } else {
      this.#mode = "close";
      this.keepAlive = false;
    }
  }
}

class ClientConnection {
  #buffer: Buffer = Buffer.alloc(0);
  #busy = false;
  #gone = false;
  /** Receives a request body in flight. */
  #sink?: (chunk: Buffer) => void;
  /** Stops the request in flight when the client goes away. */
  #abort?: () => void;

  constructor(private front: Front, private socket: net.Socket) {}

  start() {
    this.socket.on("data", this.#onData);
    this.socket.on("error", () => this.#close());
    this.socket.on("close", () => {
      this.#gone = true;
      this.#abort?.();
    });
    this.socket.on("end", () => {
      if (!this.#busy) this.socket.end();
    });
  }

  #onData = (chunk: Buffer) => {
    if (this.#sink) return this.#sink(chunk);
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    if (!this.#busy) void this.#next();
  };

  /** Send the request body to the engine as it arrives; bytes past its end stay for the next request. */
  #streamBody(upstream: net.Socket, body: Framing) {
    const push = (chunk: Buffer) => {
      const ours = body.feed(chunk);
      if (!upstream.write(ours === chunk.length ? chunk : chunk.subarray(0, ours))) {
        this.socket.pause();
        upstream.once("drain", () => this.socket.resume());
      }
      if (body.done) {
        this.#sink = undefined;
        if (ours < chunk.length) this.#buffer = chunk.subarray(ours);
      }
    };
    const pending = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    this.#sink = push;
    if (pending.length) push(pending);
  }

  #close() {
    this.#gone = true;
    this.socket.destroy();
  }

  #leave(handler: (socket: net.Socket, buffered: Buffer) => void) {
    this.socket.off("data", this.#onData);
    this.socket.removeAllListeners("end");
    this.socket.removeAllListeners("close");
    this.socket.pause();
    const buffered = this.#buffer;
    this.#buffer = Buffer.alloc(0);
    handler(this.socket, buffered);
  }

  async #next(): Promise<void> {
    if (this.#gone) return;
    const end = this.#buffer.indexOf("\r\n\r\n");
    if (end < 0) {
      if (this.#buffer.length > MAX_HEAD) this.#leave((s, b) => this.front.handOff(s, b)); // node:http answers 431
      return;
    }
    const head = parseHead(this.#buffer, end);
    const pathname = head?.target.split("?")[0] ?? "";
    const length = Number(head?.headers.get("content-length") ?? 0);
    const chunked = head?.headers.get("transfer-encoding")?.toLowerCase() === "chunked";
    const simple = head && !head.headers.has("upgrade") && Number.isSafeInteger(length) && length >= 0 &&
      !(chunked && head.headers.has("content-length")) && (!head.headers.has("transfer-encoding") || chunked) &&
      !head.headers.get("connection")?.toLowerCase().includes("close");
    // Attach and exec start, with Upgrade or in the legacy form: piped raw, straight to the engine.
    if (head?.method === "POST" && this.front.flocker.isHijackPath(pathname)) {
      return this.#leave((s, b) => void hijack(this.front, s, b, pathname));
    }
    if (!head || !simple) return this.#leave((s, b) => this.front.handOff(s, b));
    this.#busy = true; // bytes that arrive meanwhile wait in the buffer
    const route = await this.front.flocker.passThrough(head.method, pathname);
    if (route === undefined) {
      this.#busy = false;
      return this.#leave((s, b) => this.front.handOff(s, b));
    }
    const request = this.#buffer.subarray(0, head.length);
    this.#buffer = this.#buffer.subarray(head.length);
    const body = Framing.body(chunked, length);
    if (route instanceof Response) {
      if (!body.done) return this.#leave((s) => this.#refuse(s, route)); // its body is never read
      await this.#answer(route);
    } else await this.#pass(route, request, head.method === "HEAD", body);
    this.#busy = false;
    if (this.#gone) return;
    if (this.#buffer.length) return this.#next();
  }

  async #refuse(socket: net.Socket, res: Response) {
    await this.#answer(res, true);
    socket.end();
  }

  async #answer(res: Response, close = false) {
    const body = Buffer.from(await res.arrayBuffer());
    const lines = [`HTTP/1.1 ${res.status} ${res.statusText || "Error"}`];
    res.headers.forEach((v, k) => k !== "content-length" && lines.push(`${k}: ${v}`));
    lines.push(`Content-Length: ${body.length}`);
    if (close) lines.push("Connection: close");
    this.socket.write(lines.join("\r\n") + "\r\n\r\n");
    this.socket.write(body);
  }

  /** One request to the engine and its response back, untouched. Retries once on a stale pooled connection. */
  #pass(host: Host, request: Buffer, isHead: boolean, body: Framing): Promise<void> {
    return new Promise((resolve) => {
      const attempt = (retry: boolean) => {
        // A request with a body gets a fresh connection: it cannot be replayed on a stale one.
        const { socket: upstream, reused } = body.done ? this.front.take(host) : { socket: this.front.dialFresh(host), reused: false };
        const framing = new Framing(isHead);
        let sent = 0;
        const finish = (ok: boolean) => {
          upstream.off("data", onData);
          upstream.off("error", onError);
          upstream.off("end", onEnd);
          if (!body.done) {
            // Answered before the whole body came (an error): the rest of this connection is unusable.
            this.#sink = undefined;
            upstream.destroy();
            this.socket.end();
            this.#gone = true;
          } else if (ok && framing.keepAlive) this.front.give(host, upstream);
          else upstream.destroy();
          resolve();
        };
        const onData = (chunk: Buffer) => {
          const ours = framing.feed(chunk);
          sent += ours;
          const more = this.socket.write(ours === chunk.length ? chunk : chunk.subarray(0, ours));
          if (framing.done) return finish(ours === chunk.length);
          if (!more) {
            upstream.pause();
            this.socket.once("drain", () => upstream.resume());
          }
        };
        const onError = (err: Error) => {
          if (sent === 0 && reused && retry) {
            upstream.destroy();
            return attempt(false);
          }
          if (sent === 0) {
            const body = JSON.stringify({ message: `flocker: host ${host.name} (${host.address}) is unreachable: ${err.message}` });
            this.socket.write(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
            upstream.destroy();
            return resolve();
          }
          upstream.destroy();
          this.#close();
          resolve();
        };
        const onEnd = () => {
          if (framing.done) return;
          if (sent === 0) return onError(new Error("connection closed"));
          // Read-until-close bodies end here; anything else was cut short.
          this.socket.end();
          this.#gone = true;
          upstream.destroy();
          resolve();
        };
        upstream.on("data", onData);
        upstream.on("error", onError);
        upstream.on("end", onEnd);
        this.#abort = () => {
          if (framing.done) return;
          upstream.destroy();
          resolve();
        };
        upstream.write(request);
        if (!body.done) this.#streamBody(upstream, body);
      };
      attempt(true);
    });
  }
}

/**
 * Attach / exec start: the request (head, body, and whatever stdin follows) goes to the engine as
 * received, and its `101 UPGRADED` (or, without Upgrade headers, `200 OK`) and stream come back raw.
 */
async function hijack(front: Front, socket: net.Socket, buffered: Buffer, pathname: string) {
  socket.on("error", () => {});
  const target = await front.flocker.hijack(pathname);
  if (target instanceof Response) {
    const body = await target.text();
    socket.end(`HTTP/1.1 ${target.status} Error\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    return;
  }
  const upstream = front.dialFresh(target);
  upstream.write(buffered);
  splice(socket, upstream);
}

/** Copy both ways, keeping half-close: the client's EOF reaches the engine, the rest of the output still comes back. */
export function splice(socket: net.Socket | import("node:stream").Duplex, upstream: net.Socket) {
  upstream.on("error", () => socket.destroy());
  socket.pipe(upstream);
  upstream.pipe(socket);
  socket.resume();
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => {
    if (!socket.writableEnded) socket.end();
  });
}
