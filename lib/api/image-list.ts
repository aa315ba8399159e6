/**
 * `docker images` over every host: one entry per image id, its tags, digests and container counts
 * joined, and the hosts holding it in a `flocker.hosts` label. The `before` and `since` filters name
 * an image that perhaps only some hosts hold (the others would refuse: "No such image"), so flocker
 * resolves it, asks every engine without those filters, and keeps the images created before / after
 * it (strictly, by the image's own creation time), as one engine does.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { fanoutJson, refusalOf } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { requestJson } from "../upstream/forward.ts";
import { filtersOf, valuesOf } from "./host-filter.ts";

export type ImageSummary = Record<string, unknown> & { Id: string; RepoTags?: string[] | null; RepoDigests?: string[] | null };

const BOUNDS = ["before", "since"] as const;
type Bound = { kind: (typeof BOUNDS)[number]; created: bigint };

/**
 * An RFC 3339 time as nanoseconds since the epoch: images made within one second are told apart
 * as the engine does (it compares the full times; the list has seconds only).
 */
export function nanosOf(rfc3339: string): bigint | undefined {
  const m = /^(.*?\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(rfc3339);
  const ms = m ? Date.parse(m[1] + m[3]) : NaN;
  if (!m || Number.isNaN(ms)) return undefined;
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0"));
}

/** An image's creation time, from the first host that holds it. */
async function createdOf(hosts: Host[], ref: string): Promise<bigint | undefined> {
  const { answers } = await fanoutJson<{ Created?: string }>(hosts, `/images/${encodeURIComponent(ref)}/json`);
  for (const { status, body } of answers) {
    const created = status === 200 ? nanosOf(String(body?.Created ?? "")) : undefined;
    if (created !== undefined) return created;
  }
}

export async function listImages(ctx: FlockerContext, url: URL): Promise<Response> {
  const hosts = ctx.cluster.healthy();
  const query = new URLSearchParams(url.search);
  const filters = filtersOf(query);
  const bounds: Bound[] = [];
  if (filters && BOUNDS.some((k) => k in filters)) {
    for (const kind of BOUNDS) {
      for (const ref of kind in filters ? valuesOf(kind, filters[kind]) : []) {
        const created = await createdOf(hosts, ref);
        // No host holds it: the engines refuse the list in their own words, as one engine does.
        if (created === undefined) return refusalOfList(hosts, url);
        bounds.push({ kind, created });
      }
      delete filters[kind];
    }
    query.set("filters", JSON.stringify(filters));
  }
  const { answers } = await fanoutJson<ImageSummary[]>(hosts, `${apiPrefixOf(url.href)}/images/json?${query}`);
  const refused = refusalOf(answers);
  if (refused) return refused;
  const merged = new Map<string, ImageSummary & { hosts: Host[] }>();
  for (const { host, status, body } of answers) {
    if (status !== 200 || !Array.isArray(body)) continue;
    for (const img of body) {
      const seen = merged.get(img.Id);
      if (!seen) {
        merged.set(img.Id, { ...img, hosts: [host] });
        continue;
      }
      seen.hosts.push(host);
      seen.RepoTags = union(seen.RepoTags, img.RepoTags);
      seen.RepoDigests = union(seen.RepoDigests, img.RepoDigests);
      if (typeof seen.Containers === "number" && typeof img.Containers === "number" && img.Containers > 0) {
        seen.Containers = Math.max(0, seen.Containers) + img.Containers;
      }
    }
  }
  let entries = [...merged.values()];
  if (bounds.length) entries = await withinBounds(entries, bounds);
  const list: Record<string, unknown>[] = entries.map(({ hosts, ...img }) => ({
    ...img,
    Labels: { ...(img.Labels as Record<string, string> | null ?? {}), "flocker.hosts": hosts.map((h) => h.name).join(",") },
  }));
  list.sort((a, b) => Number(b.Created ?? 0) - Number(a.Created ?? 0));
  return Response.json(list);
}

/**
 * Keep the images created strictly before every `before` image and after every `since` one. The
 * list has creation seconds: only an image of the same second as a bound is asked its exact time.
 */
async function withinBounds<T extends ImageSummary & { hosts: Host[] }>(entries: T[], bounds: Bound[]): Promise<T[]> {
  const kept: T[] = [];
  for (const img of entries) {
    const seconds = BigInt(Math.trunc(Number(img.Created ?? 0)));
    let exact: bigint | undefined;
    const nanos = async () => {
      if (exact !== undefined) return exact;
      const { body } = await requestJson<{ Created?: string }>(img.hosts[0], `/images/${encodeURIComponent(img.Id)}/json`)
        .catch(() => ({ body: {} as { Created?: string } }));
      return (exact = nanosOf(String(body.Created ?? "")) ?? seconds * 1_000_000_000n);
    };
    let inside = true;
    for (const b of bounds) {
      const boundSeconds = b.created / 1_000_000_000n;
      const order = seconds !== boundSeconds ? (seconds < boundSeconds ? -1 : 1) : Math.sign(Number((await nanos()) - b.created));
      if (b.kind === "before" ? order >= 0 : order <= 0) inside = false;
    }
    if (inside) kept.push(img);
  }
  return kept;
}

async function refusalOfList(hosts: Host[], url: URL): Promise<Response> {
  const { answers } = await fanoutJson(hosts, `${apiPrefixOf(url.href)}/images/json${url.search}`);
  return refusalOf(answers) ?? Response.json({ message: "No such image" }, { status: 404 });
}

function union(a?: string[] | null, b?: string[] | null): string[] {
  return [...new Set([...(a ?? []), ...(b ?? [])])];
}
