/**
 * Calls that make an image on one host (build, load, commit, import): the body streams to the
 * chosen host, and the resulting tags are recorded so a later `run` of them lands there.
 */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { rankHosts } from "../cluster/scheduler.ts";
import { localImageKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { forward } from "../upstream/forward.ts";
import { mergeProgress } from "../upstream/progress.ts";

export function buildRoutes(ctx: FlockerContext) {
  const app = new Hono();
  const { cluster, store } = ctx;

  const allocate = (): Host => {
    const host = rankHosts(cluster.schedulable(), ctx.strategy, { holdsImage: () => false })[0];
    if (!host) throw new DockerError(503, "flocker: no healthy Docker host is available");
    return host;
  };

  const remember = async (host: Host, ref: string) => {
    cluster.noteImage(host, ref);
    await store.set(localImageKey(ref), host.name);
  };

  /** Pass a progress stream through, noticing image names it reports. */
  const watch = (host: Host, res: Response, tags: string[]) => {
    if (res.status !== 200 || !res.body) return res;
    const body = mergeProgress([{ host, body: res.body }], {
      tagIds: false,
      onLine: (_h, line) => {
        const stream = typeof line.stream === "string" ? line.stream : "";
        const loaded = /^Loaded image(?: ID)?: (\S+)/.exec(stream);
        if (loaded) tags.push(loaded[1]);
      },
      onDone: (_h, failed) => {
        if (!failed) for (const t of tags) void remember(host, t).catch(() => {});
      },
    });
    return new Response(body, { status: res.status, headers: res.headers });
  };

  app.post("/build", async (c) => {
    const host = allocate();
    const tags = new URL(c.req.url).searchParams.getAll("t");
    return watch(host, await forward(host, c.req.raw), tags);
  });

  app.post("/images/load", async (c) => {
    const host = allocate();
    return watch(host, await forward(host, c.req.raw), []);
  });

  app.post("/commit", async (c) => {
    const ref = c.req.query("container");
    if (!ref) throw new DockerError(400, "container is required");
    const { host } = await ctx.locator.container(ref);
    const res = await forward(host, c.req.raw);
    const repo = c.req.query("repo");
    if (res.status === 201 && repo) await remember(host, `${repo}:${c.req.query("tag") || "latest"}`);
    return res;
  });

  return app;
}
