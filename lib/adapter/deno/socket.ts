/**
 * Runtime glue (Deno): the front's sockets on Deno's own connections (Deno.listen/Deno.connect)
 * instead of its node:net layer. That layer hands out buffers the collector does not account for:
 * a 1 GB `docker exec` through it grew flocker to 400 MB, while reads into buffers allocated here
 * keep the heap in charge (and skip a compatibility layer per chunk). `DenoStream` speaks the part
 * of node:net's Socket the front uses, so the front stays one piece of code for every runtime.
 */
import { EventEmitter } from "node:events";
import { Buffer } from "node:buffer";
import type { StreamSocket } from "../front.ts";
import type { EngineTls } from "../host-fetch.ts";
import type { ServerTls } from "../bun/socket.ts";

// deno-lint-ignore no-explicit-any
type Conn = any; // Deno.Conn: typed loosely, this file is only loaded under Deno.
// deno-lint-ignore no-explicit-any
const Deno = (globalThis as any).Deno;

/** Bytes read at once; a read that fills less than SMALL of it is copied out and the buffer kept. */
const READ_SIZE = 256 * 1024;
const SMALL = 16 * 1024;
/**
 * A connection's first read buffer: most (requests, routed answers, the app's questions) never
 * need more, and a buffer the allocator hands out of its heap is zeroed, so all of it resident:
 * 256 KB each for the engine connections kept idle put Deno's RSS ~5 MB up. A read that fills it
 * moves the connection to READ_SIZE.
 */
const FIRST_READ_SIZE = SMALL;
/** Queued bytes past which write() asks the producer to wait for "drain", as node's sockets do. */
const HIGH_WATER = 64 * 1024;

/**
 * Reads a connection's next bytes into `buf` (0 at its end). Deno's `conn.read` adds each
 * pending read to a Set on the connection and deletes it after; the Set's table outlives the young
 * generation, and V8 reallocates it in the old one on every change: ~130 bytes of old-generation
 * garbage per read. At thousands of routed requests a second that meant a full collection every
 * half second, which arms V8's memory reducer: a pause later it shrinks the heap, and the next
 * burst paid ~2x the CPU per request (measured: old space grew 410 KB between two scavenges with
 * nothing promoted; a sampling heap profile put 3.8 MB of 6 s in that delete). Deno's own op under
 * it, when reachable (internals: absent, `conn.read` it is), reads without the Set.
 */
function readerOf(conn: Conn): (buf: Uint8Array) => Promise<number> {
  const core = Deno[Deno.internal]?.core;
  const ridSymbol = Object.getOwnPropertySymbols(conn).find((s) => s.description === "Deno.internal.rid");
  const rid = ridSymbol && conn[ridSymbol];
  if (typeof core?.read !== "function" || typeof rid !== "number") return async (buf) => (await conn.read(buf)) ?? 0;
  return (buf) => core.read(rid, buf);
}

/**
 * A read buffer lent to writers: how many of their writes of it are still queued. The reader
 * reads into it again once none are (no promise per write: a counter, and one promise only when
 * the reader has to wait).
 */
