/**
 * Runtime glue: the listening socket. It reads each request head itself and
 *  - passes plain routed reads (`GET /containers/ID/json`...) byte for byte to the engine over a
 *    pooled keep-alive connection, reading only the response framing to know where it ends;
 *  - pipes hijacks sent without `Upgrade` (the legacy attach form) raw to their engine;
 *  - asks the app itself for other body-less GET/HEAD requests (ps, images, info, events...) and
 *    writes its Response out, streamed;
 *  - hands everything else (and the rest of that connection) to the node:http server behind it.
 * The fast path never parses JSON nor builds Request/Response objects; the Hono app stays the one
 * place where the Docker API is implemented.
 */
import type { Flocker, PassRoute } from "../flocker.ts";
import type { Host } from "../cluster/host.ts";
import { STATUS_CODES } from "node:http";
import { noteAppRequest, noteStreamed } from "./memory.ts";
import { DenoStream } from "./deno/socket.ts";
import { BunStream } from "./bun/socket.ts";

/** Largest request head accepted (docker's own limit is 1 MiB; a CLI head is < 1 KiB). */
const MAX_HEAD = 64 * 1024;
/** Bytes of an early-answered request's body read and dropped before the connection is ended instead. */
const DISCARD_LIMIT = 1024 * 1024;
/** Idle keep-alive connections kept per engine. */
const POOL_SIZE = 32;
/**
 * A request with a body cannot be sent again once its body has streamed, so it only takes a kept
 * connection that answered this recently (node:http closes idle ones after 5 s; dockerd keeps
 * them): not one the server may be closing as the request goes out. Older ones stay for reads.
 */
const FRESH_MS = 1000;

/**
 * The part of node:net's Socket the front uses. node:net and node:tls sockets are ones; so is
 * Bun's native socket behind ./bun/socket.ts.
 */
export interface StreamSocket {
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  on(event: "end" | "drain", listener: () => void): unknown;
  on(event: "close", listener: (hadError: boolean) => void): unknown;
  on(event: "error", listener: (err: Error) => void): unknown;
  once(event: "drain" | "close" | "data", listener: () => void): unknown;
  off(event: "data", listener: (chunk: Buffer) => void): unknown;
  off(event: "end", listener: () => void): unknown;
  off(event: "close", listener: (hadError: boolean) => void): unknown;
  write(chunk: Uint8Array | string): boolean;
  /** Half-close: no more writes, reading goes on. */
  end(chunk?: Uint8Array | string): unknown;
  destroy(): unknown;
  pause(): unknown;
  resume(): unknown;
  setNoDelay(noDelay?: boolean): unknown;
  readonly writableEnded: boolean;
}

/** What splice needs: node:http's upgraded sockets (plain Duplex streams) qualify too. */
export type Spliceable = Omit<StreamSocket, "setNoDelay">;

/**
 * What the front asks of the flock: the Flocker itself, or (in another thread) its stand-in that
 * asks the Flocker's thread. Without `fetch`, requests for the app go to `api`.
 */
export type FrontBackend = Pick<Flocker, "passThrough" | "isHijackPath" | "hijack" | "hijackStream" | "noteRequest"> & {
  fetch?: Flocker["fetch"];
};

export interface FrontOptions {
  flocker: FrontBackend;
  /** Opens a raw connection to an engine (tcp, unix or TLS). */
  dial: (host: Host) => StreamSocket;
  /** Hands a connection to the full HTTP server, with the bytes already read. */
  handOff: (socket: StreamSocket, buffered: Buffer) => void;
  /** The full HTTP server as a pseudo host: requests the fast path does not take go there. */
  api: Host;
}

interface Head {
  method: string;
  target: string;
  contentLength?: string;
  transferEncoding?: string;
  upgrade: boolean;
  connectionClose: boolean;
  /**
   * A framing header sent twice, or a line break that is not CRLF: readers may disagree on where
   * the message ends (smuggling territory), so such a request never takes the fast path.
   */
  ambiguous: boolean;
  /** Bytes of the head, blank line included. */
  length: number;
}

const EMPTY = Buffer.alloc(0);
/** `docker save`: GET /images/get, /images/NAME/get. */
const IMAGE_TARBALL = /^(\/v[0-9.]+)?\/images\/(.+\/)?get$/;
/** Pieces of an answer up to this size go out in one write with their framing (copied). */
const COPY_LIMIT = 16 * 1024;
const CRLF = Buffer.from("\r\n");
// Heads are ASCII; windows-1252 (what "latin1" decodes as) keeps every byte one character.
const latin1 = new TextDecoder("latin1");

