/**
 * Runtime glue: keep-alive connections to the engines, for the front's routed requests (and the
 * app's questions, engine-ask.ts). Each
 * connection's listeners are set once and each request plugs its exchange in, so the hot path
 * adds and removes no listeners.
 */
import type { HostAddress } from "../cluster/host.ts";
import type { StreamSocket } from "./front.ts";

/** Idle keep-alive connections kept per engine. */
const POOL_SIZE = 32;

/** What one exchange on an engine connection wants to hear. */
export interface Exchange {
  data(chunk: Buffer): void;
  error(err: Error): void;
  end(): void;
}

/** A keep-alive connection to an engine. Idle, any event closes it. */
export class EngineConnection {
  exchange?: Exchange;
  closed = false;
  /** When its last exchange ended (performance.now()). */
  lastUsed = 0;

  constructor(readonly host: HostAddress, readonly socket: StreamSocket) {
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

/** The idle connections to each engine. */
export class EnginePool {
  readonly #pools = new Map<HostAddress, EngineConnection[]>();

  /** `dial` opens a raw connection to an engine (tcp, unix or TLS). */
  constructor(private dial: (host: HostAddress) => StreamSocket) {}

  /** An idle keep-alive connection to the engine last used since `freshSince`, or a new one. */
  take(host: HostAddress, freshSince = -Infinity): { engine: EngineConnection; reused: boolean } {
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

  dialFresh(host: HostAddress): StreamSocket {
    const socket = this.dial(host);
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

  close() {
    for (const pool of this.#pools.values()) for (const e of pool) e.close();
    this.#pools.clear();
  }
}
