/**
 * Volumes and networks share one shape: created on every host (see cluster/placement.ts for how
 * the first container that uses one pins it), listed once, inspected where they are used,
 * removed everywhere.
 */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { networkIdKey, pinKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson } from "../upstream/fanout.ts";
import { forward } from "../upstream/forward.ts";
import { readJsonBody } from "./containers.ts";
import { mergePrune } from "./prune.ts";

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
  async function resolve(ref: string): Promise<{ name: string; hosts: Host[] } | undefined> {
    const name = kind.kind === "net" ? (await store.get(networkIdKey(ref))) ?? ref : ref;
    const { answers } = await fanoutJson<Item>(cluster.healthy(), `${base}/${encodeURIComponent(name)}`);
    const found = answers.filter((a) => a.status === 200);
    if (!found.length) return undefined;
    const pinned = await store.get(pinKey(kind.kind, String(found[0].body.Name ?? name)));
    // The pinned copy (the one containers use) answers first.
    found.sort((a, b) => Number(b.host.name === pinned) - Number(a.host.name === pinned));
    return { name: String(found[0].body.Name ?? name), hosts: found.map((a) => a.host) };
  }

  app.get(base, async (c) => {
    const query = new URL(c.req.url).search;
    const { answers, failures } = await fanoutJson(cluster.healthy(), `${base}${query}`);
    const byName = new Map<string, Item>();
    for (const { status, body } of answers) {
      if (status !== 200) continue;
      for (const item of kind.unwrapList(body)) {
        const key = String(item.Name ?? item.Id);
        if (!byName.has(key)) byName.set(key, item);
      }
    }
    return c.json(kind.wrapList([...byName.values()], failures.map((f) => `${f.host.name}: ${f.error}`)));
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
    const { answers } = await fanoutJson(cluster.healthy(), `${base}/prune${query}`, { method: "POST", timeoutMs: 120_000 });
    const merged = mergePrune(answers);
    const names = [...new Set((merged[kind.pruned] as string[] | null) ?? [])];
    merged[kind.pruned] = names;
    for (const name of names) await store.delete(pinKey(kind.kind, name));
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
    const results = await Promise.all(found.hosts.map((h) => forward(h, c.req.raw, { path })));
    const failed = results.find((r) => r.status >= 300);
    if (failed) return failed;
    await store.delete(pinKey(kind.kind, found.name));
    return results[0];
  });

  // connect / disconnect: on the pinned copy (where its containers are).
  app.all(`${base}/:ref/*`, async (c) => {
    const ref = c.req.param("ref");
    const found = await resolve(ref);
    if (!found) throw new DockerError(404, kind.notFound(ref));
    return forward(found.hosts[0], c.req.raw);
  });

  return app;
}
