/**
 * Runtime glue (Bun): the front's sockets on Bun's own TCP/unix sockets instead of its node:net
 * layer, which adds a streams machinery and a copy per write (measured with the same front:
 * `docker cp` in and `exec -i` about a tenth faster). `BunStream` speaks the part of node:net's
 * Socket the front uses, so the front stays one piece of code for every runtime.
 */
import { EventEmitter } from "node:events";
import type { StreamSocket } from "../front.ts";
import type { EngineTls } from "../host-fetch.ts";

// deno-lint-ignore no-explicit-any
type Native = any; // Bun.Socket<BunStream>: typed loosely, this file is only loaded under Bun.
// deno-lint-ignore no-explicit-any
const Bun = (globalThis as any).Bun;

/** While a lending socket's "data" listeners run: the chunk's memory, and whether a write kept a view of it. */
let lent: ArrayBufferLike | undefined;
let kept = false;

/** A Bun socket behind node:net's event and method names (data/end/close/error/drain). */
export class BunStream extends EventEmitter implements StreamSocket {
  #socket?: Native;
  /** Bytes the kernel did not take yet (or written before the connection opened). */
  #queue: Uint8Array[] = [];
  #paused = false;
  #ending = false;
  #readEnded = false;
  /** Our FIN is out (shutdown): with the peer's FIN in too, the socket is done with. */
  #writeDone = false;
  #closed = false;
  writableEnded = false;
  /**
   * Every chunk Bun reads is a fresh buffer, left to the collector: at hundreds of MB/s that is
   * a full collection every ~30 MB and a page fault per 4 KB the allocator hands back and takes
   * again. A lending socket's listeners keep nothing of a chunk (they copy what they keep) and
   * only pass it to another BunStream: once they return, the chunk's memory is released at once
   * (detached), unless that write had to queue part of it.
   */
  lend = false;

