/**
 * Volumes and networks share one shape: created on every host (see cluster/placement.ts for how
 * the first container that uses one pins it), listed once, inspected where they are used,
 * removed everywhere.
 */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { networkIdKey, pinKey, PREDEFINED_NETWORKS, PROJECT_LABEL, projectKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson, refusalOf } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { forward } from "../upstream/forward.ts";
import { readJsonBody } from "./containers.ts";
import { mergePrune, stillHeld } from "./prune.ts";

type Item = Record<string, unknown> & { Name?: string; Id?: string };

export interface ResourceKind {
  kind: "vol" | "net";
  /** `/volumes` or `/networks` */
  base: string;
  /** Docker's not-found message. */
  notFound: (ref: string) => string;
  /** How the list comes back: `{Volumes: [...]}` or a bare array. */
  unwrapList: (body: unknown) => Item[];
  wrapList: (items: Item[], warnings: string[]) => unknown;
  /** Field of a prune answer listing what was deleted. */
  pruned: string;
}

export function namedResourceRoutes(ctx: FlockerContext, kind: ResourceKind) {
  const app = new Hono();
  const { cluster, store } = ctx;
  const { base } = kind;

  /** The resource's name (ids differ per host), from the store or by asking the hosts. */
  async function resolve(ref: string): Promise<{ name: string; hosts: Host[]; body: Item; ids: string[] } | undefined> {
    const name = kind.kind === "net" ? (await store.get(networkIdKey(ref))) ?? ref : ref;
    const ask = async (n: string) =>
      (await fanoutJson<Item>(cluster.healthy(), `${base}/${encodeURIComponent(n)}`)).answers.filter((a) => a.status === 200);
    let found = await ask(name);
    if (!found.length) return undefined;
    const realName = String(found[0].body.Name ?? name);
    if (realName !== name) {
      // Found by one host's id (or id prefix): every copy shares the name, so find them all by it.
      const copies = (await ask(realName)).filter((a) => a.body.Name === realName);
      if (copies.length) found = copies;
    }
    const pinned = await store.get(pinKey(kind.kind, realName));
    // The pinned copy (the one containers use) answers first.
    found.sort((a, b) => Number(b.host.name === pinned) - Number(a.host.name === pinned));
    return { name: realName, hosts: found.map((a) => a.host), body: found[0].body, ids: found.map((a) => String(a.body.Id ?? "")) };
  }

  /** Forget a compose project's pin once its resources go and no container of it is left. */
  async function releaseProject(project: string) {
    const hostName = await store.get(projectKey(project));
    if (!hostName) return;
    const host = cluster.byName(hostName);
    if (host) {
      const filters = encodeURIComponent(JSON.stringify({ label: [`${PROJECT_LABEL}=${project}`] }));
      const { answers } = await fanoutJson<unknown[]>([host], `/containers/json?all=1&limit=1&filters=${filters}`);
      if (answers[0]?.status !== 200 || !Array.isArray(answers[0].body) || answers[0].body.length) return;
    }
    await store.delete(projectKey(project));
  }

  app.get(base, async (c) => {
    const query = new URL(c.req.url).search;
    const { answers, failures } = await fanoutJson(cluster.healthy(), `${apiPrefixOf(c.req.url)}${base}${query}`);
    const refused = refusalOf(answers);
    if (refused) return refused;
    // One entry per name: name -> host name -> that host's copy.
    const byName = new Map<string, Map<string, Item>>();
    const listed = new Set<string>();
    for (const { host, status, body } of answers) {
      if (status !== 200) continue;
      listed.add(host.name);
      for (const item of kind.unwrapList(body)) {
        const key = String(item.Name ?? item.Id);
        const copies = byName.get(key) ?? byName.set(key, new Map()).get(key)!;
        if (!copies.has(host.name)) copies.set(host.name, item);
      }
    }
    // Where a copy is pinned, that copy is the resource: its id, and whether it matches the filters
    // (an unused copy elsewhere is `dangling` while the pinned one is in use). Asked only when copies
    // can differ: network ids always do; a volume listed by some hosts only may.
    const items = await Promise.all([...byName].map(async ([key, copies]) => {
      const first = copies.values().next().value as Item;
      if (!(kind.kind === "net" && copies.size > 1) && copies.size >= listed.size) return first;
      const pinned = await store.get(pinKey(kind.kind, key));
      if (!pinned || !listed.has(pinned)) return first;
      return copies.get(pinned);
    }));
    return c.json(kind.wrapList(items.filter((i): i is Item => !!i), failures.map((f) => `${f.host.name}: ${f.error}`)));
  });

  app.post(`${base}/create`, async (c) => {
    const body = (await readJsonBody(c)) as Item;
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new DockerError(400, "invalid JSON body: expected an object");
    // Every host gets the same name, so a nameless volume is named here (as docker would: 64 hex).
    if (kind.kind === "vol" && !body.Name) body.Name = crypto.randomUUID().replace(/-/g, "") + crypto.randomUUID().replace(/-/g, "");
    const hosts = cluster.healthy();
    if (!hosts.length) throw new DockerError(503, "flocker: no Docker host is reachable");
    const payload = JSON.stringify(body);
    const results = await Promise.all(hosts.map((h) => forward(h, c.req.raw, { body: payload, headers: { "content-type": "application/json" } })));
    const okIndex = results.findIndex((r) => r.status < 300);
    if (okIndex < 0) return results[0];
    const answers = await Promise.all(results.map((r) => (r.status < 300 ? r.json() as Promise<Item> : r.body?.cancel())));
    if (kind.kind === "net") {
      for (const a of answers) if (a && a.Id) await store.set(networkIdKey(a.Id), String(body.Name));
    }
    return c.json(answers[okIndex] as Item, results[okIndex].status as 201);
  });

  app.post(`${base}/prune`, async (c) => {
    const query = new URL(c.req.url).search;
    const { answers } = await fanoutJson(cluster.healthy(), `${apiPrefixOf(c.req.url)}${base}/prune${query}`, { method: "POST", timeoutMs: 120_000 });
    const refused = refusalOf(answers);
    if (refused) return refused;
    const merged = mergePrune(answers);
    const names = [...new Set((merged[kind.pruned] as string[] | null) ?? [])];
    // Each host prunes its unused copies: a name is reported pruned only when no host holds it any
    // more (a copy in use somewhere keeps it); its pin goes with the copy it pinned.
    const held = names.length ? await stillHeld(cluster.healthy(), base, (list) => kind.unwrapList(list).map((i) => String(i.Name))) : new Set();
    const prunedOn = (hostName: string, name: string) =>
      answers.some((a) => a.host.name === hostName && a.status === 200 && ((a.body as Item)?.[kind.pruned] as string[] | null)?.includes(name));
    for (const name of names) {
      const pinned = await store.get(pinKey(kind.kind, name));
      if (pinned && (!held.has(name) || prunedOn(pinned, name))) await store.delete(pinKey(kind.kind, name));
    }
    merged[kind.pruned] = names.filter((name) => !held.has(name));
    return c.json(merged);
  });

  app.get(`${base}/:ref`, async (c) => {
    const ref = c.req.param("ref");
    const found = await resolve(ref);
    if (!found) throw new DockerError(404, kind.notFound(ref));
    return forward(found.hosts[0], c.req.raw, { path: `${new URL(c.req.url).pathname.replace(/[^/]+$/, encodeURIComponent(found.name))}${new URL(c.req.url).search}` });
  });

  app.delete(`${base}/:ref`, async (c) => {
    const ref = c.req.param("ref");
    const found = await resolve(ref);
    if (!found) throw new DockerError(404, kind.notFound(ref));
    const path = new URL(c.req.url).pathname.replace(/[^/]+$/, encodeURIComponent(found.name)) + new URL(c.req.url).search;
    // The pinned copy first: if it is in use there, nothing is removed anywhere.
    const [main, ...rest] = found.hosts;
    const first = await forward(main, c.req.raw, { path });
    if (first.status >= 300) return first;
    await store.delete(pinKey(kind.kind, found.name));
    if (kind.kind === "net") for (const id of found.ids) if (id) await store.delete(networkIdKey(id));
    const results = await Promise.all(rest.map((h) => forward(h, c.req.raw, { path })));
    const failed = results.find((r) => r.status >= 300 && r.status !== 404);
    await Promise.all(results.filter((r) => r !== failed).map((r) => r.body?.cancel()));
    if (failed) {
      await first.body?.cancel();
      return failed;
    }
    const project = (found.body.Labels as Record<string, string> | null | undefined)?.[PROJECT_LABEL];
    if (project) await releaseProject(project).catch(() => {});
    return first;
  });

  // connect / disconnect: on the container's host, which must be where the network is pinned
  // (a connect pins an unpinned one there). Anything else: on the pinned copy. By name: ids differ.
  app.all(`${base}/:ref/*`, async (c) => {
    const ref = c.req.param("ref");
    const found = await resolve(ref);
    if (!found) throw new DockerError(404, kind.notFound(ref));
    const url = new URL(c.req.url);
    const [, version = "", tail = ""] = /^(\/v[\d.]+)?\/[^/]+\/[^/]+\/(.*)$/.exec(url.pathname) ?? [];
    const path = `${version}${base}/${encodeURIComponent(found.name)}/${tail}${url.search}`;
    if (kind.kind !== "net" || c.req.method !== "POST" || (tail !== "connect" && tail !== "disconnect")) {
      return forward(found.hosts[0], c.req.raw, { path });
    }
    const body = (await readJsonBody(c)) as { Container?: unknown };
    if (!body || typeof body !== "object" || typeof body.Container !== "string") {
      throw new DockerError(400, "invalid JSON body: expected an object with Container");
    }
    const ctr = await ctx.locator.container(body.Container);
    if (tail === "connect" && !PREDEFINED_NETWORKS.has(found.name)) {
      const key = pinKey("net", found.name);
      const pinned = (await store.setIfAbsent(key, ctr.host.name)) ? ctr.host.name : await store.get(key);
      if (pinned && pinned !== ctr.host.name) {
        throw new DockerError(409, `flocker: network ${found.name} is on host ${pinned} but container ${body.Container} is on host ${ctr.host.name}; they cannot be joined`);
      }
    }
    return forward(ctr.host, c.req.raw, { path, body: JSON.stringify(body), headers: { "content-type": "application/json" } });
  });

  return app;
}
