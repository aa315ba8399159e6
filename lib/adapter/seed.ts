/**
 * The original (2014) API, kept: `flocker()` returns an object whose `.on(event, fn)` takes
 * callback-style hooks and whose `.handle(req, res)` serves a node:http request, hijacked
 * streams included.
 *
 *   const dockers = flocker();
 *   dockers.on("allocate", (info, next) => next(null, "127.0.0.1:2375"));
 *   dockers.on("list", (next) => next(null, "127.0.0.1:2375,127.0.0.1:2376"));
 *   http.createServer((req, res) => dockers.handle(req, res)).listen(8080);
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import { createFlocker, type FlockerOptions } from "../mod.ts";
import type { Flocker } from "../flocker.ts";
import type { AllocateInfo, RegistryCredentials } from "../context.ts";
import { upgradeHandler } from "./node-server.ts";

type Next<T> = (err?: unknown, value?: T) => void;

export interface SeedHandlers {
  allocate: (info: AllocateInfo, next: Next<string>) => void;
  list: (next: Next<string | string[]>) => void;
  "registry-auth": (registry: string, next: Next<RegistryCredentials>) => void;
  set: (key: string, value: string, done: Next<void>) => void;
  get: (key: string, done: Next<string | null | undefined>) => void;
  delete: (key: string, done: Next<void>) => void;
}

export interface SeedFlocker {
  on<E extends keyof SeedHandlers>(event: E, fn: SeedHandlers[E]): SeedFlocker;
  /** Serve one node:http request; also takes over the server's `upgrade` event for attach/exec. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** The modern flocker behind it (built on first use). */
  readonly flocker: Flocker;
  close(): Promise<void>;
}

function promised<T>(call: (next: Next<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value as T))));
}

export default function flocker(options: FlockerOptions = {}): SeedFlocker {
  const handlers: Partial<SeedHandlers> = {};
  let built: Flocker | undefined;
  let listener: ReturnType<typeof getRequestListener> | undefined;
  const servers = new WeakSet<object>();

  const build = (): Flocker => {
    if (built) return built;
    const { allocate, list, set, get } = handlers;
    const registryAuth = handlers["registry-auth"];
    const remove = handlers.delete;
    built = createFlocker({
      ...options,
      hosts: options.hosts ?? (list ? [] : undefined),
      storeHooks: set && get && remove
        ? {
          set: (key, value) => promised<void>((done) => set(key, value, done)),
          get: (key) => promised<string | null | undefined>((done) => get(key, done)),
          delete: (key) => promised<void>((done) => remove(key, done)),
        }
        : undefined,
      hooks: {
        ...options.hooks,
        ...(allocate && { allocate: (info) => promised<string>((next) => allocate(info, next)) }),
        ...(list && {
          list: async () => {
            const value = await promised<string | string[]>(list);
            return (Array.isArray(value) ? value : String(value ?? "").split(",")).map((s) => s.trim()).filter(Boolean);
          },
        }),
        ...(registryAuth && { registryAuth: (registry) => promised<RegistryCredentials>((next) => registryAuth(registry, next)) }),
      },
    });
    listener = getRequestListener(built.fetch);
    return built;
  };

  const seed: SeedFlocker = {
    on(event, fn) {
      if (built) throw new Error(`flocker: hooks must be set before the first request (got "${event}" late)`);
      (handlers as Record<string, unknown>)[event] = fn;
      return seed;
    },
    handle(req, res) {
      const f = build();
      // node:http hands `Upgrade: tcp` requests (attach, exec start) to the server's `upgrade` event,
      // never to the request handler: take that event over on the first request we see.
      const server = (req.socket as unknown as { server?: Server }).server;
      if (server && !servers.has(server)) {
        servers.add(server);
        server.on("upgrade", (r: IncomingMessage, socket: Duplex, head: Buffer) => upgradeHandler(f, options.engineTls)(r, socket, head));
      }
      void listener!(req, res);
    },
    get flocker() {
      return build();
    },
    close: () => (built ? built.close() : Promise.resolve()),
  };
  return seed;
}
