/**
 * Runtime glue: more threads for the front. One JavaScript thread tops out below a C proxy on
 * routed requests; Workers listening on the same port (SO_REUSEPORT) each run a front of their
 * own. The Flocker (store, inventory, app) stays on this thread: a worker asks it for what it
 * does not know (routes, hijack targets, app answers) over messages, keeps the routes this
 * thread keeps (full ids) until the cluster's generation changes, and reports its requests.
 */
import type { Flocker, PassRoute } from "../flocker.ts";
import type { Host, HostAddress } from "../cluster/host.ts";
import type { EngineTls } from "./host-fetch.ts";
import type { ServerTls } from "./bun/socket.ts";
import { collectIfDirty, noteAppRequest, onCollectUnderPressure } from "./memory.ts";

export interface ThreadInit {
  listen: { host: string; port: number };
  /** The unix socket of the full HTTP server (node:http + app) on the Flocker's thread. */
  apiPath: string;
  engineTls?: EngineTls;
  /** TLS for clients, when the server serves TLS (each thread's listener does the handshakes). */
  tls?: ServerTls;
}

/** An answer crossing threads. */
export interface WireResponse {
  status: number;
  statusText: string;
  headers: [string, string][];
}

export type WireRoute =
  | { kind: "app" }
  | { kind: "host"; host: HostAddress; keep: boolean }
  | ({ kind: "answer"; body: ArrayBuffer } & WireResponse);

/** A request the front took itself: method, pathname, status, host name, milliseconds. */
export type Note = [string, string, number, string | null, number];
/** Requests that need no log line, counted: method, pathname, status, how many. */
export type Count = [string, string, number, number];

export type ToMain =
  | { t: "listening" }
  | { t: "failed"; message: string }
  | { t: "route"; id: number; method: string; pathname: string }
  | { t: "hijack"; id: number; pathname: string; session?: string }
  | { t: "fetch"; id: number; method: string; target: string; headers: [string, string][] }
  | { t: "cancel"; id: number }
  | { t: "notes"; notes: Note[]; counts: Count[]; connections: number; closed: number }
  | { t: "streams"; delta: 1 | -1 }
  | { t: "collect" };

export type ToWorker =
  /** `noteFrom`: requests with this status or above are reported one by one (logged), the rest counted. */
  | { t: "init"; init: ThreadInit; generation: number; noteFrom: number }
  | { t: "generation"; generation: number }
  | { t: "route"; id: number; generation: number; route: WireRoute }
  | ({ t: "head"; id: number } & WireResponse)
  | { t: "chunk"; id: number; data: Uint8Array }
  | { t: "end"; id: number }
  | { t: "fail"; id: number; message: string }
  | { t: "collect" };

/** How long a worker may take to listen before the server goes on without it. */
const START_TIMEOUT_MS = 10_000;

export function addressOf(host: Host): HostAddress {
  return { name: host.name, address: host.address, baseUrl: host.baseUrl, dial: host.dial, tls: host.tls };
}

async function wireResponse(res: Response): Promise<WireResponse & { body: ArrayBuffer }> {
  return { status: res.status, statusText: res.statusText, headers: [...res.headers], body: await res.arrayBuffer() };
}

interface WorkerState {
  worker: Worker;
  /** Its number in the metrics (the main thread is 0). */
  thread: number;
  /** App answers streaming to the worker, by request id: aborted when its client goes. */
  fetches: Map<number, AbortController>;
}

export class FrontThreads {
  readonly #workers = new Set<WorkerState>();
  #unsubscribe?: () => void;
  #closed = false;

  constructor(private flocker: Flocker, private init: ThreadInit) {}