class Loan {
  pending = 0;
  #back?: () => void;
  /** A writer's write of the buffer went out (or was dropped with its socket). */
  readonly release = () => {
    if (--this.pending > 0 || !this.#back) return;
    const back = this.#back;
    this.#back = undefined;
    back();
  };
  /** Resolves once no write of the buffer is queued; undefined when none is now. */
  returned(): Promise<void> | undefined {
    return this.pending > 0 ? new Promise<void>((r) => (this.#back = r)) : undefined;
  }
}

/** While a lending socket's "data" listeners run: its read buffer, and its loan. */
let lent: ArrayBufferLike | undefined;
let loan: Loan | undefined;

export class DenoStream extends EventEmitter implements StreamSocket {
  #conn?: Conn;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #writing = false;
  #wantDrain = false;
  #ending = false;
  #writeDone = false;
  #readDone = false;
  #paused = false;
  #wake?: () => void;
  #closed = false;
  /** Called when the queue has gone out (the loans of lent chunks in it). */
  #flushed: (() => void)[] = [];
  writableEnded = false;
  /**
   * Lend the read buffer: "data" chunks are views of reused buffers, valid while the listeners
   * run; when they write a chunk to another DenoStream, its buffer is read into again only once
   * that write is out (two buffers take turns, so reading and writing overlap). Only
   * for listeners that keep nothing (no per-read buffer, so nothing for the collector to lag on).
   */
  lend = false;

  attach(conn: Conn) {
    this.#conn = conn;
    if (this.#closed) return void this.#closeConn();
    void this.#read();
    this.#flush();
  }

  setNoDelay(noDelay = true) {
    try {
      this.#conn?.setNoDelay?.(noDelay);
    } catch {
      // unix sockets have no Nagle to turn off
    }
    return this;
  }

  write(chunk: Uint8Array | string): boolean {
    if (this.writableEnded || this.#closed) return false;
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk; // utf-8, as node:net
    if (bytes.length) {
      if (loan && bytes.buffer === lent) {
        loan.pending++;
        this.#flushed.push(loan.release);
      }
      this.#queue.push(bytes);
      this.#queued += bytes.length;
      this.#flush();
    }
    if (this.#queued < HIGH_WATER) return true;
    this.#wantDrain = true;
    return false;
  }

  /** Half-close: FIN once everything queued is out; reading goes on. */
  end(chunk?: Uint8Array | string) {
    if (chunk !== undefined) this.write(chunk);
    this.writableEnded = true;
    this.#ending = true;
    this.#flush();
    return this;
  }

  destroy() {
    this.#close(false);
    return this;
  }

  pause() {
    this.#paused = true;
    return this;
  }

  resume() {
    this.#paused = false;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
    return this;
  }

  async #read() {
    const read = readerOf(this.#conn);
    // Two buffers when they are lent: one is read into while the other is still being written.
    let size = FIRST_READ_SIZE;
    const bufs = [new Uint8Array(size)];
    const loans = [new Loan(), new Loan()];
    let k = 0;
    try {
      for (;;) {
        if (this.#paused) await new Promise<void>((r) => (this.#wake = r));
        if (this.#closed) return;
        const back = loans[k].returned();
        if (back) await back;
        // A buffer outgrown (its writes are out: the loan came back) is left to the collector.
        if (bufs[k].length < size) bufs[k] = new Uint8Array(size);
        const buf = bufs[k];
        const n = await read(buf);
        if (this.#closed) return;
        if (n === 0) break;
        if (n === buf.length) size = READ_SIZE;
        if (this.#paused) await new Promise<void>((r) => (this.#wake = r));
        if (this.#closed) return;
        if (this.lend) {
          lent = buf.buffer;
          loan = loans[k];
          try {
            this.emit("data", Buffer.from(buf.buffer, 0, n));
          } finally {
            lent = undefined;
            loan = undefined;
          }
          k ^= 1;
          bufs[k] ??= new Uint8Array(size);
          continue;
        }
        if (n < SMALL) this.emit("data", Buffer.from(buf.subarray(0, n))); // a copy: the buffer is read into again
        else {
          bufs[k] = new Uint8Array(size); // handed out as is: the next read gets a new buffer
          this.emit("data", Buffer.from(buf.buffer, 0, n));
        }
      }
    } catch (err) {
      return this.#fail(err as Error);
    }
    this.#readDone = true;
    this.emit("end");
    if (this.#writeDone) this.#close(false);
  }

  /**
   * Write the queue out, one write in flight at a time, then the FIN if asked. Chained callbacks
   * rather than an async loop: no coroutine and promise per flush (a third of what a routed request
   * allocated under Deno, measured).
   */
  #flush() {
    if (!this.#conn || this.#writing || this.#closed) return;
    this.#writing = true;
    this.#pump();
  }

  #pump() {
    if (this.#closed) return void (this.#writing = false);
    const conn = this.#conn;
    try {
      const head = this.#queue[0];
      if (head) return void conn.write(head).then(this.#wrote, this.#failWrite);
      if (this.#ending && !this.#writeDone) {
        this.#writeDone = true;
        return void conn.closeWrite().then(this.#finSent, this.#failWrite);
      }
    } catch (err) {
      return this.#failWrite(err as Error);
    }
    this.#writing = false;
    this.#settleFlushed();
    if (this.#wantDrain) {
      this.#wantDrain = false;
      this.emit("drain");
    }
  }

  #wrote = (n: number) => {
    if (this.#closed) return void (this.#writing = false);
    this.#queued -= n;
    const head = this.#queue[0];
    if (n < head.length) this.#queue[0] = head.subarray(n);
    else this.#queue.shift();
    this.#pump();
  };

  #finSent = () => {
    if (!this.#readDone) return this.#pump();
    this.#writing = false;
    this.#close(false);
  };

  #failWrite = (err: Error) => {
    this.#writing = false;
    this.#fail(err);
  };

  #settleFlushed() {
    if (!this.#flushed.length) return;
    const flushed = this.#flushed;
    this.#flushed = [];
    for (const resolve of flushed) resolve();
  }

  #fail(err: Error) {
    if (this.#closed) return;
    if (this.listenerCount("error")) this.emit("error", err);
    this.#close(true);
  }

  #close(hadError: boolean) {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#settleFlushed();
    this.#closeConn();
    this.resume(); // a paused reader wakes up to see it is closed
    this.emit("close", hadError);
  }

  #closeConn() {
    try {
      this.#conn?.close();
    } catch {
      // already closed
    }
  }
}

export type DenoAddress = { hostname: string; port: number } | { path: string };

function denoAddress(address: DenoAddress) {
  return "path" in address ? { transport: "unix", path: address.path } : { transport: "tcp", ...address };
}

/**
 * Accept connections with Deno.listen (with `tls`: Deno.listenTls, which serves TLS but asks no
 * client certificate: with a CA to check them, node:tls serves instead); `accept` gets each as a
 * DenoStream.
 */
export function listenDeno(address: DenoAddress, accept: (socket: DenoStream) => void, reusePort = false, tls?: ServerTls): { port?: number; stop: () => void } {
  const options = { ...denoAddress(address), ...(reusePort && { reusePort: true }) };
  const listener = tls && !("path" in address)
    ? Deno.listenTls({ ...options, cert: tls.cert, key: tls.key, alpnProtocols: ["http/1.1"] }) // never h2: hijacking needs HTTP/1.1
    : Deno.listen(options);
  void (async () => {
    try {
      for await (const conn of listener) {
        const stream = new DenoStream();
        stream.attach(conn);
        accept(stream);
      }
    } catch {
      // the listener was closed
    }
  })();
  return { port: listener.addr.port, stop: () => listener.close() };
}

/**
 * Connect with Deno.connect (with `tls`: Deno.connectTls, as the docker CLI talks to a
 * --tlsverify engine); writes made before the connection opens are queued.
 */
export function connectDeno(address: DenoAddress, tls?: EngineTls): DenoStream {
  const stream = new DenoStream();
  const connecting = tls && !("path" in address)
    ? Deno.connectTls({ ...address, caCerts: tls.ca ? [tls.ca] : undefined, cert: tls.cert, key: tls.key, alpnProtocols: ["http/1.1"] })
    : Deno.connect(denoAddress(address));
  connecting.then(
    (conn: Conn) => stream.attach(conn),
    (err: Error) => {
      if (stream.listenerCount("error")) stream.emit("error", err);
      stream.destroy();
    },
  );
  return stream;
}

/** The TCP handle under a node:tls socket in Deno (an internal: absent, the socket stays as it is). */
type TcpHandle = { readStop(): number; readStart(): number };

/**
 * A node:tls server socket (Deno serves mTLS clients on node:tls: Deno.listenTls asks no client
 * certificate), paused at its TCP handle instead of its TLS layer. Deno's TLS layer drops a FIN
 * that comes while it has stopped reading (pause(), or a full read buffer): the end of an `exec -i`
 * stdin that had to wait for the engine never reached it and the CLI hung (1 MB of stdin was
 * enough). Stopped at the TCP reads, the TLS layer still reads what has come, FIN included; what
 * it hands over while paused waits here.
 */
export class DenoTlsStream extends EventEmitter implements StreamSocket {
  #queue: Buffer[] = [];
  #paused = false;
  #endPending = false;

  private constructor(private socket: StreamSocket, private tcp: TcpHandle) {
    super();
    socket.on("data", (chunk: Buffer) => (this.#paused ? this.#queue.push(chunk) : this.emit("data", chunk)));
    socket.on("end", () => (this.#paused ? (this.#endPending = true) : this.emit("end")));
    socket.on("drain", () => this.emit("drain"));
    socket.on("error", (err: Error) => this.listenerCount("error") && this.emit("error", err));
    socket.on("close", (hadError: boolean) => this.emit("close", hadError));
  }

  /** The socket itself when its TCP handle is not where this Deno keeps it. */
  static over(socket: StreamSocket): StreamSocket {
    // deno-lint-ignore no-explicit-any
    const tcp = (socket as any)._handle?._nativeTcpHandle as TcpHandle | undefined;
    return typeof tcp?.readStop === "function" && typeof tcp.readStart === "function" ? new DenoTlsStream(socket, tcp) : socket;
  }

  get writableEnded() {
    return this.socket.writableEnded;
  }

  write(chunk: Uint8Array | string): boolean {
    return this.socket.write(chunk);
  }

  end(chunk?: Uint8Array | string) {
    this.socket.end(chunk);
    return this;
  }

  destroy() {
    this.socket.destroy();
    return this;
  }

  setNoDelay(noDelay = true) {
    this.socket.setNoDelay(noDelay);
    return this;
  }

  pause() {
    if (!this.#paused) {
      this.#paused = true;
      this.tcp.readStop();
    }
    return this;
  }

  resume() {
    if (!this.#paused) return this;
    this.#paused = false;
    // What came while paused first; a listener may pause again on the way.
    while (this.#queue.length && !this.#paused) this.emit("data", this.#queue.shift()!);
    if (this.#paused) return this;
    if (this.#endPending) {
      this.#endPending = false;
      this.emit("end");
    } else this.tcp.readStart();
    return this;
  }
}
