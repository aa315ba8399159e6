import type { Store } from "./types.ts";

/** Writes between two sweeps of expired entries (an expired entry nobody reads again would stay). */
const SWEEP_EVERY = 1000;

/** The embedded default: a Map with expiry times. Lost on restart; routing is rebuilt from the hosts. */
export class MemoryStore implements Store {
  #data = new Map<string, { value: string; expires: number }>();
  #writes = 0;

  #put(key: string, value: string, ttlSeconds?: number) {
    this.#data.set(key, { value, expires: ttlSeconds ? Date.now() + ttlSeconds * 1000 : 0 });
    if (++this.#writes < SWEEP_EVERY) return;
    this.#writes = 0;
    const now = Date.now();
    for (const [k, entry] of this.#data) if (entry.expires && entry.expires <= now) this.#data.delete(k);
  }

  #live(key: string) {
    const entry = this.#data.get(key);
    if (!entry) return undefined;
    if (entry.expires && entry.expires <= Date.now()) {
      this.#data.delete(key);
      return undefined;
    }
    return entry;
  }

  get(key: string) {
    return Promise.resolve(this.#live(key)?.value ?? null);
  }

  set(key: string, value: string, ttlSeconds?: number) {
    this.#put(key, value, ttlSeconds);
    return Promise.resolve();
  }

  setIfAbsent(key: string, value: string, ttlSeconds?: number) {
    if (this.#live(key)) return Promise.resolve(false);
    this.#put(key, value, ttlSeconds);
    return Promise.resolve(true);
  }

  delete(key: string) {
    this.#data.delete(key);
    return Promise.resolve();
  }
}
