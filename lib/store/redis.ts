import type Redis from "ioredis";
import { StoreUnavailableError, type Store } from "./types.ts";

/** How long a call waits for a (re)connection before answering "store unavailable". */
const CONNECT_WAIT_MS = 2000;

/** The namespace every flocker key gets in Redis unless told otherwise. */
export const DEFAULT_REDIS_PREFIX = "flocker:";

export interface RedisStoreOptions {
  /** Prepended to every key (default `flocker:`), so flocker can share a Redis with others. */
  prefix?: string;
}

/**
 * Routing state in Redis, so several flocker processes act as one. `url`: redis:// or rediss://
 * (TLS). Every key is stored under the prefix, e.g. `flocker:ctr:<id>` (see ./types.ts).
 * ioredis is imported when a RedisStore is made, not with flocker: it alone adds ~20 MB to a
 * process that never uses it (measured under Deno).
 */
export class RedisStore implements Store {
  /** The connection, opened at construction (ioredis loads first). */
  readonly redis: Promise<Redis>;
  readonly prefix: string;
  #waiting?: Promise<void>;

  constructor(url: string, options: RedisStoreOptions = {}) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.redis = import("ioredis").then(({ default: Client }) => {
      const redis = new Client(url, {
        keyPrefix: this.prefix,
        // Fail fast while Redis is down instead of queueing calls forever; reconnect in the background.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 1,
        connectTimeout: 2000,
        retryStrategy: (times) => Math.min(times * 200, 2000),
        lazyConnect: false,
      });
      // Connection errors are reported per call (503); do not let them crash the process.
      redis.on("error", () => {});
      return redis;
    });
  }

  /** The members of a set (under the prefix). */
  members(set: string): Promise<string[]> {
    return this.#run((redis) => redis.smembers(set));
  }

  /**
   * Wait for the connection (the first calls come right after start, e.g. the routing rebuild;
   * without the offline queue they would fail at once). Gives up at the next connection error or
   * after CONNECT_WAIT_MS, so a Redis that is down still fails fast.
   */
  #connected(redis: Redis): Promise<void> {
    if (redis.status === "ready") return Promise.resolve();
    if (redis.status === "end") return Promise.reject(new Error("connection closed"));
    // One wait shared by every call made meanwhile.
    return this.#waiting ??= new Promise<void>((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        redis.off("ready", onReady);
        redis.off("error", onError);
        this.#waiting = undefined;
        if (err) reject(err);
        else resolve();
      };
      const onReady = () => done();
      const onError = (err: Error) => done(err);
      const timer = setTimeout(() => done(new Error(`not connected (${redis.status})`)), CONNECT_WAIT_MS);
      redis.once("ready", onReady);
      redis.once("error", onError);
    });
  }

  async #run<T>(op: (redis: Redis) => Promise<T>): Promise<T> {
    try {
      const redis = await this.redis;
      await this.#connected(redis);
      return await op(redis);
    } catch (err) {
      throw new StoreUnavailableError(`routing store unreachable (redis): ${(err as Error).message}`);
    }
  }

  get(key: string) {
    return this.#run((redis) => redis.get(key));
  }

  async set(key: string, value: string, ttlSeconds?: number) {
    await this.#run((redis) => (ttlSeconds ? redis.set(key, value, "EX", ttlSeconds) : redis.set(key, value)));
  }

  async setIfAbsent(key: string, value: string, ttlSeconds?: number) {
    const res = await this.#run((redis) =>
      ttlSeconds ? redis.set(key, value, "EX", ttlSeconds, "NX") : redis.set(key, value, "NX")
    );
    return res === "OK";
  }

  async delete(key: string) {
    await this.#run((redis) => redis.del(key));
  }

  async close() {
    (await this.redis).disconnect();
  }
}
