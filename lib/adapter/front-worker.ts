/**
 * Runtime glue: a front thread (a Worker started by front-threads.ts). It listens on the server's
 * port beside the others and serves the front's fast path itself; the Flocker's thread answers
 * what it cannot know (see ToMain / ToWorker).
 */
import type { PassRoute } from "../flocker.ts";
import { type Host, type HostAddress, newHostStatus } from "../cluster/host.ts";
import { isHijackPath } from "../api/hijack.ts";
import type { FrontBackend, StreamSocket } from "./front.ts";
import { frontOver, native } from "./native.ts";
import { collectIfDirty, onCollectUnderPressure } from "./memory.ts";
import type { Count, Note, ThreadInit, ToMain, ToWorker, WireResponse, WireRoute } from "./front-threads.ts";

/** The worker's side of the message channel. */
const port = globalThis as unknown as {
  postMessage(message: ToMain): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
};

/** Routes kept before the map starts over (as on the Flocker's thread). */
const ROUTE_CACHE_SIZE = 10_000;
/** Requests are reported in batches, at most this long after they were answered. */
const NOTES_DELAY_MS = 10;

const NULL_BODY = new Set([101, 204, 205, 304]);

function responseOf(wire: WireResponse, body: BodyInit | null): Response {
  return new Response(NULL_BODY.has(wire.status) ? null : body, { status: wire.status, statusText: wire.statusText, headers: wire.headers });
}

