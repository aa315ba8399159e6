/**
 * Where a container or exec instance lives. Lookup order as docker's own: full id, name, unique
 * id prefix; then, for containers made outside flocker or forgotten on restart, ask the hosts.
 */
import type { Cluster } from "./cluster.ts";
import type { Host } from "./host.ts";
import { StoreUnavailableError, type Store } from "../store/types.ts";
import { DockerError, noSuchContainer, noSuchExec } from "../errors.ts";
import { fanoutJson, messageOf } from "../upstream/fanout.ts";

export interface Located {
  host: Host;
  id: string;
  name?: string;
}

const FULL_ID = /^[0-9a-f]{64}$/;
const REF = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export class Locator {
  /**
   * id -> its host's name and when this process learned of it: for prefix lookups (the store has
   * no scan) and for sweep().
   */
  readonly #ids = new Map<string, { host: string; since: number }>();

  constructor(private store: Store, private cluster: Cluster) {}

  async recordContainer(id: string, host: Host, name?: string) {
    this.#ids.set(id, { host: host.name, since: Date.now() });
    await this.store.set(`ctr:${id}`, `${host.name}\t${name ?? ""}`);
    if (name) await this.store.set(`name:${name}`, id);
  }

  async forgetContainer(id: string, name?: string) {
    this.#ids.delete(id);
    const record = await this.store.get(`ctr:${id}`);
    const recordedName = name ?? record?.split("\t")[1];
    await this.store.delete(`ctr:${id}`);
    if (recordedName && (await this.store.get(`name:${recordedName}`)) === id) {
      await this.store.delete(`name:${recordedName}`);
    }
  }

  /**
   * Forget the containers their hosts no longer hold: removed behind flocker's back (`docker run
   * --rm` is removed by its engine; `docker rm` straight on an engine), their records would stay in
   * the store for good, one per container ever run. Only hosts that answered count, and only
   * records learned before their lists were asked for. Forgetting is safe: a lookup that finds no
   * record asks the hosts. Returns how many were forgotten.
   */
  async sweep(): Promise<number> {
    const asked = Date.now();
    const { answers } = await fanoutJson<{ Id: string }[]>(this.cluster.healthy(), "/containers/json?all=1");
    const held = new Map<string, Set<string>>();
    for (const { host, status, body } of answers) {
      if (status === 200 && Array.isArray(body)) held.set(host.name, new Set(body.map((c) => c.Id)));
    }
    let forgotten = 0;
    for (const [id, { host, since }] of [...this.#ids]) {
      const ids = held.get(host);
      if (!ids || ids.has(id) || since >= asked) continue;
      await this.forgetContainer(id);
      forgotten++;
    }
    return forgotten;
  }

  /** Hosts answer for every container they hold; used to rebuild routing after a restart. */
  async rebuild(): Promise<number> {
    const { answers } = await fanoutJson<{ Id: string; Names?: string[] }[]>(
      this.cluster.healthy(),
      "/containers/json?all=1",
    );
    let n = 0;
    for (const { host, status, body } of answers) {
      if (status !== 200 || !Array.isArray(body)) continue;
      for (const c of body) {
        const name = c.Names?.[0]?.replace(/^\//, "");
        this.#ids.set(c.Id, { host: host.name, since: Date.now() });
        if ((await this.store.get(`ctr:${c.Id}`)) === null) await this.recordContainer(c.Id, host, name);
        n++;
      }
    }
    return n;
  }

  async container(ref: string): Promise<Located> {
    const key = ref.replace(/^\//, "");
    // Names and ids only: nothing that could reshape the path sent to an engine (nor is it sent to one).
    if (!REF.test(key)) throw new DockerError(404, `No such container: ${ref}`);
    try {
      const known = await this.#known(key);
      if (known) return known;
    } catch (err) {
      // Store down: the hosts are the truth, ask them.
      if (!(err instanceof StoreUnavailableError)) throw err;
    }
    return this.#ask(key, ref);
  }

  async #known(key: string): Promise<Located | undefined> {
    const byId = FULL_ID.test(key) ? await this.#fromRecord(key) : undefined;
    if (byId) return byId;
    const named = await this.store.get(`name:${key}`);
    if (named && !named.startsWith("pending:")) {
      const found = await this.#fromRecord(named);
      if (found) return found;
    }
    if (/^[0-9a-f]+$/.test(key)) {
      const matches = [...this.#ids.keys()].filter((id) => id.startsWith(key));
      if (matches.length === 1) {
        const found = await this.#fromRecord(matches[0]);
        if (found) return found;
      }
    }
    return undefined;
  }

  async #fromRecord(id: string): Promise<Located | undefined> {
    const record = await this.store.get(`ctr:${id}`);
    if (!record) return undefined;
    const [hostName, name] = record.split("\t");
    const host = this.cluster.byName(hostName);
    if (!host) return undefined;
    if (this.#ids.get(id)?.host !== host.name) this.#ids.set(id, { host: host.name, since: Date.now() });
    return { host, id, name: name || undefined };
  }

  async #ask(key: string, ref: string): Promise<Located> {
    const { answers } = await fanoutJson<{ Id: string; Name: string }>(
      this.cluster.healthy(),
      `/containers/${encodeURIComponent(key)}/json`,
    );
    const found = answers.filter((a) => a.status === 200);
    if (found.length === 1) {
      const { host, body } = found[0];
      const name = body.Name?.replace(/^\//, "");
      await this.recordContainer(body.Id, host, name).catch(() => {}); // best effort: the store may be down
      return { host, id: body.Id, name };
    }
    if (found.length > 1) {
      // Prefer an exact id or name over prefix matches, as a single engine does.
      const exact = found.filter((a) => a.body.Id === key || a.body.Name?.replace(/^\//, "") === key);
      if (exact.length === 1) return { host: exact[0].host, id: exact[0].body.Id };
      throw new DockerError(400, `multiple IDs found with provided prefix: ${key}`);
    }
    const other = answers.find((a) => a.status !== 404);
    if (other) throw new DockerError(other.status as 400, messageOf(other.body));
    throw noSuchContainer(ref);
  }

  async recordExec(id: string, host: Host) {
    await this.store.set(`exec:${id}`, host.name, EXEC_TTL_SECONDS);
  }

  async exec(ref: string): Promise<Host> {
    if (!/^[0-9a-f]{1,64}$/.test(ref)) throw noSuchExec(ref);
    const hostName = await this.store.get(`exec:${ref}`).catch((err) => {
      if (err instanceof StoreUnavailableError) return null; // ask the hosts instead
      throw err;
    });
    const host = hostName ? this.cluster.byName(hostName) : undefined;
    if (host) return host;
    const { answers } = await fanoutJson(this.cluster.healthy(), `/exec/${ref}/json`);
    const found = answers.find((a) => a.status === 200);
    if (!found) throw noSuchExec(ref);
    await this.recordExec(ref, found.host).catch(() => {});
    return found.host;
  }
}

/**
 * How long an exec instance's host is kept. An engine forgets a finished exec within minutes
 * (dockerd 20.10 here: `GET /exec/ID/json` answered 404 some 15 minutes after it exited), so a
 * day's worth of records (one per `docker exec`, the key a CI runner or a monitor makes all day)
 * only took memory, or Redis. An exec that runs longer is found by asking the hosts once, then
 * recorded again.
 */
const EXEC_TTL_SECONDS = 3600;
