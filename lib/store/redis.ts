import Redis from "ioredis";
import { StoreUnavailableError, type Store } from "./types.ts";

/** The namespace every flocker key gets in Redis unless told otherwise. */
export const DEFAULT_REDIS_PREFIX = "flocker:";

export interface RedisStoreOptions {
  /** Prepended to every key (default `flocker:`), so flocker can share a Redis with others. */
  prefix?: string;
}

/**
 * Routing state in Redis, so several flocker processes act as one. `url`: redis:// or rediss://
 * (TLS). Every key is stored under the prefix, e.g. `flocker:ctr:<id>` (see ./types.ts).
 */
export class RedisStore implements Store {
  readonly redis: Redis;
  readonly prefix: string;

  constructor(url: string, options: RedisStoreOptions = {}) {
    this.prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    this.redis = new Redis(url, {
      keyPrefix: this.prefix,
      // Fail fast while Redis is down instead of queueing calls forever; reconnect in the background.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(times * 200, 2000),
      lazyConnect: false,
    });
    // Connection errors are reported per call (503); do not let them crash the process.
    this.redis.on("error", () => {});
  }

  async #run<T>(op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw new StoreUnavailableError(`routing store unreachable (redis): ${(err as Error).message}`);
    }
  }

  get(key: string) {
    return this.#run(() => this.redis.get(key));
  }

  async set(key: string, value: string, ttlSeconds?: number) {
    await this.#run(() => (ttlSeconds ? this.redis.set(key, value, "EX", ttlSeconds) : this.redis.set(key, value)));
  }

  async setIfAbsent(key: string, value: string, ttlSeconds?: number) {
    const res = await this.#run(() =>
      ttlSeconds ? this.redis.set(key, value, "EX", ttlSeconds, "NX") : this.redis.set(key, value, "NX")
    );
    return res === "OK";
  }

  async delete(key: string) {
    await this.#run(() => this.redis.del(key));
  }

  async close() {
    this.redis.disconnect();
  }
}
