/**
 * Volumes and networks share one shape: created on one host (see cluster/placement.ts), listed
 * once across the flock, inspected where they live, removed everywhere they exist.
 */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { placeResource, resourceKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson } from "../upstream/fanout.ts";
import { forward } from "../upstream/forward.ts";
import { readJsonBody } from "./containers.ts";
import { mergePrune } from "./prune.ts";

type Item = Record<string, unknown> & { Name?: string; Id?: string; Labels?: Record<string, string> | null };

export interface ResourceKind {
  kind: "vol" | "net";
  /** `/volumes` or `/networks` */
  base: string;
  noun: string;
  /** How the list comes back: `{Volumes: [...]}` or a bare array. */
  unwrapList: (body: unknown) => Item[];
  wrapList: (items: Item[], warnings: string[]) => unknown;
  /** Id and name of a created resource, from the create answer and body. */
  created: (answer: Item, body: Item) => { id?: string; name?: string };
}

export function namedResourceRoutes(ctx: FlockerContext, kind: ResourceKind) {
  const app = new Hono();
  const { cluster, store } = ctx;
  const { base, noun } = kind;

  /** Host holding a resource, by record, else by asking every host. */
  async function locate(ref: string): Promise<Host[]> {
    const recorded = await store.get(resourceKey(kind.kind, ref));
    const host = recorded ? cluster.byName(recorded) : undefined;
    if (host) return [host];
    const { answers } = await fanoutJson(cluster.healthy(), `${base}/${encodeURIComponent(ref)}`);
    return answers.filter((a) => a.status === 200).map((a) => a.host);
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
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new DockerError(400, `invalid ${noun} config`);
    const name = typeof body.Name === "string" ? body.Name : undefined;
    if (name) {
      const existing = await locate(name);
      // Volumes: creating an existing one is a no-op in docker; answer from where it lives.
      if (existing.length && kind.kind === "vol") return forward(existing[0], c.req.raw, { body: JSON.stringify(body) });
    }
    const host = await placeResource(ctx, body.Labels);
    const res = await forward(host, c.req.raw, { body: JSON.stringify(body), headers: { "content-type": "application/json" } });
    if (res.status !== 201 && res.status !== 200) return res;
    const answer = (await res.json()) as Item;
    const { id, name: createdName } = kind.created(answer, body);
    for (const key of [id, createdName]) if (key) await store.set(resourceKey(kind.kind, key), host.name);
    return c.json(answer, res.status as 201);
  });

  app.post(`${base}/prune`, async (c) => {
    const query = new URL(c.req.url).search;
    const { answers } = await fanoutJson(cluster.healthy(), `${base}/prune${query}`, { method: "POST", timeoutMs: 60_000 });
    return c.json(mergePrune(answers));
  });

  app.get(`${base}/:ref`, async (c) => {
    const ref = c.req.param("ref");
    const [host] = await locate(ref);
    if (!host) throw new DockerError(404, `${noun === "volume" ? "get " + ref + ": no such volume" : "network " + ref + " not found"}`);
    return forward(host, c.req.raw);
  });

  app.delete(`${base}/:ref`, async (c) => {
    const ref = c.req.param("ref");
    const hosts = await locate(ref);
    if (!hosts.length) throw new DockerError(404, `${noun === "volume" ? "get " + ref + ": no such volume" : "network " + ref + " not found"}`);
    const results = await Promise.all(hosts.map((h) => forward(h, c.req.raw)));
    const failed = results.find((r) => r.status >= 300);
    if (failed) return failed;
    await store.delete(resourceKey(kind.kind, ref));
    return results[0];
  });

  // connect / disconnect and anything else under a resource: where it lives.
  app.all(`${base}/:ref/*`, async (c) => {
    const ref = c.req.param("ref");
    const [host] = await locate(ref);
    if (!host) throw new DockerError(404, `${noun} ${ref} not found`);
    return forward(host, c.req.raw);
  });

  return app;
}

