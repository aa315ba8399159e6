/**
 * Runtime glue: the listening socket. It reads each request head itself and
 *  - passes plain routed reads (`GET /containers/ID/json`...) byte for byte to the engine over a
 *    pooled keep-alive connection, reading only the response framing to know where it ends;
 *  - pipes hijacks sent without `Upgrade` (the legacy attach form) raw to their engine;
 *  - asks the app itself for other body-less GET/HEAD requests (ps, images, info, events...) and
 *    writes its Response out, streamed;
 *  - hands everything else (and the rest of that connection) to the node:http server behind it.
 * The fast path never parses JSON nor builds Request/Response objects; the Hono app stays the one
 * place where the Docker API is implemented. Beside it: ./http1.ts reads heads and framing,
 * ./engine-pool.ts keeps the engine connections, ./splice.ts joins two sockets.
 */
import type { Flocker, PassRoute } from "../flocker.ts";
import type { Host, HostAddress } from "../cluster/host.ts";
import { noteAppRequest, notePassed, noteStreamed } from "./memory.ts";
import { EMPTY, Framing, type Head, headEnd, headerValue, mayStartRequest, parseHead, requestOf, statusLine, withHost } from "./http1.ts";
import { SESSION_HEADER } from "../api/hijack.ts";
import { type EngineConnection, EnginePool } from "./engine-pool.ts";
import { endAndClose, gathers, lend, splice } from "./splice.ts";

/** Largest request head accepted (docker's own limit is 1 MiB; a CLI head is < 1 KiB). */
const MAX_HEAD = 64 * 1024;
const BARE_LF_END = Buffer.from("\n\n");
const notHttp = () => Response.json({ message: "malformed HTTP request" }, { status: 400 });
/** Bytes of an early-answered request's body read and dropped before the connection is ended instead. */
const DISCARD_LIMIT = 1024 * 1024;
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
  dial: (host: HostAddress) => StreamSocket;
  /** Hands a connection to the full HTTP server, with the bytes already read. */
  handOff: (socket: StreamSocket, buffered: Buffer) => void;
  /** The full HTTP server as a pseudo host: requests the fast path does not take go there. */
  api: Host;
}

/** `docker save`: GET /images/get, /images/NAME/get. */
const IMAGE_TARBALL = /^(\/v[0-9.]+)?\/images\/(.+\/)?get$/;
/** Pieces of an answer up to this size go out in one write with their framing (copied). */
const COPY_LIMIT = 16 * 1024;
const CRLF = Buffer.from("\r\n");

/** Response headers that describe one connection, not the message: never passed on. */
const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection", "te", "trailer"]);

export class Front {
  /** Keep-alive connections to the engines, shared by this thread's clients. */
  readonly engines: EnginePool;

  constructor(private options: FrontOptions) {
    this.engines = new EnginePool(options.dial);
  }

  /** The connection listener for a net.Server, a tls.Server or Bun's listener. */
  accept = (socket: StreamSocket) => {
    socket.setNoDelay(true);
    new ClientConnection(this, socket).start();
  };

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
    this.engines.close();
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
      // No request can follow (a TLS handshake on this plain port): answered now, or the client
      // would wait for an answer while we wait for a blank line.
      if (this.#buffer.length && !mayStartRequest(this.#buffer[0])) return this.#leave(() => void this.#write(notHttp(), false, true));
      // Too long (node:http answers 431), or ended by bare line feeds (it refuses those, as any
      // head with one: see Head.ambiguous): handed over now, not left waiting for a CRLF CRLF.
      if (this.#buffer.length > MAX_HEAD || this.#buffer.includes(BARE_LF_END)) this.#leave((s, b) => this.front.handOff(s, b));
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
    // Attach, exec start and BuildKit sessions, with Upgrade or in the legacy form: piped raw,
    // straight to the engine.
    if (head?.method === "POST" && this.front.flocker.isHijackPath(pathname)) {
      const session = headerValue(this.#buffer, head, SESSION_HEADER);
      return this.#leave((s, b) => void hijack(this.front, s, b, pathname, session));
    }
    if (head && head.transferEncoding !== undefined && !chunked) {
      // gzip, deflate...: dockerd's answer (node:http would close without a word).
      return this.#leave(() => void this.#write(Response.json({ message: "unsupported transfer encoding" }, { status: 501 }), false, true));
    }
    if (!head || !simple) return this.#leave((s, b) => this.front.handOff(s, head ? b : withHost(b, end)));
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
    if (sticky) this.front.engines.give(sticky);
    return this.front.engines.take(host, freshSince);
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
      // An engine's answer passed on lent leaves no buffer behind (released, or read into again,
      // once written): not counted as streamed, so a storm of routed requests sets off no
      // collection (under Deno each one shrinks the young generation, and the storm paid ~2x the
      // CPU after it), but it is activity that puts the quiet-time one off. What the full server
      // behind sends (`docker save`...) is the app's garbage: counted.
      const counted = !lend(upstream, this.socket) || host === this.front.api;
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
          if (this.#engine && this.#engine !== engine) this.front.engines.give(this.#engine);
          this.#engine = engine;
        }
        else if (ok && framing.keepAlive) this.front.engines.give(engine);
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
          if (counted) noteStreamed(chunk.length);
          else notePassed();
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
    if (this.#engine) this.front.engines.give(this.#engine);
    this.#engine = undefined;
  }
}

/**
 * Attach / exec start / BuildKit session: the request (head, body, and whatever stdin follows) goes
 * to the engine as received, and its `101 UPGRADED` (or, without Upgrade headers, `200 OK`) and
 * stream come back raw.
 */
async function hijack(front: Front, socket: StreamSocket, buffered: Buffer, pathname: string, session?: string) {
  socket.on("error", () => {});
  const target = await front.flocker.hijack(pathname, session);
  if (target instanceof Response) {
    const body = await target.text();
    socket.write(`${statusLine(target)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    return endAndClose(socket);
  }
  const upstream = front.engines.dialFresh(target);
  upstream.write(buffered);
  front.flocker.hijackStream(1);
  socket.once("close", () => front.flocker.hijackStream(-1));
  splice(socket, upstream, gathers(pathname, target));
}