  attach(socket: Native) {
    this.#socket = socket;
    socket.data = this;
    if (this.#paused) socket.pause();
    this.#flush();
  }

  setNoDelay(noDelay = true) {
    this.#socket?.setNoDelay(noDelay);
    return this;
  }

  write(chunk: Uint8Array | string): boolean {
    if (this.writableEnded || this.#closed) return false;
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk; // utf-8, as node:net
    if (!bytes.length) return !this.#queue.length;
    if (!this.#socket || this.#queue.length) {
      this.#keep(bytes);
      return false;
    }
    const n = this.#socket.write(bytes);
    if (n >= bytes.length) return true;
    this.#keep(n > 0 ? bytes.subarray(n) : bytes);
    return false;
  }

  #keep(bytes: Uint8Array) {
    if (lent && bytes.buffer === lent) kept = true;
    this.#queue.push(bytes);
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
    if (this.#closed) return this;
    this.#queue = [];
    const socket = this.#socket;
    if (socket) socket.terminate();
    else this.#onClose(); // never connected: nothing to close but our listeners
    return this;
  }

  pause() {
    this.#paused = true;
    this.#socket?.pause();
    return this;
  }

  resume() {
    this.#paused = false;
    this.#socket?.resume();
    return this;
  }

  #flush() {
    const socket = this.#socket;
    if (!socket || this.#closed) return;
    while (this.#queue.length) {
      const head = this.#queue[0];
      const n = socket.write(head);
      if (n < head.length) {
        this.#queue[0] = n > 0 ? head.subarray(n) : head;
        return;
      }
      this.#queue.shift();
    }
    if (this.#ending) {
      this.#ending = false;
      this.#writeDone = true;
      socket.shutdown();
      // Half-open sockets are ours to close (allowHalfOpen): both ways ended, the fd goes. Closed
      // gracefully: terminate() resets, and what the peer had not read yet was lost (measured).
      if (this.#readEnded) socket.end();
    } else this.emit("drain");
  }

  #onEnd() {
    if (this.#readEnded) return;
    this.#readEnded = true;
    this.emit("end");
    if (this.#writeDone && !this.#closed) this.#socket?.end();
  }

  #onClose(err?: Error) {
    if (this.#closed) return;
    this.#closed = true;
    // A peer that closed both ways at once never sent a separate FIN event: the stream still ended.
    if (!err) this.#onEnd();
    this.emit("close", !!err);
  }

  /** Bun's handlers, shared by every socket; `socket.data` is its BunStream. */
  static handlers = {
    open(socket: Native) {
      (socket.data as BunStream).attach(socket);
    },
    data(socket: Native, chunk: Buffer) {
      const stream = socket.data as BunStream;
      if (!stream.lend || chunk.byteOffset !== 0 || chunk.buffer.byteLength !== chunk.length) return void stream.emit("data", chunk);
      lent = chunk.buffer;
      kept = false;
      try {
        stream.emit("data", chunk);
      } finally {
        lent = undefined;
      }
      if (!kept) (chunk.buffer as ArrayBuffer).transfer(0); // detached: its memory goes back now
    },
    drain(socket: Native) {
      (socket.data as BunStream).#flush();
    },
    end(socket: Native) {
      (socket.data as BunStream).#onEnd();
    },
    close(socket: Native, err?: Error) {
      (socket.data as BunStream).#onClose(err);
    },
    error(socket: Native, err: Error) {
      const stream = socket.data as BunStream;
      if (stream.listenerCount("error")) stream.emit("error", err);
    },
    connectError(socket: Native, err: Error) {
      const stream = socket.data as BunStream;
      if (stream.listenerCount("error")) stream.emit("error", err);
      stream.#onClose(err);
    },
  };
}

export type BunAddress = { hostname: string; port: number } | { unix: string };
/** ALPN in its wire form (length-prefixed): HTTP/1.1 only, never h2 (hijacking needs HTTP/1.1). */
const ALPN_HTTP1 = new Uint8Array([8, ...new TextEncoder().encode("http/1.1")]);
/** TLS for clients (PEM). */
export type ServerTls = { cert: string; key: string; ca?: string };

/**
 * Accept connections with Bun.listen; `accept` gets each as a BunStream. `reusePort`: several
 * threads listen on one port and the kernel spreads connections over them.
 */
export function listenBun(address: BunAddress, accept: (socket: BunStream) => void, reusePort = false, tls?: ServerTls): { port?: number; stop: () => void } {
  const listener = Bun.listen({
    ...address,
    ...(reusePort && { reusePort: true }),
    // With a CA, like dockerd --tlsverify: a client without a certificate it signed is refused.
    ...(tls && { tls: { cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: !!tls.ca, rejectUnauthorized: !!tls.ca, ALPNProtocols: ALPN_HTTP1 } }),
    allowHalfOpen: true,
    socket: {
      ...BunStream.handlers,
      open(socket: Native) {
        const stream = new BunStream();
        stream.attach(socket);
        accept(stream);
      },
    },
  });
  return { port: listener.port, stop: () => listener.stop(true) };
}

/** A TLS handshake that failed: Bun closes the socket (rejectUnauthorized) without saying why. */
function handshake(socket: Native, ok: boolean, err?: Error) {
  const stream = socket.data as BunStream;
  if (!ok && stream.listenerCount("error")) stream.emit("error", err ?? new Error("TLS handshake failed"));
}

/**
 * Connect with Bun.connect (with `tls`: over TLS, as the docker CLI talks to a --tlsverify
 * engine); writes made before the connection opens, or before its handshake, are queued.
 */
export function connectBun(address: BunAddress, tls?: EngineTls): BunStream {
  const stream = new BunStream();
  Bun.connect({
    ...address,
    ...(tls && { tls: { ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: true, ALPNProtocols: ALPN_HTTP1 } }),
    allowHalfOpen: true,
    data: stream,
    socket: tls ? { ...BunStream.handlers, handshake } : BunStream.handlers,
  }).catch(() => {});
  return stream;
}