/** Response headers that describe one connection, not the message: never passed on. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"]);

/** A web Request for a body-less request head, or undefined when it cannot be one (node:http answers it). */
function requestOf(buf: Buffer, head: Head, signal: AbortSignal): Request | undefined {
  if (!head.target.startsWith("/")) return undefined;
  try {
    const lines = latin1.decode(buf.subarray(0, head.length - 4)).split("\r\n");
    const headers = new Headers();
    for (let i = 1; i < lines.length; i++) {
      const colon = lines[i].indexOf(":");
      if (colon <= 0) return undefined;
      headers.append(lines[i].slice(0, colon), lines[i].slice(colon + 1).trim());
    }
    // A fixed origin: the Host header is the client's to send, and must not reshape the path
    // ("Host: x/containers/y" would) that the app routes and checks.
    return new Request(`http://localhost${head.target}`, { method: head.method, headers, signal });
  } catch {
    return undefined; // a header or target the Fetch API refuses
  }
}

/** The status line of an answer flocker writes itself. */
export function statusLine(res: Response): string {
  return `HTTP/1.1 ${res.status} ${res.statusText || STATUS_CODES[res.status] || "Unknown"}`;
}

const BLANK_LINE = Buffer.from("\r\n\r\n");
/** Bun searches buffers natively in ~30 ns; Deno's node:buffer search is slower than a plain loop (measured). */
const NATIVE_SEARCH = "Bun" in globalThis;

