/** The core: a Hono app that speaks the Docker Engine API for a whole flock. No runtime imports here. */
import { Hono } from "hono";
import { getPath } from "hono/utils/url";
import { Cluster, type HostFetchFactory, compareVersions } from "./cluster/cluster.ts";
import { type HostAddress, parseHostAddress } from "./cluster/host.ts";
import type { Host } from "./cluster/host.ts";
import { Locator } from "./cluster/locator.ts";
import { Wants } from "./cluster/wants.ts";
import type { Strategy } from "./cluster/scheduler.ts";
import type { FlockerContext, Hooks, PullMode } from "./context.ts";
import { DockerError, errorResponse } from "./errors.ts";
import { hostDown } from "./upstream/forward.ts";
import { OpenWaits } from "./upstream/waits.ts";
import { MemoryStore } from "./store/memory.ts";
import { StoreUnavailableError, type Store } from "./store/types.ts";
import { pingResponse, systemRoutes } from "./api/system.ts";
import { containerRoutes } from "./api/containers.ts";
import { execRoutes } from "./api/exec.ts";
import { imageRoutes } from "./api/images.ts";
import { buildRoutes } from "./api/build.ts";
import { eventRoutes } from "./api/events.ts";
import { volumeRoutes } from "./api/volumes.ts";
import { networkRoutes } from "./api/networks.ts";
import { unsupportedRoutes } from "./api/unsupported.ts";
import { hijackHost, isHijackPath } from "./api/hijack.ts";
import { checkApiVersion, stripApiVersion } from "./api/version.ts";
import { checkRequest, type Policy } from "./api/policy.ts";
import { instrumentFetch, noteHijack, requestTelemetry, statusRoutes, Telemetry } from "./api/status.ts";
import { Logger, type LogLevel } from "./log.ts";

export interface CoreOptions {
  /** Engine addresses (`127.0.0.1:2375`, `tcp://`, `unix:///path`, `https://`, optionally `name=address`). */
  hosts: (string | HostAddress)[];
  /** How to reach an engine (tcp, unix socket, TLS); supplied by the runtime adapter. */
  hostFetch: HostFetchFactory;
  /** A quicker way for questions whose answer is read whole (see Host.ask); optional. */
  hostAsk?: HostFetchFactory;
  store?: Store;
  strategy?: Strategy;
  pull?: PullMode;
  hooks?: Hooks;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Who may do what (read-only, allow-lists, container restrictions). */
  policy?: Policy;
  /** Allow the admin actions under /_flocker/ (drain, undrain). */
  admin?: boolean;
  /** Request log level (default `silent`: a library logs nothing unless asked). */
  log?: LogLevel;
  /** Where log lines go (default `console.log`: stdout). */
  logWriter?: (line: string) => void;
}

export interface Flocker {
  /** The Docker API as a web handler: mount it in any Hono app or serve it directly. */
  fetch: (request: Request) => Promise<Response>;
  app: Hono;
  /**
   * For servers that can hijack connections (attach, exec start, BuildKit sessions): the engine
   * such a request goes to, or a Response to send instead (unknown container, no host...).
   * `pathname` as received; `session`: its `X-Docker-Expose-Session-Uuid` header, if any.
   */
  hijack: (pathname: string, session?: string) => Promise<Host | Response>;
  isHijackPath: (pathname: string) => boolean;
  /**
   * For servers with a byte-level fast path: the engine a plain routed call (GET/HEAD of one
   * container or exec, PUT of an archive) goes to, a Response to send instead (errors, and
   * flocker's own answer to /_ping), or undefined when the request needs the full app. The request itself is then passed to the engine unchanged.
   * Answered synchronously when the route is already known (no promise on the hot path).
   */
  passThrough: (method: string, pathname: string) => PassRoute | Promise<PassRoute>;
  /**
   * Whether passThrough keeps this request's route (a full container id: it never moves) until
   * `cluster.generation` changes: other threads' fronts may keep it as long. Never for a wait.
   */
  routeKept: (method: string, pathname: string) => boolean;
  /** Open hijacked streams, kept by the server glue: +1 when one starts piping, -1 when it closes. */
  hijackStream: (delta: 1 | -1) => void;
  /** Count and log a request the server glue answered outside the app (its byte-level fast path). */
  noteRequest: (method: string, pathname: string, status: number, host: Host | undefined, startMs: number) => void;
  /** Counters behind /_flocker/metrics. */
  telemetry: Telemetry;
  logger: Logger;
  cluster: Cluster;
  store: Store;
  /** Resolves once every host has been probed once. */
  ready: Promise<void>;
  close: () => Promise<void>;
}

