/** The core: a Hono app that speaks the Docker Engine API for a whole flock. No runtime imports here. */
import { Hono } from "hono";
import { getPath } from "hono/utils/url";
import { Cluster, type HostFetchFactory, compareVersions } from "./cluster/cluster.ts";
import { type HostAddress, parseHostAddress } from "./cluster/host.ts";
import type { Host } from "./cluster/host.ts";
import { Locator } from "./cluster/locator.ts";
import type { Strategy } from "./cluster/scheduler.ts";
import type { FlockerContext, Hooks, PullMode } from "./context.ts";
import { DockerError, errorResponse } from "./errors.ts";
import { hostDown } from "./upstream/forward.ts";
import { MemoryStore } from "./store/memory.ts";
import { StoreUnavailableError, type Store } from "./store/types.ts";
import { systemRoutes } from "./api/system.ts";
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

export interface CoreOptions {
  /** Engine addresses (`127.0.0.1:2375`, `tcp://`, `unix:///path`, `https://`, optionally `name=address`). */
  hosts: (string | HostAddress)[];
  /** How to reach an engine (tcp, unix socket, TLS); supplied by the runtime adapter. */
  hostFetch: HostFetchFactory;
  store?: Store;
  strategy?: Strategy;
  pull?: PullMode;
  hooks?: Hooks;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** Who may do what (read-only, allow-lists, container restrictions). */
  policy?: Policy;
}

export interface Flocker {
  /** The Docker API as a web handler: mount it in any Hono app or serve it directly. */
  fetch: (request: Request) => Promise<Response>;
  app: Hono;
  /**
   * For servers that can hijack connections (attach, exec start): the engine such a request goes to,
   * or a Response to send instead (unknown container, no host...). `pathname` as received.
   */
  hijack: (pathname: string) => Promise<Host | Response>;
  isHijackPath: (pathname: string) => boolean;
  cluster: Cluster;
  store: Store;
  /** Resolves once every host has been probed once. */
  ready: Promise<void>;
  close: () => Promise<void>;
}

export function toResponse(err: unknown): Response {
  if (err instanceof DockerError) return errorResponse(err.status, err.message);
  if (err instanceof StoreUnavailableError) return errorResponse(503, `flocker: ${err.message}`);
  const message = err instanceof Error ? err.message : String(err);
  return errorResponse(500, `flocker: internal error: ${message}`);
}

export function buildFlocker(options: CoreOptions): Flocker {
  const parse = (h: string | HostAddress) => (typeof h === "string" ? parseHostAddress(h) : h);
  const cluster = new Cluster(options.hosts.map(parse), options.hostFetch, options);
  const store: Store = options.store ?? new MemoryStore();
  const locator = new Locator(store, cluster);
  const hooks = options.hooks ?? {};
  const policy = options.policy ?? {};
  const ctx: FlockerContext = {
    policy,
    cluster,
    store,
    locator,
    hooks,
    strategy: options.strategy ?? "spread",
    pull: options.pull ?? "client",
    parseAddress: parseHostAddress,
  };

  const refreshInventory = async () => {
    if (hooks.list) {
      const added = cluster.setAddresses((await hooks.list()).map(parseHostAddress));
      await Promise.all(added.map((h) => cluster.probe(h)));
    }
  };
  let inventoryTimer: ReturnType<typeof setInterval> | undefined;
  const ready = (async () => {
    await refreshInventory().catch(() => {});
    await cluster.probeAll();
    await locator.rebuild().catch(() => {});
    cluster.start();
    // The list hook is the inventory: asked again every probe interval, so hosts join and leave live.
    if (hooks.list) {
      inventoryTimer = setInterval(() => void refreshInventory().catch(() => {}), cluster.probeIntervalMs);
      (inventoryTimer as { unref?: () => void }).unref?.();
    }
  })();

  const app = new Hono({ getPath: (req) => stripApiVersion(getPath(req)) });
  app.use(async (c, next) => {
    const pathname = new URL(c.req.url).pathname;
    checkRequest(policy, c.req.method, pathname);
    await ready;
    checkApiVersion(pathname, cluster.apiVersion(), compareVersions);
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
  app.notFound(() => errorResponse(404, "page not found"));
  app.onError((err) => toResponse(err));

  return {
    fetch: (request) => Promise.resolve(app.fetch(request)),
    app,
    async hijack(pathname) {
      try {
        checkRequest(policy, "POST", pathname);
        await ready;
        checkApiVersion(pathname, cluster.apiVersion(), compareVersions);
        const host = await hijackHost(ctx, pathname);
        if (host?.status.state === "unhealthy") return hostDown(host);
        return host ?? errorResponse(404, "page not found");
      } catch (err) {
        return toResponse(err);
      }
    },
    isHijackPath,
    cluster,
    store,
    ready,
    async close() {
      if (inventoryTimer) clearInterval(inventoryTimer);
      cluster.stop();
      await store.close?.();
    },
  };
}
