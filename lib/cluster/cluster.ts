/** The flock: its hosts, their health, and what each one holds. */
import { type Host, type HostAddress, newHostStatus } from "./host.ts";
import { requestJson } from "../upstream/forward.ts";
import { fanoutJson } from "../upstream/fanout.ts";

export type HostFetchFactory = (address: HostAddress) => (request: Request) => Promise<Response>;

export interface ClusterOptions {
  /** Milliseconds between health probes (default 5000). */
  probeIntervalMs?: number;
  /** Deadline for one probe (default 2000). */
  probeTimeoutMs?: number;
  /** Each engine's `ask` (see Host.ask); without it, questions go by `fetch`. */
  hostAsk?: HostFetchFactory;
}

interface VersionBody {
  ApiVersion?: string;
  MinAPIVersion?: string;
  Version?: string;
}
interface InfoBody {
  Containers?: number;
  Labels?: string[];
}
interface ImageSummary {
  Id: string;
  RepoTags?: string[] | null;
}

export class Cluster {
  hosts: Host[] = [];
  #generation = 0;
  readonly #onGeneration = new Set<(generation: number) => void>();
  /** Image references (tags and ids) each host holds, refreshed by probes and after pulls. */
  readonly images = new Map<string, Set<string>>();
  #timer?: ReturnType<typeof setInterval>;
  readonly probeIntervalMs: number;
  readonly probeTimeoutMs: number;
  readonly #makeAsk?: HostFetchFactory;

  constructor(addresses: HostAddress[], private makeFetch: HostFetchFactory, options: ClusterOptions = {}) {
    this.probeIntervalMs = options.probeIntervalMs ?? 5000;
    this.probeTimeoutMs = options.probeTimeoutMs ?? 2000;
    this.#makeAsk = options.hostAsk;
    this.setAddresses(addresses);
  }

  /**
   * Bumped when the inventory, an engine's API version or whether it is down changes: what was
   * derived from them (kept routes) is stale.
   */
  get generation(): number {
    return this.#generation;
  }

  /** Hear each new generation (other threads' route caches follow it). Returns the unsubscribe. */
  onGeneration(listener: (generation: number) => void): () => void {
    this.#onGeneration.add(listener);
    return () => this.#onGeneration.delete(listener);
  }

  #bump() {
    this.#generation++;
    for (const listener of this.#onGeneration) listener(this.#generation);
  }

  /** Replace the inventory; hosts already known keep their state. */
  setAddresses(addresses: HostAddress[]) {
    this.#bump();
    const known = new Map(this.hosts.map((h) => [h.address, h]));
    this.hosts = addresses.map((a) => {
      const old = known.get(a.address);
      if (old) return Object.assign(old, { name: a.name });
      const host: Host = { ...a, status: newHostStatus(), fetch: this.makeFetch(a), ask: this.#makeAsk?.(a) };
      return host;
    });
    return this.hosts.filter((h) => !known.has(h.address));
  }

  byName(name: string): Host | undefined {
    return this.hosts.find((h) => h.name === name) ?? this.hosts.find((h) => h.address === name);
  }

  /** Hosts that answer: fan-outs go to these. */
  healthy(): Host[] {
    return this.hosts.filter((h) => h.status.state !== "unhealthy");
  }

  /** Hosts that may receive new containers: healthy (a recovering host must answer twice), not drained. */
  schedulable(): Host[] {
    return this.hosts.filter((h) => h.status.state === "healthy" && !h.status.drained);
  }

  /** The lowest API version among answering hosts, so clients never speak past the oldest engine. */
  apiVersion(): string | undefined {
    let min: string | undefined;
    for (const h of this.hosts) {
      const v = h.status.apiVersion;
      if (v && (!min || compareVersions(v, min) < 0)) min = v;
    }
    return min;
  }

  /** The highest MinAPIVersion among hosts: older clients are refused, as every engine would. */
  minApiVersion(): string | undefined {
    let max: string | undefined;
    for (const h of this.hosts) {
      const v = h.status.minApiVersion;
      if (v && (!max || compareVersions(v, max) > 0)) max = v;
    }
    return max;
  }

  holdsImage(host: Host, ref: string): boolean {
    return this.images.get(host.name)?.has(normalizeImageRef(ref)) ?? false;
  }

  /** The healthy hosts that hold an image, asked of them (holdsImage answers from the last probe's list). */
  async imageHolders(ref: string): Promise<Host[]> {
    const { answers } = await fanoutJson(this.healthy(), `/images/${encodeURIComponent(ref)}/json`);
    return answers.filter((a) => a.status === 200).map((a) => a.host);
  }

  noteImage(host: Host, ref: string) {
    let set = this.images.get(host.name);
    if (!set) this.images.set(host.name, (set = new Set()));
    set.add(normalizeImageRef(ref));
  }

  async probe(host: Host): Promise<void> {
    const timeoutMs = this.probeTimeoutMs;
    try {
      const [version, info, images] = await Promise.all([
        requestJson<VersionBody>(host, "/version", { timeoutMs }),
        requestJson<InfoBody>(host, "/info", { timeoutMs }),
        requestJson<ImageSummary[]>(host, "/images/json", { timeoutMs }),
      ]);
      if (version.status !== 200 || info.status !== 200) throw new Error(`status ${version.status}/${info.status}`);
      const s = host.status;
      if (s.apiVersion !== version.body.ApiVersion || s.state === "unhealthy") this.#bump();
      s.apiVersion = version.body.ApiVersion;
      s.minApiVersion = version.body.MinAPIVersion;
      s.version = version.body.Version;
      s.containers = info.body.Containers ?? 0;
      s.labels = info.body.Labels ?? [];
      // Back from a failure: recovering until the next probe also answers.
      s.state = s.state === "unhealthy" ? "recovering" : "healthy";
      s.failures = 0;
      s.nextProbe = 0;
      s.lastSeen = Date.now();
      if (images.status === 200 && Array.isArray(images.body)) {
        const set = new Set<string>();
        for (const img of images.body) {
          set.add(img.Id);
          for (const t of img.RepoTags ?? []) set.add(normalizeImageRef(t));
        }
        this.images.set(host.name, set);
      }
    } catch (err) {
      this.markFailed(host, err);
    }
  }

  markFailed(host: Host, err: unknown) {
    const s = host.status;
    s.failures++;
    s.lastError = err instanceof Error ? err.message : String(err);
    if (s.state !== "unhealthy") {
      s.state = "unhealthy";
      this.#bump();
    }
    // Back off: a dead host is asked less and less often (at most 8 intervals apart, and 30 s).
    s.nextProbe = Date.now() + Math.min(30_000, this.probeIntervalMs * 2 ** Math.min(3, s.failures - 1));
  }

  probeAll(): Promise<void> {
    const now = Date.now();
    return Promise.all(this.hosts.filter((h) => !(h.status.nextProbe! > now)).map((h) => this.probe(h))).then(() => {});
  }

  start() {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.probeAll(), this.probeIntervalMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  stop() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return d;
  }
  return 0;
}

/** `busybox` -> `docker.io/library/busybox:latest`-style key, so tags compare equal however written. */
export function normalizeImageRef(ref: string): string {
  if (ref.startsWith("sha256:")) return ref;
  let name = ref;
  let tag = "";
  const at = name.indexOf("@");
  if (at >= 0) return name;
  const slash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  if (colon > slash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
  }
  const first = name.split("/")[0];
  const hasRegistry = name.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost");
  if (!hasRegistry) name = name.includes("/") ? `docker.io/${name}` : `docker.io/library/${name}`;
  return `${name}:${tag || "latest"}`;
}