/** Where a fast-path request goes: an engine, an answer of flocker's own, or the full app (undefined). */
export type PassRoute = Host | Response | undefined;

export function toResponse(err: unknown): Response {
  if (err instanceof DockerError) return errorResponse(err.status, err.message);
  if (err instanceof StoreUnavailableError) return errorResponse(503, `flocker: ${err.message}`);
  const message = err instanceof Error ? err.message : String(err);
  return errorResponse(500, `flocker: internal error: ${message}`);
}

/** Probe intervals between two sweeps of container records (Locator.sweep): a minute by default. */
const SWEEP_PROBES = 12;

export function buildFlocker(options: CoreOptions): Flocker {
  const parse = (h: string | HostAddress) => (typeof h === "string" ? parseHostAddress(h) : h);
  const telemetry = new Telemetry();
  const logger = new Logger(options.log, options.logWriter);
  const hostAsk = options.hostAsk && instrumentFetch(options.hostAsk, telemetry);
  const cluster = new Cluster(options.hosts.map(parse), instrumentFetch(options.hostFetch, telemetry), { ...options, hostAsk });
  const store: Store = options.store ?? new MemoryStore();
  const locator = new Locator(store, cluster);
  const hooks = options.hooks ?? {};
  const policy = options.policy ?? {};
  const ctx: FlockerContext = {
    policy,
    cluster,
    store,
    locator,
    wants: new Wants(store),
    hooks,
    strategy: options.strategy ?? "spread",
    pull: options.pull ?? "client",
    parseAddress: parseHostAddress,
    waits: new OpenWaits(),
  };

  const refreshInventory = async () => {
    if (hooks.list) {
      const added = cluster.setAddresses((await hooks.list()).map(parseHostAddress));
      await Promise.all(added.map((h) => cluster.probe(h)));
    }
  };
  let inventoryTimer: ReturnType<typeof setInterval> | undefined;
  let sweepTimer: ReturnType<typeof setInterval> | undefined;
  let closed = false; // closed before it was ready: no timers are started
  const ready = (async () => {
    await refreshInventory().catch(() => {});
    await cluster.probeAll();
    await locator.rebuild().catch(() => {});
    if (closed) return;
    cluster.start();
    // Records of containers removed behind flocker's back go, every SWEEP_PROBES probe intervals.
    sweepTimer = setInterval(() => void locator.sweep().catch(() => {}), cluster.probeIntervalMs * SWEEP_PROBES);
    (sweepTimer as { unref?: () => void }).unref?.();
    // The list hook is the inventory: asked again every probe interval, so hosts join and leave live.
    if (hooks.list) {
      inventoryTimer = setInterval(() => void refreshInventory().catch(() => {}), cluster.probeIntervalMs);
      (inventoryTimer as { unref?: () => void }).unref?.();
    }
  })();

  const app = new Hono({ getPath: (req) => stripApiVersion(getPath(req)) });
  app.use(requestTelemetry(telemetry, logger));
  app.use(async (c, next) => {
    const pathname = new URL(c.req.url).pathname;
    checkRequest(policy, c.req.method, pathname);
    await ready;
    checkApiVersion(pathname, cluster.apiVersion(), compareVersions, cluster.minApiVersion());
    await next();
  });
  app.route("/", systemRoutes(ctx));
  app.route("/", containerRoutes(ctx));
  app.route("/", execRoutes(ctx));
  app.route("/", buildRoutes(ctx));
  app.route("/", imageRoutes(ctx));
  app.route("/", eventRoutes(ctx));
  app.route("/", volumeRoutes(ctx));
  app.route("/", networkRoutes(ctx));
  app.route("/", unsupportedRoutes());
  app.route("/", statusRoutes(ctx, telemetry, { admin: options.admin }));
  app.notFound(() => errorResponse(404, "page not found"));
  app.onError((err) => toResponse(err));

  // Routed reads by full container id: an id never moves to another host, so its route is kept
  // (once the container is gone its engine answers the 404 itself). The fast path then costs one
  // map lookup instead of a store round trip. Dropped when the inventory or API versions change.
  const routes = new Map<string, Host>();
  let routesGeneration = cluster.generation;
  const resolvePassThrough = async (method: string, pathname: string, key: string) => {
    const path = stripApiVersion(pathname);
    const ping = path === "/_ping" && (method === "GET" || method === "HEAD");
    const target = ping ? undefined : passThroughTarget(path);
    // Reads, `docker cp` into a container (PUT archive: its tar body streams straight through), and
    // the wait `docker run` opens before it starts the container: when the start fails, the engine
    // answers the wait (container removed, with --rm) before the start, and the CLI must hear them
    // in that order, or it reports its wait as cancelled.
    const passes = target && (method === "GET" || method === "HEAD" || (method === "PUT" && target.action === "archive") || (method === "POST" && target.action === "wait"));
    if (!ping && !passes) return undefined;
    try {
      checkRequest(policy, method, pathname);
      await ready;
      checkApiVersion(pathname, cluster.apiVersion(), compareVersions, cluster.minApiVersion());
      if (!target) return pingResponse(cluster, method as "GET" | "HEAD");
      const ref = decodeURIComponent(target.ref);
      const located = target.kind === "exec" ? { host: await locator.exec(ref), id: "" } : await locator.container(ref);
      if (located.id === ref && target.kind === "container") {
        if (routesGeneration !== cluster.generation || routes.size >= ROUTE_CACHE_SIZE) {
          routes.clear();
          routesGeneration = cluster.generation;
        }
        routes.set(key, located.host);
      }
      return located.host.status.state === "unhealthy" ? hostDown(located.host) : located.host;
    } catch (err) {
      return toResponse(err);
    }
  };

  const flocker: Flocker = {
    fetch: (request) => Promise.resolve(app.fetch(request)),
    app,
    async hijack(pathname, session) {
      try {
        checkRequest(policy, "POST", pathname);
        await ready;
        checkApiVersion(pathname, cluster.apiVersion(), compareVersions, cluster.minApiVersion());
        const host = await hijackHost(ctx, pathname, session);
        if (host?.status.state === "unhealthy") return hostDown(host);
        return host ?? errorResponse(404, "page not found");
      } catch (err) {
        return toResponse(err);
      }
    },
    isHijackPath,
    passThrough(method, pathname) {
      const wait = waitedOn(method, pathname);
      if (wait) ctx.waits.begin(wait); // ended by noteRequest, once answered
      const key = method + pathname;
      const known = routes.get(key);
      if (known && routesGeneration === cluster.generation) return known.status.state === "unhealthy" ? hostDown(known) : known;
      return resolvePassThrough(method, pathname, key);
    },
    // Not a wait: each one is counted here as it begins (see passThrough), so it is always asked.
    routeKept: (method, pathname) => routesGeneration === cluster.generation && routes.has(method + pathname) && !waitedOn(method, pathname),
    hijackStream(delta) {
      telemetry.hijackedStreams += delta;
    },
    noteRequest(method, pathname, status, host, startMs) {
      const wait = waitedOn(method, pathname);
      if (wait) ctx.waits.end(wait);
      telemetry.noteRequest(logger, method, pathname, status, host, startMs);
    },
    telemetry,
    logger,
    cluster,
    store,
    ready,
    async close() {
      closed = true;
      if (inventoryTimer) clearInterval(inventoryTimer);
      if (sweepTimer) clearInterval(sweepTimer);
      cluster.stop();
      await store.close?.();
    },
  };
  // Hijacks (attach, exec start) are counted and logged here, whichever server glue asks.
  const hijackTarget = flocker.hijack;
  flocker.hijack = async (pathname, session) => {
    const start = performance.now();
    const result = await hijackTarget(pathname, session);
    noteHijack(telemetry, logger, pathname, result, start);
    return result;
  };
  return flocker;
}

/** Routes kept by the fast path before the map starts over. */
const ROUTE_CACHE_SIZE = 10_000;

/** Routed reads that need nothing but a lookup: the same answer as the app's catch-all routes. */
const PASS_CONTAINER = /^\/containers\/([^/]+)\/(json|top|changes|stats|logs|archive|export|wait)$/;
const PASS_EXEC = /^\/exec\/([^/]+)\/json$/;

/** The container a `POST .../wait` waits on, as named in its path. */
function waitedOn(method: string, pathname: string): string | undefined {
  if (method !== "POST" || !pathname.endsWith("/wait")) return undefined;
  const target = passThroughTarget(stripApiVersion(pathname));
  return target?.action === "wait" ? target.ref : undefined;
}

function passThroughTarget(path: string): { kind: "container" | "exec"; ref: string; action: string } | undefined {
  let m = PASS_CONTAINER.exec(path);
  if (m) return { kind: "container", ref: m[1], action: m[2] };
  m = PASS_EXEC.exec(path);
  return m ? { kind: "exec", ref: m[1], action: "json" } : undefined;
}
