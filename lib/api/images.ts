/** Images across the flock: list merged, pulls routed by the run dance, per-image calls to holders. */
import { Hono } from "hono";
import type { Context } from "hono";
import type { FlockerContext, RegistryCredentials } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson, messageOf, refusalOf } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { forward, forwardToAnyHealthy } from "../upstream/forward.ts";
import { mergeProgress, type ProgressSource } from "../upstream/progress.ts";
import { localImageKey } from "../cluster/placement.ts";
import { mergePrune, stillHeld } from "./prune.ts";
import { importImage } from "./build.ts";
import { joinImageArchives } from "./image-archive.ts";
import { type ImageSummary, listImages } from "./image-list.ts";

/** The reference a pull request names: `fromImage` plus `tag` (which may be a digest). */
export function pullReference(fromImage: string, tag?: string): string {
  if (!tag) return fromImage;
  return tag.startsWith("sha256:") ? `${fromImage}@${tag}` : `${fromImage}:${tag}`;
}

/** Registry host of an image reference, as docker's config.json `auths` keys it. */
export function registryOf(ref: string): string {
  const first = ref.split("/")[0];
  if (ref.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) return first;
  return "https://index.docker.io/v1/";
}

export function encodeAuth(creds: RegistryCredentials | undefined): string {
  const json = JSON.stringify(creds ?? {});
  return btoa(json).replace(/\+/g, "-").replace(/\//g, "_");
}

/** Start a pull on each host; resolves once every host has answered with its status. */
export async function startPulls(
  ctx: FlockerContext,
  hosts: Host[],
  path: string,
  headers: Record<string, string>,
): Promise<{ host: Host; res?: Response; error?: string }[]> {
  return Promise.all(hosts.map(async (host) => {
    try {
      const res = await host.fetch(new Request(host.baseUrl + path, { method: "POST", headers }));
      return { host, res };
    } catch (err) {
      ctx.cluster.markFailed(host, err);
      return { host, error: `host ${host.name} unreachable: ${(err as Error).message}` };
    }
  }));
}

/** Pull on one host and wait for the end; used by auto mode. Throws a readable error. */
export async function pullOnHost(ctx: FlockerContext, host: Host, image: string): Promise<void> {
  const ref = normalizeRefForPull(image);
  const registry = registryOf(image);
  const creds = await ctx.hooks.registryAuth?.(registry);
  const [{ res, error }] = await startPulls(ctx, [host], `/images/create?fromImage=${encodeURIComponent(ref)}`, {
    "X-Registry-Auth": encodeAuth(creds && { serveraddress: registry, ...creds }),
  });
  const fail = (why: string) => new DockerError(500, `flocker: pulling ${image} on host ${host.name} failed: ${why}`);
  if (!res) throw fail(error ?? "no response");
  const text = await res.text();
  if (res.status !== 200) throw fail(messageOf(safeJson(text)));
  for (const line of text.split("\n")) {
    const parsed = safeJson(line) as { error?: string } | undefined;
    if (parsed?.error) throw fail(parsed.error);
  }
  ctx.cluster.noteImage(host, image);
}

function normalizeRefForPull(image: string) {
  // The engine takes `name:tag` or `name@digest` in fromImage; a bare name would pull every tag.
  const slash = image.lastIndexOf("/");
  return image.includes("@") || image.lastIndexOf(":") > slash ? image : `${image}:latest`;
}

const CREDENTIALS_REFUSED = /unauthorized|authentication required|no basic auth credentials|denied|forbidden|\b40[13]\b/i;

/** Whether a failed pull's message is a registry's refusal of the credentials (wrong, missing, no access). */
export const credentialsRefused = (message: string) => CREDENTIALS_REFUSED.test(message);

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export function imageRoutes(ctx: FlockerContext) {
  const app = new Hono();
  const { cluster, store, wants } = ctx;

  app.get("/images/json", (c) => listImages(ctx, new URL(c.req.url)));

  // docker pull, and the pull half of the `docker run` dance.
  app.post("/images/create", async (c) => {
    const fromImage = c.req.query("fromImage");
    if (!fromImage) return importImage(ctx, c); // import from a tarball (fromSrc): one host
    const ref = pullReference(fromImage, c.req.query("tag"));
    const healthy = cluster.healthy();
    // The dance: go where a create just got 404 for this image (every such host: concurrent runs
    // may have been placed on different hosts). A plain `docker pull` (nobody waiting) goes everywhere.
    const wanted = await wants.wantedAmong(ref, healthy);
    const targets = wanted.length ? wanted : healthy;
    if (!targets.length) throw new DockerError(503, "flocker: no Docker host is reachable");
    const headers: Record<string, string> = {};
    const auth = c.req.header("x-registry-auth");
    if (auth) headers["X-Registry-Auth"] = auth;
    const path = new URL(c.req.url).pathname + new URL(c.req.url).search;
    const started = await startPulls(ctx, targets, path, headers);
    const ok = started.filter((s) => s.res?.status === 200);
    if (!ok.length) {
      const first = started.find((s) => s.res) ?? started[0];
      const why = !wanted.length ? "" : first.res ? messageOf(safeJson(await first.res.clone().text())) : first.error ?? "no answer";
      const steered = why && !credentialsRefused(why) ? await steerToHolder(ref, wanted, why) : undefined;
      if (steered) {
        for (const s of started) await s.res?.body?.cancel().catch(() => {});
        return steered;
      }
      // Every host refused (bad credentials, unknown image...): the engine's own answer, unchanged.
      for (const s of started) if (s !== first) await s.res?.body?.cancel().catch(() => {});
      if (first.res) return new Response(first.res.body, { status: first.res.status, headers: first.res.headers });
      throw new DockerError(502, first.error ?? "pull failed");
    }
    const sources: ProgressSource[] = await Promise.all(started.map(async (s) => {
      if (s.res?.status === 200) return { host: s.host, body: s.res.body };
      const message = s.res ? messageOf(safeJson(await s.res.text())) : s.error;
      return { host: s.host, body: null, error: message };
    }));
    const body = mergeProgress(sources, {
      onLine: () => {},
      onDone: async (host, failed) => {
        if (failed) return;
        cluster.noteImage(host, ref);
        // Tell every flocker (shared store) that the retried create should come here. Awaited
        // before the stream ends: the CLI sends that create as soon as it has read the end.
        if (wanted.includes(host)) await wants.pulled(ref, host);
      },
    });
    return new Response(body, { status: 200, headers: { "content-type": "application/json" } });
  });

  /**
   * The dance's pull failed on every host that wants the image (registry unreachable or
   * rate-limited, an image made on one host and never pushed) while a host holds it: the image is
   * in the flock, as `docker images` shows, and one engine runs an image it holds without pulling.
   * So the run goes there: the CLI reads a progress line saying so, and its retried create lands
   * on that host. Undefined when no host holds it (the engine's refusal stands). Not for refused
   * credentials: those reach the CLI unchanged, and an image pulled with someone else's login is
   * not handed to a client whose login the registry refused.
   */
  async function steerToHolder(ref: string, wanted: Host[], why: string): Promise<Response | undefined> {
    const schedulable = new Set(cluster.schedulable());
    const holders = (await cluster.imageHolders(ref)).filter((h) => schedulable.has(h));
    const holder = holders.find((h) => wanted.includes(h)) ?? holders[0];
    if (!holder) return undefined;
    for (const h of wanted) await wants.moved(ref, h, holder);
    cluster.noteImage(holder, ref);
    const status = `flocker: pulling ${ref} on ${wanted.map((h) => h.name).join(", ")} failed (${why}); host ${holder.name} holds it: the container goes there`;
    return new Response(JSON.stringify({ status }) + "\n", { status: 200, headers: { "content-type": "application/json" } });
  }

  /** Holders with a container made from the image (or from an image built on it). */
  async function hostsUsing(ref: string, holders: Host[]): Promise<Host[]> {
    const filters = encodeURIComponent(JSON.stringify({ ancestor: [ref] }));
    const { answers } = await fanoutJson<unknown[]>(holders, `/containers/json?all=1&limit=1&filters=${filters}`);
    return answers.filter((a) => a.status === 200 && Array.isArray(a.body) && a.body.length).map((a) => a.host);
  }

  /** No host holds it: one engine answers, in its own words for this call (as against one engine). */
  const noHolder = (c: Context) => forwardToAnyHealthy(cluster.healthy(), c.req.raw);

  app.get("/images/search", (c) => forwardToAny(ctx, c));
  // Each host prunes its own copies: an image or tag is reported once, and only once no host
  // holds it any more (a copy in use on one host keeps it in the flock, as `docker images` shows).
  // SpaceReclaimed stays the sum: that is what the disks got back.
  app.post("/images/prune", async (c) => {
    const query = new URL(c.req.url).search;
    const healthy = cluster.healthy();
    const { answers } = await fanoutJson(healthy, `${apiPrefixOf(c.req.url)}/images/prune${query}`, { method: "POST", timeoutMs: 120_000 });
    const refused = refusalOf(answers);
    if (refused) return refused;
    const merged = mergePrune(answers);
    const reported = merged.ImagesDeleted as { Untagged?: string; Deleted?: string }[] | undefined;
    if (!reported?.length) return c.json(merged);
    const held = await stillHeld(healthy, "/images/json?all=1", (list) =>
      Array.isArray(list) ? (list as ImageSummary[]).flatMap((img) => [img.Id, ...img.RepoTags ?? [], ...img.RepoDigests ?? []]) : []);
    const once = new Map(reported.map((entry) => [JSON.stringify(entry), entry]));
    merged.ImagesDeleted = [...once.values()].filter((entry) => !held.has(entry.Untagged ?? entry.Deleted ?? ""));
    return c.json(merged);
  });

  // docker save: from a host that holds every named image; else each of the fewest hosts that
  // hold them saves its share, and the archives are joined into one.
  app.get("/images/get", async (c) => {
    const names = new URL(c.req.url).searchParams.getAll("names");
    const sets = await Promise.all(names.map((name) => cluster.imageHolders(name)));
    if (!names.length || sets.some((set) => !set.length)) return noHolder(c);
    const host = sets.reduce((acc, set) => acc.filter((h) => set.includes(h)), sets[0]).at(0);
    if (host) return forward(host, c.req.raw);
    const shares = shareOut(names, sets);
    const prefix = apiPrefixOf(c.req.url);
    const answers = await Promise.all(shares.map(([h, mine]) => {
      const query = mine.map((n) => `names=${encodeURIComponent(n)}`).join("&");
      return forward(h, c.req.raw, { path: `${prefix}/images/get?${query}` });
    }));
    const failed = answers.find((res) => res.status !== 200 || !res.body);
    if (failed) {
      for (const res of answers) if (res !== failed) await res.body?.cancel().catch(() => {});
      return failed;
    }
    return new Response(joinImageArchives(answers.map((res) => res.body!)), {
      headers: { "content-type": "application/x-tar" },
    });
  });

  // Name may contain slashes (registry/repo:tag): match the action at the end of the path.
  app.on(["GET", "POST", "DELETE", "HEAD"], "/images/*", async (c) => {
    const path = c.req.path;
    const m = /^\/images\/(.+?)(?:\/(json|history|tag|push|get))?$/.exec(path);
    if (!m) throw new DockerError(404, "page not found");
    const [, name, action] = m;
    // push names the tag in the query; everything else has it in the path.
    const tag = action === "push" ? c.req.query("tag") : undefined;
    const ref = tag ? `${name}:${tag}` : name;
    const hosts = await cluster.imageHolders(ref);
    if (!hosts.length) return noHolder(c);
    switch (`${c.req.method} ${action ?? ""}`) {
      case "DELETE ": {
        // rmi: from every host that holds it; the deleted lists merged. Where a container may use it
        // (the engine then refuses without force), that host goes first, alone: its refusal leaves
        // every copy in place, as one engine would.
        const force = c.req.query("force")?.toLowerCase();
        const forced = !!force && force !== "0" && force !== "false"; // docker's boolean query values
        const users = forced ? [] : await hostsUsing(ref, hosts);
        const results: Response[] = [];
        for (const h of users) {
          const res = await forward(h, c.req.raw);
          if (res.status !== 200) {
            for (const r of results) await r.body?.cancel();
            return res;
          }
          results.push(res);
        }
        results.push(...await Promise.all(hosts.filter((h) => !users.includes(h)).map((h) => forward(h, c.req.raw))));
        const failed = results.find((r) => r.status !== 200);
        if (failed) return failed;
        const lists = await Promise.all(results.map((r) => r.json() as Promise<unknown[]>));
        const seen = new Set<string>();
        return c.json(lists.flat().filter((item) => {
          const key = JSON.stringify(item);
          return !seen.has(key) && !!seen.add(key);
        }));
      }
      case "POST tag": {
        const results = await Promise.all(hosts.map((h) => forward(h, c.req.raw)));
        const failed = results.find((r) => r.status >= 300);
        if (failed) return failed;
        const repo = c.req.query("repo");
        if (repo) {
          const tagged = `${repo}:${c.req.query("tag") || "latest"}`;
          for (const h of hosts) cluster.noteImage(h, tagged);
          const local = await store.get(localImageKey(ref));
          if (local) await store.set(localImageKey(tagged), local);
        }
        return results[0];
      }
      case "GET json":
        // Told it exists: the client's create of it will not pull (see Wants.shown).
        if (hosts.length < cluster.schedulable().length) await wants.shown(ref);
        return forward(hosts[0], c.req.raw);
      default:
        // history, push (one holder pushes: the registry gets the image once), save.
        return forward(hosts[0], c.req.raw);
    }
  });

  return app;
}

function forwardToAny(ctx: FlockerContext, c: Context) {
  const host = ctx.cluster.schedulable()[0];
  if (!host) throw new DockerError(503, "flocker: no Docker host is reachable");
  return forward(host, c.req.raw);
}

/** Names shared out to hosts: each time, the host that holds most of the names left takes them. */
function shareOut(names: string[], holders: Host[][]): [Host, string[]][] {
  const shares: [Host, string[]][] = [];
  let left = names.map((name, i) => ({ name, holders: holders[i] }));
  while (left.length) {
    const counts = new Map<Host, number>();
    for (const { holders } of left) for (const h of holders) counts.set(h, (counts.get(h) ?? 0) + 1);
    const best = [...counts].sort((a, b) => b[1] - a[1])[0][0];
    shares.push([best, left.filter((n) => n.holders.includes(best)).map((n) => n.name)]);
    left = left.filter((n) => !n.holders.includes(best));
  }
  return shares;
}
