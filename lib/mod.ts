/**
 * flocker: many Docker engines as one. The public surface.
 *
 *   const flocker = createFlocker({ hosts: ["127.0.0.1:2401", "127.0.0.1:2402"] });
 *   app.mount("/", flocker.fetch);          // inside any Hono app
 *   await serve(flocker, { listen: { host: "127.0.0.1", port: 2375 } });  // with hijacked streams
 */
import { buildFlocker, type CoreOptions, type Flocker } from "./flocker.ts";
import { runtimeHostFetch, type EngineTls } from "./adapter/host-fetch.ts";
import { runtimeHostAsk } from "./adapter/engine-ask.ts";
import { RedisStore } from "./store/redis.ts";
import { HookStore, type StoreHooks } from "./store/hooks.ts";
import type { Store } from "./store/types.ts";

export interface FlockerOptions extends Omit<CoreOptions, "hostFetch" | "hosts"> {
  hosts?: CoreOptions["hosts"];
  /** Redis URL for shared routing state (ignored when `store` is given). */
  redis?: string;
  /** Namespace of flocker's keys in Redis (default `flocker:`). */
  redisPrefix?: string;
  /**
   * Name of a Redis set (under the prefix) of host addresses: members join the inventory beside
   * `hosts`, read every probe interval, so hosts join and leave without a restart. Needs `redis`.
   */
  redisHostsSet?: string;
  /** The user's own store as `get`/`set`/`delete` hooks (ignored when `store` is given). */
  storeHooks?: StoreHooks;
  /** Client certificates for `https://` engines. */
  engineTls?: EngineTls;
  hostFetch?: CoreOptions["hostFetch"];
}

export function createFlocker(options: FlockerOptions = {}): Flocker {
  const store: Store | undefined = options.store ??
    (options.storeHooks ? new HookStore(options.storeHooks) : undefined) ??
    (options.redis ? new RedisStore(options.redis, { prefix: options.redisPrefix }) : undefined);
  const hosts = options.hosts ?? ["unix:///var/run/docker.sock"];
  let hooks = options.hooks;
  if (options.redisHostsSet && store instanceof RedisStore && !hooks?.list) {
    const set = options.redisHostsSet;
    const fixed = hosts.map((h) => (typeof h === "string" ? h : `${h.name}=${h.address}`));
    hooks = { ...hooks, list: async () => [...new Set([...fixed, ...(await store.members(set))])] };
  }
  return buildFlocker({
    ...options,
    hooks,
    hosts,
    store,
    hostFetch: options.hostFetch ?? runtimeHostFetch(options.engineTls),
    // A caller's own hostFetch answers everything: the raw-connection asks would go around it.
    hostAsk: options.hostAsk ?? (options.hostFetch ? undefined : runtimeHostAsk(options.engineTls)),
  });
}

export { serve, type ServeOptions, type RunningServer } from "./adapter/node-server.ts";
export { default, default as flocker, type SeedFlocker, type SeedHandlers } from "./adapter/seed.ts";
export type { Flocker } from "./flocker.ts";
export type { Hooks, AllocateInfo, RegistryCredentials, PullMode } from "./context.ts";
export type { Store } from "./store/types.ts";
export type { Strategy } from "./cluster/scheduler.ts";
export type { Host, HostAddress } from "./cluster/host.ts";
export { MemoryStore } from "./store/memory.ts";
export { RedisStore } from "./store/redis.ts";
export { HookStore, type StoreHooks } from "./store/hooks.ts";
