/**
 * `docker ps` over every host. The `since` and `before` filters name a container that only one
 * engine knows (the others would answer "no such container"), so flocker resolves it, asks every
 * engine without those filters, and keeps what was created after (since) or before it, as one
 * engine does. `limit` then applies to the merged list.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson, refusalOf } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { requestJson } from "../upstream/forward.ts";
import { filtersOf, HOST_LABEL, takeHostFilter, valuesOf } from "./host-filter.ts";

type Summary = Record<string, unknown>;

const BOUNDS = ["since", "before"] as const;

/** When a container was created, in ms (the engine's RFC 3339 time; ms precision is plenty across hosts). */
async function createdAt(host: Host, id: string): Promise<number> {
  const { status, body } = await requestJson<{ Created?: string; message?: string }>(host, `/containers/${encodeURIComponent(id)}/json`);
  const ms = status === 200 ? Date.parse(body.Created ?? "") : NaN;
  if (Number.isNaN(ms)) throw new DockerError(status === 404 ? 404 : 502, body.message ?? `no such container: ${id}`);
  return ms;
}

export async function listContainers(ctx: FlockerContext, url: URL): Promise<Response> {
  const query = new URLSearchParams(url.search);
  const filters = filtersOf(query);
  const bounds: { kind: (typeof BOUNDS)[number]; id: string; ms: number }[] = [];
  if (filters && BOUNDS.some((k) => k in filters)) {
    for (const kind of BOUNDS) {
      for (const ref of kind in filters ? valuesOf(kind, filters[kind]) : []) {
        const found = await ctx.locator.container(ref);
        bounds.push({ kind, id: found.id, ms: await createdAt(found.host, found.id) });
      }
      delete filters[kind];
    }
    query.set("filters", JSON.stringify(filters));
    query.delete("limit"); // an engine would cut its list before flocker filters it
  }
  let hosts = ctx.cluster.healthy();
  if (filters) {
    const wanted = takeHostFilter(filters);
    if (wanted) {
      hosts = hosts.filter(wanted);
      query.set("filters", JSON.stringify(filters));
    }
  }
  const { answers } = await fanoutJson<Summary[]>(hosts, `${apiPrefixOf(url.href)}/containers/json?${query}`);
  let list: Summary[] = answers.flatMap(({ host, status, body }) =>
    status === 200 && Array.isArray(body)
      ? body.map((ctr) => ({ ...ctr, Labels: { ...(ctr.Labels as Record<string, string> ?? {}), [HOST_LABEL]: host.name } }))
      : []
  );
  const refused = refusalOf(answers);
  if (refused) return refused;
  if (bounds.length) list = await withinBounds(ctx, list, bounds);
  list.sort((a, b) => Number(b.Created ?? 0) - Number(a.Created ?? 0));
  const limit = Number(url.searchParams.get("limit") ?? -1);
  if (limit > 0) await orderLatest(ctx, list, limit);
  return Response.json(limit > 0 ? list.slice(0, limit) : list);
}

/** The host a listed container came from. */
function hostOf(ctx: FlockerContext, ctr: Summary): Host | undefined {
  return ctx.cluster.byName(String((ctr.Labels as Record<string, string>)[HOST_LABEL]));
}

/** The exact creation time of a listed container (its listed second when its host cannot say). */
function exactCreated(ctx: FlockerContext, ctr: Summary): Promise<number> {
  const host = hostOf(ctx, ctr);
  const seconds = Number(ctr.Created ?? 0) * 1000;
  return host ? createdAt(host, String(ctr.Id)).catch(() => seconds) : Promise.resolve(seconds);
}

/**
 * `ps -l` / `ps -n N`: the list is ordered by creation second; where containers of several hosts
 * share a second among the first N, their exact times decide the order (and which make the cut),
 * as one engine does.
 */
async function orderLatest(ctx: FlockerContext, list: Summary[], limit: number) {
  for (let start = 0; start < Math.min(limit, list.length);) {
    let end = start;
    while (end < list.length && list[end].Created === list[start].Created) end++;
    const group = list.slice(start, end);
    // One engine's order is already exact.
    if (new Set(group.map((c) => hostOf(ctx, c))).size > 1) {
      const times = await Promise.all(group.map((c) => exactCreated(ctx, c)));
      const order = group.map((c, i) => ({ c, t: times[i] })).sort((a, b) => b.t - a.t);
      order.forEach(({ c }, i) => (list[start + i] = c));
    }
    start = end;
  }
}

/** Keep the containers created after every `since` and before every `before` container. */
async function withinBounds(ctx: FlockerContext, list: Summary[], bounds: { kind: string; id: string; ms: number }[]) {
  const kept: Summary[] = [];
  for (const ctr of list) {
    if (bounds.some((b) => b.id === ctr.Id)) continue;
    // The list has creation times in seconds: only a container created in the same second as a
    // bound needs its exact time.
    const seconds = Number(ctr.Created ?? 0);
    let exact: number | undefined;
    const ms = async () => (exact ??= await exactCreated(ctx, ctr));
    let inside = true;
    for (const b of bounds) {
      const boundSeconds = Math.floor(b.ms / 1000);
      const after = seconds !== boundSeconds ? seconds > boundSeconds : (await ms()) > b.ms;
      if (b.kind === "since" ? !after : after) inside = false;
    }
    if (inside) kept.push(ctr);
  }
  return kept;
}
