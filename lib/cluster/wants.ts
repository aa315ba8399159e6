/**
 * The `docker run` dance across hosts, as routing state. A create that got 404 for an image on
 * host H "wants" the image there: the CLI's pull goes to every wanted host, and once the pull is
 * done there the CLI's retried create goes there too.
 *
 * A want counts the runs waiting on it: concurrent runs of one image can meet on one host, and
 * the first retry to land there must not take the way from the others (their retries would be
 * placed afresh, on a host without the image: "No such image").
 *
 * Stored as `want:<image>:<host>` -> `pending:<runs>` | `pulled:<runs>` (TTL restarted on each
 * change). Changes are read-modify-write: serialized per key in this process; flockers sharing a
 * store can miss a count when they race, which costs at worst a retry placed afresh.
 */
import type { Store } from "../store/types.ts";
import type { Host } from "./host.ts";
import { normalizeImageRef } from "./cluster.ts";

/**
 * A want lives this long: the CLI pulls right after the 404 and creates again right after the
 * pull. Short, so an abandoned dance does not steer later runs for long.
 */
const WANT_TTL_SECONDS = 120;
/** How long an image a client was told exists steers its creates to the hosts that hold it. */
const SHOWN_TTL_SECONDS = 60;

interface Want {
  state: "pending" | "pulled";
  runs: number;
}

export class Wants {
  /** The last change queued per key: the next one starts after it. */
  readonly #queue = new Map<string, Promise<void>>();

  constructor(private store: Store) {}

  /**
   * A client was told the image exists (its inspect answered 200, from a host that holds it).
   * Compose and most SDKs ask that, pull only what is missing, then create and never pull on a
   * 404: their creates of it should go where it is, for SHOWN_TTL_SECONDS (`shown:<image>`).
   */
  shown(image: string): Promise<void> {
    return this.store.set(shownKey(image), "1", SHOWN_TTL_SECONDS);
  }

  async wasShown(image: string): Promise<boolean> {
    return (await this.store.get(shownKey(image))) !== null;
  }

  /** A create for `image` got 404 on `host`: one more run waits for a pull there. */
  missing(image: string, host: Host): Promise<void> {
    return this.#change(image, host, (w) => ({ state: w?.state ?? "pending", runs: (w?.runs ?? 0) + 1 }));
  }

  /** A pull of `image` finished on `host`: runs waiting there may create there now. */
  pulled(image: string, host: Host): Promise<void> {
    return this.#change(image, host, (w) => w && { state: "pulled", runs: w.runs });
  }

  /** A create of `image` succeeded on `host`: one run fewer waits there. */
  created(image: string, host: Host): Promise<void> {
    return this.#change(image, host, (w) => w && w.runs > 1 ? { state: w.state, runs: w.runs - 1 } : null);
  }

  /** The pull failed on `from`, but `to` holds the image: a run waiting on `from` creates on `to`. */
  async moved(image: string, from: Host, to: Host): Promise<void> {
    if (from !== to) await this.created(image, from);
    await this.#change(image, to, (w) => ({ state: "pulled", runs: from === to ? w?.runs ?? 1 : (w?.runs ?? 0) + 1 }));
  }

  /** Which of `hosts` a run waits on for `image` (pulled there or not). */
  wantedAmong(image: string, hosts: Host[]): Promise<Host[]> {
    return this.#among(image, hosts, (w) => w !== null);
  }

  /** Which of `hosts` a waiting run should create on: pulled there, or the image is known there. */
  readyAmong(image: string, hosts: Host[], holds: (h: Host) => boolean): Promise<Host[]> {
    return this.#among(image, hosts, (w, h) => w?.state === "pulled" || (w !== null && holds(h)));
  }

  async #among(image: string, hosts: Host[], keep: (w: Want | null, h: Host) => boolean): Promise<Host[]> {
    const wants = await Promise.all(hosts.map((h) => this.#read(image, h)));
    return hosts.filter((h, i) => keep(wants[i], h));
  }

  async #read(image: string, host: Host): Promise<Want | null> {
    const value = await this.store.get(keyOf(image, host));
    if (value === null) return null;
    const [state, runs] = value.split(":");
    // A bare `pending`/`pulled` (an older flocker sharing the store) is one run.
    return { state: state === "pulled" ? "pulled" : "pending", runs: Math.max(1, Number(runs) || 1) };
  }

  #change(image: string, host: Host, next: (w: Want | null) => Want | null): Promise<void> {
    const key = keyOf(image, host);
    const done = (this.#queue.get(key) ?? Promise.resolve()).then(async () => {
      const current = await this.#read(image, host);
      const want = next(current);
      if (want) await this.store.set(key, `${want.state}:${want.runs}`, WANT_TTL_SECONDS);
      else if (current) await this.store.delete(key);
    });
    const settled = done.catch(() => {});
    this.#queue.set(key, settled);
    void settled.then(() => {
      if (this.#queue.get(key) === settled) this.#queue.delete(key);
    });
    return done;
  }
}

const keyOf = (image: string, host: Host) => `want:${normalizeImageRef(image)}:${host.name}`;
const shownKey = (image: string) => `shown:${normalizeImageRef(image)}`;
