/**
 * The routing store: a tiny key/value contract so routing state can live in memory, in Redis,
 * or in the user's own `set`/`get`/`delete` hooks.
 *
 * Keys (all under the configured prefix, default `flocker:`):
 * - `ctr:<id>`        -> `<host name>\t<container name>`  where a container lives
 * - `name:<name>`     -> container id, or `pending:<nonce>` while a create is in flight (TTL)
 * - `exec:<id>`       -> host name of an exec instance
 * - `want:<image>`    -> host names waiting for a pull of that image (TTL)
 * - `image:<ref>`     -> host name that built or loaded an image tag
 */
export interface Store {
  get(key: string): Promise<string | null>;
  /** ttlSeconds: the entry disappears after that many seconds (no TTL when omitted). */
  set(key: string, value: string, ttlSeconds?: number): Promise<void>;
  /** Atomic: sets only when the key is absent; true when it was set. */
  setIfAbsent(key: string, value: string, ttlSeconds?: number): Promise<boolean>;
  delete(key: string): Promise<void>;
  close?(): Promise<void>;
}

export class StoreUnavailableError extends Error {}
