/**
 * Calls that make an image on one host (build, load, commit, import): the body streams to the
 * chosen host, and the resulting tags are recorded so a later `run` of them lands there.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { rankHosts } from "../cluster/scheduler.ts";
import { localImageKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { forward } from "../upstream/forward.ts";
import { mergeProgress } from "../upstream/progress.ts";

/** The host for a new local image: ranked like a container, no image preference. */
function allocate(ctx: FlockerContext): Host {
  const host = rankHosts(ctx.cluster.schedulable(), ctx.strategy, { holdsImage: () => false })[0];
  if (!host) throw new DockerError(503, "flocker: no healthy Docker host is available");
  return host;
}

async function remember(ctx: FlockerContext, host: Host, ref: string) {
  ctx.cluster.noteImage(host, ref);
  await ctx.store.set(localImageKey(ref), host.name);
}

/** Pass a progress stream through, noticing image names it reports; `tags` are remembered once it succeeds. */
function watch(ctx: FlockerContext, host: Host, res: Response, tags: string[]): Response {
  if (res.status !== 200 || !res.body) return res;
  const body = mergeProgress([{ host, body: res.body }], {
    tagIds: false,
    onLine: (_h, line) => {
      const stream = typeof line.stream === "string" ? line.stream : "";
      const loaded = /^Loaded image(?: ID)?: (\S+)/.exec(stream);
      if (loaded) tags.push(loaded[1]);
    },
    // Awaited before the stream ends: the CLI may run the image as soon as it has read the end.
    onDone: async (_h, failed) => {
      if (!failed) await Promise.all(tags.map((t) => remember(ctx, host, t).catch(() => {})));
    },
  });
  return new Response(body, { status: res.status, headers: res.headers });
}

/** `docker import` (POST /images/create with fromSrc): made on one host, its repo:tag remembered there. */
export async function importImage(ctx: FlockerContext, c: Context): Promise<Response> {
  const host = allocate(ctx);
  const repo = c.req.query("repo");
  const tag = c.req.query("tag");
  return watch(ctx, host, await forward(host, c.req.raw), repo ? [tag ? `${repo}:${tag}` : repo] : []);
}

export function buildRoutes(ctx: FlockerContext) {
  const app = new Hono();

  app.post("/build", async (c) => {
    const host = allocate(ctx);
    const tags = new URL(c.req.url).searchParams.getAll("t");
    return watch(ctx, host, await forward(host, c.req.raw), tags);
  });

  app.post("/images/load", async (c) => {
    const host = allocate(ctx);
    return watch(ctx, host, await forward(host, c.req.raw), []);
  });

  app.post("/commit", async (c) => {
    const ref = c.req.query("container");
    if (!ref) throw new DockerError(400, "container is required");
    const { host } = await ctx.locator.container(ref);
    const res = await forward(host, c.req.raw);
    const repo = c.req.query("repo");
    if (res.status === 201 && repo) await remember(ctx, host, `${repo}:${c.req.query("tag") || "latest"}`);
    return res;
  });

  return app;
}
