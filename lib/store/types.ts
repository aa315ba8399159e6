/**
 * The routing store: a tiny key/value contract so routing state can live in memory, in Redis,
 * or in the user's own `set`/`get`/`delete` hooks.
 *
 * Keys are written bare here; the Redis store puts them under its prefix (default `flocker:`,
 * FLOCKER_REDIS_PREFIX), e.g. `flocker:ctr:<id>`. Hook stores receive them bare. `<image>` is the
 * normalized reference (`docker.io/library/busybox:latest`, `registry:5000/repo:tag`, `repo@sha256:...`).
 * - `ctr:<id>`               -> `<host name>\t<container name>`  where a container lives (no TTL)
 * - `name:<name>`            -> container id, or `pending:<nonce>` while a create is in flight (TTL 120 s)
 * - `exec:<id>`              -> host name of an exec instance (TTL 1 h)
 * - `session:<id>`, `build:<id>` -> host name of a BuildKit session, and of a build (by its buildid)
 *                               that uses one (TTL 1 h; lib/api/build.ts)
 * - `want:<image>:<host>`    -> `pending:<runs>` once creates on that host got 404 for the image (the CLI
 *                               pulls next, and that pull goes there); `pulled:<runs>` once the pull
 *                               succeeded there (the retried creates go there); each create there
 *                               counts one run off, the last deletes it (TTL 120 s; lib/cluster/wants.ts)
 * - `shown:<image>`          -> `1` once an inspect told a client the image exists while some hosts
 *                               lack it: its creates go to a host that holds it (TTL 60 s; wants.ts)
 * - `image:<image>`          -> host name that built, loaded or committed an image tag (no registry has it)
 * - `vol:<name>`, `net:<name>` -> host name a named volume / user network lives on
 * - `netid:<id>`             -> network name (each host gives its copy of a network its own id)
 * - `project:<name>`         -> host name a compose project's resources live on
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
