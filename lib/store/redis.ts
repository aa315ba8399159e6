import Redis from "ioredis";
import { StoreUnavailableError, type Store } from "./types.ts";

/** Routing state in Redis, so several flocker processes act as one. `url`: redis:// or rediss://. */
export class RedisStore implements Store {
  readonly redis: Redis;

  constructor(url: string) {
    this.redis = new Redis(url, {
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
