import type { Store } from "./types.ts";

/** The user's own store, as async hooks (the seed API's callback hooks are wrapped into these). */
export interface StoreHooks {
  get(key: string): Promise<string | null | undefined>;
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  delete(key: string): Promise<void>;
}

/**
 * A store on user hooks. The hooks have no set-if-absent, so reservations are made atomic within
 * this process by serialising them; across processes use Redis. TTLs are passed on and also
 * enforced here, since a plain object store cannot expire entries.
 */
export class HookStore implements Store {
  #chain: Promise<unknown> = Promise.resolve();

  constructor(private hooks: StoreHooks) {}

  async get(key: string) {
    const raw = await this.hooks.get(key);
    if (raw == null) return null;
    const tab = raw.indexOf("|");
    const expires = Number(raw.slice(0, tab));
    if (expires && expires <= Date.now()) {
      await this.hooks.delete(key);
      return null;
    }
    return raw.slice(tab + 1);
  }

  set(key: string, value: string, ttlSeconds?: number) {
    const expires = ttlSeconds ? Date.now() + ttlSeconds * 1000 : 0;
    return this.hooks.set(key, `${expires}|${value}`, ttlSeconds);
  }

  setIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<boolean> {
    const next = this.#chain.then(async () => {
      if ((await this.get(key)) !== null) return false;
      await this.set(key, value, ttlSeconds);
      return true;
    });
    this.#chain = next.catch(() => {});
    return next;
  }

  delete(key: string) {
    return this.hooks.delete(key);
  }
}