  /** Start `count` workers; resolves once each listens (or failed, logged: the server goes on without it). */
  async start(count: number): Promise<void> {
    this.#unsubscribe = this.flocker.cluster.onGeneration((generation) => this.#broadcast({ t: "generation", generation }));
    onCollectUnderPressure(() => this.#broadcast({ t: "collect" }));
    await Promise.all(Array.from({ length: count }, (_, i) => this.#spawn(i + 1)));
  }

  close() {
    this.#closed = true;
    this.#unsubscribe?.();
    for (const w of this.#workers) {
      for (const c of w.fetches.values()) c.abort();
      w.worker.terminate();
    }
    this.#workers.clear();
  }

  #broadcast(message: ToWorker) {
    for (const w of this.#workers) w.worker.postMessage(message);
  }

  /** Start the worker numbered `thread` (its label in the metrics). */
  #spawn(thread: number): Promise<void> {
    // The worker's module sits beside this one, as source (.ts) or bundled (.js: see the Dockerfile).
    const worker = new Worker(new URL(`./front-worker.${import.meta.url.endsWith(".js") ? "js" : "ts"}`, import.meta.url).href, { type: "module" });
    const state: WorkerState = { worker, thread, fetches: new Map() };
    const log = this.flocker.logger;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        log.log("warn", "front thread did not start", { timeoutMs: START_TIMEOUT_MS });
        worker.terminate();
        resolve();
      }, START_TIMEOUT_MS);
      worker.onmessage = (event: MessageEvent<ToMain>) => {
        const message = event.data;
        if (message.t === "listening") {
          clearTimeout(timer);
          this.#workers.add(state);
          return resolve();
        }
        if (message.t === "failed") {
          clearTimeout(timer);
          log.log("warn", "front thread did not start", { error: message.message });
          worker.terminate();
          return resolve();
        }
        this.#answer(state, message);
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault?.();
        clearTimeout(timer);
        log.log("error", "front thread failed", { thread, error: event.message });
        const wasServing = this.#workers.delete(state);
        for (const c of state.fetches.values()) c.abort();
        this.flocker.telemetry.frontConnectionsOpen[thread] = 0; // its sockets went with it
        worker.terminate();
        resolve();
        // Its listener is gone with it (the kernel sends new connections to the others): one that
        // served is replaced; one that never started (its module missing...) is not retried.
        if (wasServing && !this.#closed) setTimeout(() => !this.#closed && void this.#spawn(thread), 1000);
      };
      const noteFrom = Math.min(this.flocker.logger.minStatus, 500); // 5xx are kept as recent errors
      worker.postMessage({ t: "init", init: this.init, generation: this.flocker.cluster.generation, noteFrom } satisfies ToWorker);
    });
  }

  #answer(state: WorkerState, message: ToMain) {
    const post = (reply: ToWorker, transfer: Transferable[] = []) => state.worker.postMessage(reply, transfer);
    const flocker = this.flocker;
    switch (message.t) {
      case "route": {
        const generation = flocker.cluster.generation;
        const route = flocker.passThrough(message.method, message.pathname);
        if (route instanceof Promise) noteAppRequest(); // a lookup: app work on this thread
        void Promise.resolve(route)
          .then((route) => this.#wireRoute(route, flocker.routeKept(message.method, message.pathname)))
          .catch(internalAnswer)
          .then((route) => post({ t: "route", id: message.id, generation, route }, route.kind === "answer" ? [route.body] : []));
        return;
      }
      case "hijack":
        void flocker.hijack(message.pathname, message.session)
          .then((target) => this.#wireRoute(target, false))
          .catch(internalAnswer)
          .then((route) => post({ t: "route", id: message.id, generation: 0, route }, route.kind === "answer" ? [route.body] : []));
        return;
      case "fetch":
        return void this.#fetch(state, message, post);
      case "cancel":
        state.fetches.get(message.id)?.abort();
        state.fetches.delete(message.id);
        return;
      case "notes": {
        const now = performance.now();
        for (const [method, pathname, status, name, ms] of message.notes) {
          flocker.noteRequest(method, pathname, status, name === null ? undefined : flocker.cluster.byName(name), now - ms);
        }
        for (const [method, pathname, status, n] of message.counts) flocker.telemetry.countRequests(method, pathname, status, n);
        if (message.connections || message.closed) flocker.telemetry.noteConnections(state.thread, message.connections, message.closed);
        return;
      }
      case "streams":
        return flocker.hijackStream(message.delta);
      case "collect": // a worker collected under pressure: this thread and the others collect too
        collectIfDirty();
        return this.#broadcast({ t: "collect" });
    }
  }

  async #wireRoute(route: PassRoute, keep: boolean): Promise<WireRoute> {
    if (route === undefined) return { kind: "app" };
    if (route instanceof Response) return { kind: "answer", ...(await wireResponse(route)) };
    return { kind: "host", host: addressOf(route), keep };
  }

  /** An app answer for a worker's client, streamed piece by piece (events, progress). */
  async #fetch(state: WorkerState, message: Extract<ToMain, { t: "fetch" }>, post: (reply: ToWorker, transfer?: Transferable[]) => void) {
    const { id } = message;
    noteAppRequest(); // the app's garbage is made on this thread
    const controller = new AbortController();
    state.fetches.set(id, controller);
    let res: Response;
    try {
      res = await this.flocker.fetch(new Request(`http://localhost${message.target}`, { method: message.method, headers: message.headers, signal: controller.signal }));
    } catch (err) {
      res = new Response(internalError(err), { status: 500, headers: { "content-type": "application/json" } });
    }
    if (controller.signal.aborted) {
      void res.body?.cancel().catch(() => {});
      return;
    }
    post({ t: "head", id, status: res.status, statusText: res.statusText, headers: [...res.headers] });
    if (res.body) {
      const reader = res.body.getReader();
      controller.signal.addEventListener("abort", () => void reader.cancel().catch(() => {}));
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done || controller.signal.aborted) break;
          // A copy of its own, handed over: the piece may be a view of a shared pool.
          const data = value.slice();
          post({ t: "chunk", id, data }, [data.buffer as ArrayBuffer]);
        }
      } catch (err) {
        if (!controller.signal.aborted) post({ t: "fail", id, message: err instanceof Error ? err.message : String(err) });
        state.fetches.delete(id);
        return;
      }
    }
    if (!controller.signal.aborted) post({ t: "end", id });
    state.fetches.delete(id);
  }
}

/** flocker's own failure, as an answer crossing threads. */
function internalAnswer(err: unknown): WireRoute {
  return { kind: "answer", status: 500, statusText: "", headers: [["content-type", "application/json"]], body: internalError(err) };
}

function internalError(err: unknown): ArrayBuffer {
  const body = JSON.stringify({ message: `flocker: internal error: ${err instanceof Error ? err.message : String(err)}` });
  return new TextEncoder().encode(body).buffer as ArrayBuffer;
}
