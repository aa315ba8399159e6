import type { Store } from "./types.ts";

/** The embedded default: a Map with expiry times. Lost on restart; routing is rebuilt from the hosts. */
/** Writes between two sweeps of expired entries (an expired entry nobody reads again would stay). */
const SWEEP_EVERY = 1000;

export class MemoryStore implements Store {
  #data = new Map<string, { value: string; expires: number }>();
  #writes = 0;

  #wrote() {
    if (++this.#writes < SWEEP_EVERY) return;
    this.#writes = 0;
    const now = Date.now();
    for (const [key, entry] of this.#data) if (entry.expires && entry.expires <= now) this.#data.delete(key);
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
    this.#data.set(key, { value, expires: ttlSeconds ? Date.now() + ttlSeconds * 1000 : 0 });
    this.#wrote();
    return Promise.resolve();
  }

  setIfAbsent(key: string, value: string, ttlSeconds?: number) {
    if (this.#live(key)) return Promise.resolve(false);
    this.#data.set(key, { value, expires: ttlSeconds ? Date.now() + ttlSeconds * 1000 : 0 });
    this.#wrote();
    return Promise.resolve(true);
  }

  delete(key: string) {
    this.#data.delete(key);
    return Promise.resolve();
  }
}