/** Where an HTTP head ends (the index of its "\r\n\r\n"), or -1. */
export function headEnd(buf: Buffer): number {
  if (NATIVE_SEARCH) return buf.indexOf(BLANK_LINE);
  const last = buf.length - 3;
  for (let i = 0; i < last; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** Bytes of a head as a string, a character each: short ones (header values) without a native call. */
function textOf(buf: Buffer, start: number, end: number): string {
  if (end - start > 32) return buf.toString("latin1", start, end);
  let text = "";
  for (let i = start; i < end; i++) text += String.fromCharCode(buf[i]);
  return text;
}

/** The headers that frame a message, values trimmed and lower-cased (all compare case-insensitively). */
interface FramingHeaders {
  "content-length"?: string;
  "transfer-encoding"?: string;
  upgrade?: string;
  connection?: string;
  /** One of them sent twice, or a bare CR or LF in the head (see Head.ambiguous). */
  ambiguous?: boolean;
}

const FRAMING_NAMES = ["content-length", "transfer-encoding", "upgrade", "connection"] as const;
const FRAMING_BYTES = FRAMING_NAMES.map((name) => Buffer.from(name));

/**
 * Read the framing headers from a head's bytes, from `from` (the start of the first header line)
 * to `end` (its blank line): a scan of the bytes, no copy of the head made.
 */
function framingHeaders(buf: Buffer, from: number, end: number): FramingHeaders {
  const found: FramingHeaders = {};
  for (let line = from; line < end;) {
    // To the line's CR (lines are short: a loop beats a native call each). A bare LF on the way,
    // or a CR without its LF, is a line break another reader may see (Go's does) where we do not.
    let eol = line;
    for (let byte; eol < end && (byte = buf[eol]) !== 13; eol++) if (byte === 10) found.ambiguous = true;
    if (eol < end && buf[eol + 1] !== 10) found.ambiguous = true;
    const first = buf[line] | 32; // lower-cased (every name here is letters and '-')
    if (first === 99 || first === 116 || first === 117) { // c, t, u
      for (let k = 0; k < FRAMING_BYTES.length; k++) {
        const name = FRAMING_BYTES[k];
        const colon = line + name.length;
        if (colon >= eol || buf[colon] !== 58) continue; // ':' right after the name
        let j = 1;
        while (j < name.length && (buf[line + j] | 32) === name[j]) j++;
        if (j < name.length || (buf[line] | 32) !== name[0]) continue;
        const key = FRAMING_NAMES[k];
        if (found[key] !== undefined) found.ambiguous = true;
        found[key] = textOf(buf, colon + 1, eol).trim().toLowerCase();
        break;
      }
    }
    line = eol + 2;
  }
  return found;
}

function parseHead(buf: Buffer, end: number): Head | undefined {
  // The request line is the one string made; the headers are read from the bytes.
  let lineEnd = 0;
  while (lineEnd < end && buf[lineEnd] !== 13) lineEnd++;
  if (lineEnd < end && buf[lineEnd + 1] !== 10) return undefined; // a bare CR
  const requestLine = textOf(buf, 0, lineEnd);
  const sp1 = requestLine.indexOf(" ");
  const sp2 = requestLine.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || requestLine.slice(sp2 + 1) !== "HTTP/1.1") return undefined;
  const method = requestLine.slice(0, sp1);
  if (!/^[A-Z]+$/.test(method)) return undefined;
  const headers = framingHeaders(buf, lineEnd + 2, end);
  return {
    method,
    target: requestLine.slice(sp1 + 1, sp2),
    contentLength: headers["content-length"],
    transferEncoding: headers["transfer-encoding"],
    upgrade: headers.upgrade !== undefined,
    connectionClose: headers.connection?.includes("close") ?? false,
    ambiguous: headers.ambiguous ?? false,
    length: end + 4,
  };
}

/** What one exchange on an engine connection wants to hear. */
interface Exchange {
  data(chunk: Buffer): void;
  error(err: Error): void;
  end(): void;
}

/**
 * A keep-alive connection to an engine, with its listeners set once: each request plugs its
 * exchange in, so the hot path adds and removes no listeners. Idle, any event closes it.
 */
class EngineConnection {
  exchange?: Exchange;
  closed = false;
  /** When its last exchange ended (performance.now()). */
  lastUsed = 0;

  constructor(readonly host: Host, readonly socket: StreamSocket) {
    socket.on("data", (chunk: Buffer) => (this.exchange ? this.exchange.data(chunk) : this.close()));
    socket.on("error", (err: Error) => (this.exchange ? this.exchange.error(err) : this.close()));
    socket.on("end", () => (this.exchange ? this.exchange.end() : this.close()));
    socket.on("close", () => {
      this.closed = true;
      this.exchange?.error(new Error("connection closed"));
    });
  }

  /** Closed by us: the exchange that closes it is done with it, and hears nothing more. */
  close() {
    this.closed = true;
    this.exchange = undefined;
    this.socket.destroy();
  }
}

export class Front {
  readonly #pools = new Map<Host, EngineConnection[]>();

  constructor(private options: FrontOptions) {}

  /** The connection listener for a net.Server, a tls.Server or Bun's listener. */
  accept = (socket: StreamSocket) => {
    socket.setNoDelay(true);
    new ClientConnection(this, socket).start();
  };

  /** An idle keep-alive connection to the engine last used since `freshSince`, or a new one. */
  take(host: Host, freshSince = -Infinity): { engine: EngineConnection; reused: boolean } {
    const pool = this.#pools.get(host);
    let engine: EngineConnection | undefined;
    while ((engine = pool?.pop())) {
      if (engine.closed) continue;
      if (engine.lastUsed >= freshSince) return { engine, reused: true };
      pool!.push(engine); // the most recent one is too old: so are the others
      break;
    }
    return { engine: new EngineConnection(host, this.dialFresh(host)), reused: false };
  }

  dialFresh(host: Host): StreamSocket {
    const socket = this.options.dial(host);
    socket.setNoDelay(true);
    return socket;
  }

  give(engine: EngineConnection) {
    engine.exchange = undefined;
    let pool = this.#pools.get(engine.host);
    if (!pool) this.#pools.set(engine.host, (pool = []));
    if (engine.closed || pool.length >= POOL_SIZE) return engine.close();
    pool.push(engine);
  }

  get flocker() {
    return this.options.flocker;
  }

  get api() {
    return this.options.api;
  }

  handOff(socket: StreamSocket, buffered: Buffer) {
    this.options.handOff(socket, buffered);
  }

  close() {
    for (const pool of this.#pools.values()) for (const e of pool) e.close();
    this.#pools.clear();
  }
}

/** Where a chunked message is: in a size line, its extension, the data, the CRLF after it, the trailers. */
const Chunk = { Size: 0, Extension: 1, Data: 2, DataEnd: 3, Trailer: 4 } as const;

/** Where a message ends: by length, by chunked framing, or at close. Bytes pass through untouched. */
export class Framing {
  #headDone = false;
  #head: Buffer = EMPTY;
  #remaining = 0;
  #mode: "length" | "chunked" | "close" | "none" = "none";
  #chunk: number = Chunk.Size;
  /** Hex digits read of the current chunk size; characters on the current trailer line. */
  #digits = 0;
  #lineLength = 0;
  keepAlive = true;
  done = false;
  /** The response's status, once its head is read (0 before). */
  status = 0;

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

  /** Feed bytes; returns how many of them belong to this message (the rest is not ours). */
  feed(chunk: Buffer): number {
    let i = 0;
    while (!this.#headDone) {
      const rest = i ? chunk.subarray(i) : chunk;
      const joined = this.#head.length ? Buffer.concat([this.#head, rest]) : rest;
      const end = headEnd(joined);
      if (end < 0) {
        this.#head = joined === rest ? Buffer.from(rest) : joined; // a copy: the chunk may be a lent buffer
        return chunk.length;
      }
      i += end + 4 - this.#head.length;
      this.#head = EMPTY;
      // An interim answer (100 Continue) passes through; the final head follows it.
      if (!this.#parseHead(joined, end)) continue;
      this.#headDone = true;
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
    return this.#chunked(chunk, i);
  }

  /** Walk chunked framing (sizes, extensions, trailers) without copying or decoding the data. */
  #chunked(chunk: Buffer, i: number): number {
    while (i < chunk.length && !this.done) {
      if (this.#chunk === Chunk.Data) {
        const take = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#chunk = Chunk.DataEnd;
        continue;
      }
      const byte = chunk[i++];
      switch (this.#chunk) {
        case Chunk.Size: {
          const digit = byte >= 48 && byte <= 57 ? byte - 48 : (byte | 32) >= 97 && (byte | 32) <= 102 ? (byte | 32) - 87 : -1;
          if (digit >= 0 && this.#digits < 12) {
            this.#remaining = this.#remaining * 16 + digit;
            this.#digits++;
          } else if (byte === 59 && this.#digits) this.#chunk = Chunk.Extension; // ';'
          else if ((byte === 13 || byte === 32 || byte === 9) && this.#digits) this.#chunk = Chunk.Extension; // LF follows
          else if (byte === 10 && this.#digits) {
            this.#chunk = Chunk.Extension; // a bare LF ends the size line too
            i--;
          }
          else this.#broken();
          break;
        }
        case Chunk.Extension:
          if (byte !== 10) break;
          this.#digits = 0;
          this.#chunk = this.#remaining === 0 ? Chunk.Trailer : Chunk.Data;
          this.#lineLength = 0;
          break;
        case Chunk.DataEnd: // the CRLF after a chunk's data
          if (byte === 10) this.#chunk = Chunk.Size;
          else if (byte !== 13) this.#broken();
          break;
        case Chunk.Trailer: // trailer lines, then an empty line
          if (byte === 10) {
            if (this.#lineLength === 0) this.done = true;
            this.#lineLength = 0;
          } else if (byte !== 13) this.#lineLength++;
          break;
      }
    }
    return i;
  }

  /** Framing we cannot follow: this message ends here, and so does its connection. */
  #broken() {
    this.keepAlive = false;
    this.done = true;
  }

  /** Read a response head; false for an interim (1xx other than 101) one, which a final head follows. */
  #parseHead(buf: Buffer, end: number): boolean {
    // "HTTP/1.1 200 OK": the status digits sit at fixed places.
    const status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + (buf[11] - 48);
    this.status = Number.isInteger(status) && status >= 100 && status <= 999 ? status : 502;
    if (status >= 100 && status < 200 && status !== 101) return false;
    let from = 12; // past "HTTP/1.1 200", to the end of the status line
    while (from < end && buf[from] !== 10) from++;
    const headers = framingHeaders(buf, from + 1, end);
    const cl = headers["content-length"];
    const length = cl === undefined ? undefined : Number(cl);
    const chunked = headers["transfer-encoding"]?.includes("chunked") ?? false;
    if (headers.connection?.includes("close")) this.keepAlive = false;
    if (this.isHead || status === 204 || status === 304 || status === 101) this.#mode = "none";
    else if (chunked) this.#mode = "chunked";
    else if (length !== undefined && Number.isSafeInteger(length) && length >= 0) {
      this.#mode = length > 0 ? "length" : "none";
      this.#remaining = length;
    } else {
      this.#mode = "close";
      this.keepAlive = false;
    }
    return true;
  }
}

class ClientConnection {
  #buffer: Buffer = EMPTY;
  /** A request is in flight: bytes that arrive meanwhile wait in the buffer (pipelining). */
  #busy = false;
  #gone = false;
  /** The client half-closed: answer what it sent, then close. */
  #ended = false;
  /** Receives a request body in flight. */
  #sink?: (chunk: Buffer) => void;
  /** Stops the request in flight when the client goes away. */
  #abort?: () => void;
  /**
   * Passes the client's FIN on to the request in flight. dockerd cancels a request whose client
   * stops sending (Go's server reads on, and EOF cancels the request): a `wait`, a `logs -f` or
   * an `events` of a CLI that was killed ends there; held here, each one kept its connections
   * (and its engine's wait) until the container exited.
   */
  #finOut?: () => void;
  /** Resumes a response waiting for the socket to drain (or to close). */
  #wake?: () => void;
  /** The engine connection this client used last: the next request to that host reuses it directly. */
  #engine?: EngineConnection;

  constructor(private front: Front, private socket: StreamSocket) {}

  start() {
    this.socket.on("data", this.#onData);
    this.socket.on("error", () => this.#close());
    this.socket.on("close", this.#onClose);
    this.socket.on("end", this.#onEnd);
  }

  #onClose = () => {
    this.#gone = true;
    this.#wakeUp();
    this.#abort?.();
    this.#release();
  };

  #onEnd = () => {
    this.#ended = true;
    if (!this.#busy) this.socket.end();
    else this.#finOut?.();
  };

  #onData = (chunk: Buffer) => {
    if (this.#sink) return this.#sink(chunk);
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : chunk;
    if (!this.#busy) this.#next();
  };

  /** Send the request body to the engine as it arrives; bytes past its end stay for the next request. */
  #streamBody(upstream: StreamSocket, body: Framing) {
    const push = (chunk: Buffer) => {
      noteStreamed(chunk.length);
      const ours = body.feed(chunk);
      if (!upstream.write(ours === chunk.length ? chunk : chunk.subarray(0, ours))) {
        this.socket.pause();
        upstream.once("drain", () => this.socket.resume());
      }
      if (body.done) {
        this.#setSink(undefined);
        if (ours < chunk.length) this.#buffer = Buffer.from(chunk.subarray(ours)); // a copy: the chunk may be lent
      }
    };
    const pending = this.#buffer;
    this.#buffer = EMPTY;
    this.#setSink(push, upstream);
    if (pending.length) push(pending);
  }

  /**
   * The rest of a body nobody reads any more (its request was answered early, e.g. refused): it is
   * read and dropped, as an engine does, so that the client gets to read the answer (closing with
   * its bytes unread would reset the connection, answer and all); then the connection goes on. Past
   * DISCARD_LIMIT bytes the connection ends instead.
   */
  #discardBody(body: Framing) {
    let dropped = 0;
    this.#setSink((chunk) => {
      const ours = body.feed(chunk);
      dropped += ours;
      if (body.done) {
        this.#setSink(undefined);
        if (ours < chunk.length) this.#buffer = Buffer.from(chunk.subarray(ours));
        if (!this.#busy) this.#next();
      } else if (dropped > DISCARD_LIMIT) {
        this.#setSink(undefined);
        this.socket.end();
        this.#gone = true;
      }
    });
    this.socket.resume(); // it may have been waiting for the engine to drain
  }

  /** While a body streams, what the client sends only passes through: its reads may lend their buffer. */
  #setSink(sink: ((chunk: Buffer) => void) | undefined, upstream?: StreamSocket) {
    this.#sink = sink;
    lend(this.socket, sink ? upstream : undefined);
  }

  #close() {
    this.#gone = true;
    this.socket.destroy();
  }

  #leave(handler: (socket: StreamSocket, buffered: Buffer) => void) {
    this.#release(); // its kept engine connection too: the close that would release it is not heard here any more
    // Only our own listeners: the server's (its connection set) must still hear the close.
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onClose);
    this.socket.pause();
    const buffered = this.#buffer;
    this.#buffer = EMPTY;
    handler(this.socket, buffered);
  }

  /** Take the next request in the buffer. Synchronous up to the engine write when the route is known. */
  #next(): void {
    if (this.#gone || this.#busy) return;
    const end = headEnd(this.#buffer);
    if (end < 0) {
      if (this.#buffer.length > MAX_HEAD) this.#leave((s, b) => this.front.handOff(s, b)); // node:http answers 431
      return;
    }
    const head = parseHead(this.#buffer, end);
    const query = head ? head.target.indexOf("?") : -1;
    const pathname = head ? (query < 0 ? head.target : head.target.slice(0, query)) : "";
    // Digits only: Number() would also take "+3", "0x10" or "1e3", which an engine refuses.
    const length = head?.contentLength === undefined ? 0 : /^\d{1,15}$/.test(head.contentLength) ? Number(head.contentLength) : NaN;
    const chunked = head?.transferEncoding === "chunked";
    const simple = head && !head.ambiguous && !head.upgrade && Number.isSafeInteger(length) && length >= 0 &&
      !(chunked && head.contentLength !== undefined) && (head.transferEncoding === undefined || chunked) &&
      !head.connectionClose;
    // Attach and exec start, with Upgrade or in the legacy form: piped raw, straight to the engine.
    if (head?.method === "POST" && this.front.flocker.isHijackPath(pathname)) {
      return this.#leave((s, b) => void hijack(this.front, s, b, pathname));
    }
    if (!head || !simple) return this.#leave((s, b) => this.front.handOff(s, b));
    this.#busy = true;
    const start = performance.now();
    const body = Framing.body(chunked, length);
    const route = this.front.flocker.passThrough(head.method, pathname);
    if (route instanceof Promise) {
      noteAppRequest(); // not a kept route: the lookup is app work (store, engines asked)
      route.then((r) => this.#dispatch(head, pathname, r, body, start));
    }
    else this.#dispatch(head, pathname, route, body, start);
  }

  #dispatch(head: Head, pathname: string, route: PassRoute, body: Framing, start: number) {
    if (this.#gone) return;
    // Usually the buffer holds this one request, and is taken whole.
    const whole = this.#buffer.length === head.length;
    const request = whole ? this.#buffer : this.#buffer.subarray(0, head.length);
    this.#buffer = whole ? EMPTY : this.#buffer.subarray(head.length);
    const isHead = head.method === "HEAD";
    if (route === undefined) {
      // A body-less read: the app answers here, and the connection goes on. Image tarballs (docker
      // save) stay on node:http: under Deno its writer holds less memory per byte than ours.
      const controller = new AbortController();
      const fetch = this.front.flocker.fetch;
      const read = fetch && (head.method === "GET" || head.method === "HEAD") && body.done && !IMAGE_TARBALL.test(pathname);
      const asked = read ? requestOf(request, head, controller.signal) : undefined;
      if (fetch && asked) {
        noteAppRequest();
        return void this.#serve(fetch, asked, controller, isHead);
      }
      // Everything else: the full app behind node:http, one request at a time over a kept-alive
      // connection to it, so the next request on this connection can take the fast path again.
      this.#pass(this.front.api, request, isHead, body, this.#done);
    } else if (route instanceof Response) {
      this.front.flocker.noteRequest(head.method, pathname, route.status, undefined, start);
      if (!body.done) return this.#leave(() => void this.#write(route, isHead, true)); // its body is never read
      void this.#write(route, isHead);
    } else {
      this.#pass(route, request, isHead, body, (status) => {
        this.front.flocker.noteRequest(head.method, pathname, status, route, start);
        this.#done();
      });
    }
  }

  /** The request in flight is answered: on to the next one, if any. */
  #done = () => {
    this.#busy = false;
    if (this.#gone) return;
    if (this.#buffer.length) return this.#next();
    if (this.#ended) this.socket.end();
  };

  /** Ask the app and write its Response out. The client going away cancels the app's work. */
  async #serve(fetch: NonNullable<FrontBackend["fetch"]>, request: Request, controller: AbortController, isHead: boolean) {
    this.#abort = () => controller.abort();
    let res: Response;
    try {
      res = await fetch(request);
    } catch (err) {
      res = Response.json({ message: `flocker: internal error: ${err instanceof Error ? err.message : String(err)}` }, { status: 500 });
    }
    if (this.#gone) return void res.body?.cancel().catch(() => {});
    return this.#write(res, isHead);
  }

  /**
   * Write a Response: with its length, or chunked as it streams (each piece goes out as it comes:
   * events, progress; HEAD gets the head only). `close`: the last answer on a connection taken off
   * the front (`Connection: close`, then the socket is ended).
   */
  async #write(res: Response, isHead: boolean, close = false) {
    const finish = () => {
      this.#abort = undefined;
      this.#finOut = undefined;
      if (close) endAndClose(this.socket);
      else this.#done();
    };
    const lines = [statusLine(res)];
    res.headers.forEach((v, k) => !HOP_BY_HOP.has(k) && lines.push(`${k}: ${v}`));
    if (close) lines.push("Connection: close");
    const hasBody = !isHead && res.status !== 204 && res.status !== 304 && res.body !== null;
    const chunked = hasBody && !res.headers.has("content-length");
    if (chunked) lines.push("Transfer-Encoding: chunked");
    else if (!isHead && !res.headers.has("content-length")) lines.push("Content-Length: 0");
    // The head goes out with the first piece of the body (one write, one packet for small answers).
    let framing = lines.join("\r\n") + "\r\n\r\n";
    if (!hasBody) {
      this.socket.write(Buffer.from(framing, "latin1"));
      void res.body?.cancel().catch(() => {});
      return finish();
    }
    const reader = res.body!.getReader();
    this.#abort = () => void reader.cancel().catch(() => {});
    // A body that is not there at once (events, progress) must not hold its head back: the client
    // waits for the head before it goes on (and may send what makes the first event happen).
    let next: Promise<ReadableStreamReadResult<Uint8Array>> | undefined = reader.read();
    const soon = await Promise.race([next.then(() => true, () => true), new Promise<false>((r) => setTimeout(() => r(false), 0))]);
    if (!soon && !this.#gone) {
      this.socket.write(Buffer.from(framing, "latin1"));
      framing = "";
      // A stream (events, progress) of a client that stopped sending ends, as dockerd ends one.
      this.#finOut = this.#abort;
      if (this.#ended) this.#finOut();
    }
    try {
      for (;;) {
        const { done, value } = await (next ?? reader.read());
        next = undefined;
        if (this.#gone) return void reader.cancel().catch(() => {});
        if (done) break;
        if (!value.length) continue;
        if (chunked) framing += `${value.length.toString(16)}\r\n`;
        const more = this.#send(framing, value, chunked ? CRLF : undefined);
        framing = "";
        if (!more) await this.#drained();
      }
    } catch {
      return this.#close(); // the app's stream failed midway: as node:http does, the connection ends
    }
    if (this.#gone) return;
    if (chunked) this.socket.write(Buffer.from(framing + "0\r\n\r\n", "latin1"));
    else if (framing) this.socket.write(Buffer.from(framing, "latin1"));
    finish();
  }

  /**
   * A piece of body with what goes before and after it: one write when the piece is small, else
   * one each (the piece itself is not copied).
   */
  #send(before: string, piece: Uint8Array, after?: Uint8Array): boolean {
    if (!before && !after) return this.socket.write(piece);
    const frame = Buffer.from(before, "latin1");
    if (piece.length <= COPY_LIMIT) return this.socket.write(Buffer.concat(after ? [frame, piece, after] : [frame, piece]));
    let more = frame.length ? this.socket.write(frame) : true;
    more = this.socket.write(piece) && more;
    return (after ? this.socket.write(after) : true) && more;
  }

  /** Resolves when the socket drains, or closes. */
  #drained(): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = resolve;
      this.socket.once("drain", () => this.#wakeUp());
    });
  }

  #wakeUp() {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #engineFor(host: Host, body: Framing): { engine: EngineConnection; reused: boolean } {
    const freshSince = body.done ? -Infinity : performance.now() - FRESH_MS;
    const sticky = this.#engine;
    this.#engine = undefined;
    if (sticky && !sticky.closed && sticky.host === host && sticky.lastUsed >= freshSince) return { engine: sticky, reused: true };
    if (sticky) this.front.give(sticky);
    return this.front.take(host, freshSince);
  }

  /**
   * One request to the engine and its response back, untouched; `done` gets the engine's status
   * (502 when it never answered). A request without a body is sent again once when a kept
   * connection turns out closed; one with a body is not (its body has gone to the dead one).
   */
  #pass(host: Host, request: Buffer, isHead: boolean, body: Framing, done: (status: number) => void) {
    const replayable = body.done;
    const attempt = (retry: boolean) => {
      const { engine, reused } = this.#engineFor(host, body);
      const upstream = engine.socket;
      lend(upstream, this.socket);
      const framing = new Framing(isHead);
      let sent = 0;
      let settled = false;
      /** The client's FIN went on to the engine: its connection is not kept, nor the request sent again. */
      let finned = false;
      const settle = () => {
        settled = true;
        engine.lastUsed = performance.now();
        engine.exchange = undefined;
        this.#abort = undefined;
        this.#finOut = undefined;
        done(framing.status || 502);
      };
      const finish = (ok: boolean) => {
        if (!body.done) {
          // Answered before the whole body came (an error): the engine connection is done with.
          engine.close();
          this.#discardBody(body);
        } else if (finned) engine.close();
        else if (ok && framing.keepAlive && !this.#gone) {
          // Kept for this client's next request; the one kept before (if this request took
          // another) goes back to the pool, not lost with its socket.
          if (this.#engine && this.#engine !== engine) this.front.give(this.#engine);
          this.#engine = engine;
        }
        else if (ok && framing.keepAlive) this.front.give(engine);
        else engine.close();
        settle();
      };
      const fail = (err: Error) => {
        if (settled) return;
        if (sent === 0 && reused && retry && replayable && !finned) {
          engine.close();
          return attempt(false);
        }
        if (sent === 0) {
          const body = JSON.stringify({ message: `flocker: host ${host.name} (${host.address}) is unreachable: ${err.message}` });
          this.socket.write(`HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
        } else this.#close();
        engine.close();
        settle();
      };
      engine.exchange = {
        data: (chunk) => {
          noteStreamed(chunk.length);
          const ours = framing.feed(chunk);
          sent += ours;
          const more = this.socket.write(ours === chunk.length ? chunk : chunk.subarray(0, ours));
          if (framing.done) return finish(ours === chunk.length);
          if (!more) {
            upstream.pause();
            this.socket.once("drain", () => upstream.resume());
          }
        },
        error: fail,
        end: () => {
          if (framing.done || settled) return;
          if (sent === 0) return fail(new Error("connection closed"));
          // Read-until-close bodies end here; anything else was cut short.
          this.socket.end();
          this.#gone = true;
          engine.close();
          settle();
        },
      };
      this.#abort = () => {
        if (settled) return;
        engine.close();
        settle();
      };
      // Not to the full server behind us: what it serves long (pulls, builds) ends by itself.
      if (host !== this.front.api) {
        this.#finOut = () => {
          finned = true;
          upstream.end();
        };
      }
      upstream.write(request);
      if (!body.done) this.#streamBody(upstream, body);
      if (this.#ended) this.#finOut?.();
    };
    attempt(true);
  }

  /** The client left: its idle engine connection goes back to the pool. */
  #release() {
    if (this.#engine) this.front.give(this.#engine);
    this.#engine = undefined;
  }
}

/**
 * Our last word on a connection taken off the front (paused): FIN, then read on, so that the
 * client's FIN is seen and the socket closes (half-open sockets are ours to close; left paused,
 * each one kept its file descriptor for good). What the client still sends is dropped.
 */
function endAndClose(socket: Spliceable) {
  socket.on("data", () => {});
  socket.end();
  socket.resume();
}

/**
 * A socket whose reads only pass on to another socket of the same runtime lends its chunks: under
 * Deno it reads into reused buffers (DenoStream.lend), under Bun each chunk is released as soon as
 * it is written (BunStream.lend). `to` undefined ends that.
 */
function lend(from: Spliceable, to: Spliceable | undefined) {
  if (from instanceof DenoStream) from.lend = to instanceof DenoStream;
  else if (from instanceof BunStream) from.lend = to instanceof BunStream;
}

/**
 * Attach / exec start: the request (head, body, and whatever stdin follows) goes to the engine as
 * received, and its `101 UPGRADED` (or, without Upgrade headers, `200 OK`) and stream come back raw.
 */
async function hijack(front: Front, socket: StreamSocket, buffered: Buffer, pathname: string) {
  socket.on("error", () => {});
  const target = await front.flocker.hijack(pathname);
  if (target instanceof Response) {
    const body = await target.text();
    socket.write(`${statusLine(target)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    return endAndClose(socket);
  }
  const upstream = front.dialFresh(target);
  upstream.write(buffered);
  front.flocker.hijackStream(1);
  socket.once("close", () => front.flocker.hijackStream(-1));
  splice(socket, upstream);
}

/** Copy both ways, keeping half-close: the client's EOF reaches the engine, the rest of the output still comes back. */
export function splice(socket: Spliceable, upstream: Spliceable) {
  const forward = (from: Spliceable, to: Spliceable) => {
    lend(from, to); // no buffer per chunk left to the collector
    from.on("data", (chunk: Buffer) => {
      noteStreamed(chunk.length);
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => to.end());
  };
  forward(socket, upstream);
  forward(upstream, socket);
  upstream.on("error", () => socket.destroy());
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => {
    if (!socket.writableEnded) socket.end();
  });
  socket.resume();
}