/** The Flocker as seen from this thread: kept routes answer at once, the rest is asked. */
class RemoteBackend implements FrontBackend {
  #generation: number;
  readonly #routes = new Map<string, Host>();
  /** Hosts by address: one object each, so the front's connection pools are kept per engine. */
  readonly #hosts = new Map<string, Host>();
  readonly #pending = new Map<number, (route: WireRoute, generation: number) => void>();
  readonly #streams = new Map<number, {
    head: (message: WireResponse) => void;
    chunk: (data: Uint8Array) => void;
    end: () => void;
    fail: (message: string) => void;
  }>();
  #seq = 0;
  #notes: Note[] = [];
  /** Requests to count, by "status method pathname". */
  #counts = new Map<string, number>();
  #notesTimer?: ReturnType<typeof setTimeout>;
  /** Client connections accepted, and closed, since the last report. */
  #connections = 0;
  #closed = 0;

  constructor(generation: number, private noteFrom: number) {
    this.#generation = generation;
  }

  isHijackPath = isHijackPath;

  passThrough = (method: string, pathname: string): PassRoute | Promise<PassRoute> => {
    const key = method + pathname;
    const kept = this.#routes.get(key);
    if (kept) return kept;
    return this.#ask({ t: "route", id: 0, method, pathname }).then(({ route, generation }) => {
      const result = this.#routeOf(route);
      if (route.kind === "host" && route.keep && generation === this.#generation) {
        if (this.#routes.size >= ROUTE_CACHE_SIZE) this.#routes.clear();
        this.#routes.set(key, result as Host);
      }
      return result;
    });
  };

  hijack = (pathname: string, session?: string): Promise<Host | Response> =>
    this.#ask({ t: "hijack", id: 0, pathname, session }).then(({ route }) => this.#routeOf(route) ?? Response.json({ message: "page not found" }, { status: 404 }));

  hijackStream = (delta: 1 | -1) => port.postMessage({ t: "streams", delta });

  noteRequest = (method: string, pathname: string, status: number, host: Host | undefined, startMs: number) => {
    // A wait's end matters at once to the Flocker's thread (a failed start is held until it).
    const now = method !== "GET" && method !== "HEAD";
    if (now || status >= this.noteFrom) this.#notes.push([method, pathname, status, host?.name ?? null, performance.now() - startMs]);
    else {
      const key = `${status} ${method} ${pathname}`;
      this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    }
    if (now) return this.#flushNotes();
    this.#notesTimer ??= setTimeout(() => this.#flushNotes(), NOTES_DELAY_MS);
  };

  noteConnection(opened: 0 | 1, closed: 0 | 1) {
    this.#connections += opened;
    this.#closed += closed;
    this.#notesTimer ??= setTimeout(() => this.#flushNotes(), NOTES_DELAY_MS);
  }

  /** The app, on the Flocker's thread: its answer streams back piece by piece. */
  fetch = (request: Request): Promise<Response> => {
    const id = ++this.#seq;
    const url = new URL(request.url);
    return new Promise<Response>((resolve, reject) => {
      let body!: ReadableStreamDefaultController<Uint8Array>;
      const cancel = () => {
        if (!this.#streams.delete(id)) return;
        port.postMessage({ t: "cancel", id });
      };
      const stream = new ReadableStream<Uint8Array>({ start: (c) => void (body = c), cancel });
      request.signal.addEventListener("abort", () => {
        cancel();
        reject(new Error("aborted"));
      });
      this.#streams.set(id, {
        head: (message) => resolve(responseOf(message, stream)),
        chunk: (data) => body.enqueue(data),
        end: () => {
          this.#streams.delete(id);
          body.close();
        },
        fail: (message) => {
          this.#streams.delete(id);
          body.error(new Error(message));
          reject(new Error(message));
        },
      });
      port.postMessage({ t: "fetch", id, method: request.method, target: url.pathname + url.search, headers: [...request.headers] });
    });
  };

  receive(message: ToWorker) {
    switch (message.t) {
      case "generation":
        this.#generation = message.generation;
        this.#routes.clear();
        return;
      case "collect":
        return collectIfDirty();
      case "route": {
        const answer = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        return answer?.(message.route, message.generation);
      }
      case "head":
        return this.#streams.get(message.id)?.head(message);
      case "chunk":
        return this.#streams.get(message.id)?.chunk(message.data);
      case "end":
        return this.#streams.get(message.id)?.end();
      case "fail":
        return this.#streams.get(message.id)?.fail(message.message);
    }
  }

  #ask(message: Extract<ToMain, { t: "route" | "hijack" }>): Promise<{ route: WireRoute; generation: number }> {
    const id = ++this.#seq;
    return new Promise((resolve) => {
      this.#pending.set(id, (route, generation) => resolve({ route, generation }));
      port.postMessage({ ...message, id });
    });
  }

  #routeOf(route: WireRoute): Host | Response | undefined {
    if (route.kind === "app") return undefined;
    if (route.kind === "answer") return responseOf(route, route.body);
    return this.#host(route.host);
  }

  #host(address: HostAddress): Host {
    let host = this.#hosts.get(address.address);
    if (!host) {
      host = { ...address, status: newHostStatus(), fetch: () => Promise.reject(new Error("not fetched")) };
      this.#hosts.set(address.address, host);
    }
    return host;
  }

  #flushNotes() {
    if (this.#notesTimer !== undefined) clearTimeout(this.#notesTimer);
    this.#notesTimer = undefined;
    if (!this.#notes.length && !this.#counts.size && !this.#connections && !this.#closed) return;
    const counts: Count[] = [];
    for (const [key, n] of this.#counts) {
      const [status, method, pathname] = key.split(" ", 3);
      counts.push([method, pathname, Number(status), n]);
    }
    port.postMessage({ t: "notes", notes: this.#notes, counts, connections: this.#connections, closed: this.#closed });
    this.#notes = [];
    this.#counts.clear();
    this.#connections = 0;
    this.#closed = 0;
  }
}

function start(init: ThreadInit, generation: number, noteFrom: number): RemoteBackend {
  const backend = new RemoteBackend(generation, noteFrom);
  onCollectUnderPressure(() => port.postMessage({ t: "collect" } satisfies ToMain));
  const front = frontOver(backend, init.apiPath, init.engineTls);
  if (!native) throw new Error("front threads need Bun's or Deno's sockets");
  native.listen(init.listen, (socket: StreamSocket) => {
    backend.noteConnection(1, 0);
    socket.on("close", () => backend.noteConnection(0, 1));
    front.accept(socket);
  }, true, init.tls);
  return backend;
}

let backend: RemoteBackend | undefined;
port.onmessage = (event) => {
  const message = event.data;
  if (message.t !== "init") return backend?.receive(message);
  try {
    backend = start(message.init, message.generation, message.noteFrom);
    port.postMessage({ t: "listening" });
  } catch (err) {
    port.postMessage({ t: "failed", message: err instanceof Error ? err.message : String(err) });
  }
};
