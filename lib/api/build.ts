/**
 * Calls that make an image on one host (build, load, commit, import): the body streams to the
 * chosen host, and the resulting tags are recorded so a later `run` of them lands there.
 *
 * A BuildKit build (`DOCKER_BUILDKIT=1 docker build`) is two connections made at once: the
 * session (POST /session, hijacked: the engine reads the build context and Dockerfile from the
 * CLI over it) and `POST /build?version=2&session=ID`. The session picks the host and records it;
 * the build waits for that record and goes to the same host.
 */
import { Hono } from "hono";
import type { Context } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { rankHosts } from "../cluster/scheduler.ts";
import { localImageKey } from "../cluster/placement.ts";
import { DockerError } from "../errors.ts";
import { forward } from "../upstream/forward.ts";
import { fanoutJson } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { mergeProgress } from "../upstream/progress.ts";

/** The host for a new local image: ranked like a container, no image preference. */
export function allocate(ctx: FlockerContext): Host {
  const host = rankHosts(ctx.cluster.schedulable(), ctx.strategy, { holdsImage: () => false })[0];
  if (!host) throw new DockerError(503, "flocker: no healthy Docker host is available");
  return host;
}

/**
 * An image made or loaded on `host`: runs of it must land there. A loaded one (`loaded`) may be
 * one other hosts hold too, the very same image (a `docker load` of one they pulled): then it is
 * not pinned, and any earlier pin of that name goes (it would send every run of it to one host,
 * against constraints and spread). What a build, commit or import made is new: not asked.
 */
async function remember(ctx: FlockerContext, host: Host, ref: string, loaded = false) {
  ctx.cluster.noteImage(host, ref);
  if (loaded) {
    const { answers } = await fanoutJson<{ Id?: string }>(ctx.cluster.healthy(), `/images/${encodeURIComponent(ref)}/json`);
    const id = answers.find((a) => a.host === host && a.status === 200)?.body?.Id;
    if (id !== undefined && answers.some((a) => a.host !== host && a.status === 200 && a.body?.Id === id)) {
      return ctx.store.delete(localImageKey(ref));
    }
  }
  await ctx.store.set(localImageKey(ref), host.name);
}

/** Pass a progress stream through; once it succeeds, `tags` and the images it reports loaded are remembered. */
function watch(ctx: FlockerContext, host: Host, res: Response, tags: string[]): Response {
  if (res.status !== 200 || !res.body) return res;
  const loaded: string[] = [];
  const body = mergeProgress([{ host, body: res.body }], {
    tagIds: false,
    onLine: (_h, line) => {
      const stream = typeof line.stream === "string" ? line.stream : "";
      const name = /^Loaded image(?: ID)?: (\S+)/.exec(stream);
      if (name) loaded.push(name[1]);
    },
    // Awaited before the stream ends: the CLI may run the image as soon as it has read the end.
    onDone: async (_h, failed) => {
      if (failed) return;
      await Promise.all([
        ...tags.map((t) => remember(ctx, host, t).catch(() => {})),
        ...loaded.map((t) => remember(ctx, host, t, true).catch(() => {})),
      ]);
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

/** A BuildKit session (and the builds that use it) lasts as long as one build: an hour is plenty. */
const SESSION_TTL_SECONDS = 3600;
/**
 * How long a build waits for its session to be opened: the CLI dials both at once. An engine
 * itself waits 5 s for a session it does not have before the build fails.
 */
const SESSION_WAIT_MS = 5000;
const SESSION_POLL_MS = 20;

/** A BuildKit session being opened (POST /session): its host, recorded for the build that names it. */
export async function openSession(ctx: FlockerContext, id: string | undefined): Promise<Host> {
  const host = allocate(ctx);
  if (id) await ctx.store.set(`session:${id}`, host.name, SESSION_TTL_SECONDS);
  return host;
}

/** The host of the session a BuildKit build names, once its session is open. */
async function sessionHost(ctx: FlockerContext, id: string): Promise<Host> {
  const deadline = Date.now() + SESSION_WAIT_MS;
  for (;;) {
    const name = await ctx.store.get(`session:${id}`);
    if (name) {
      const host = ctx.cluster.byName(name);
      if (!host) throw new DockerError(503, `flocker: host ${name} of BuildKit session ${id} is no longer in the inventory`);
      return host;
    }
    if (Date.now() >= deadline) {
      throw new DockerError(400, `flocker: no BuildKit session ${id} was opened through flocker (the build and its session must go through the same flock)`);
    }
    await new Promise((resolve) => setTimeout(resolve, SESSION_POLL_MS));
  }
}

export function buildRoutes(ctx: FlockerContext) {
  const app = new Hono();

  app.post("/build", async (c) => {
    const query = new URL(c.req.url).searchParams;
    const session = query.get("session");
    const host = session ? await sessionHost(ctx, session) : allocate(ctx);
    // BuildKit builds have an id the CLI cancels them by (ctrl-c): POST /build/cancel?id=
    const buildId = query.get("buildid");
    if (buildId) await ctx.store.set(`build:${buildId}`, host.name, SESSION_TTL_SECONDS);
    return watch(ctx, host, await forward(host, c.req.raw), query.getAll("t"));
  });

  app.post("/build/cancel", async (c) => {
    const id = c.req.query("id");
    if (!id) throw new DockerError(400, "build ID not provided");
    const name = await ctx.store.get(`build:${id}`);
    const host = name ? ctx.cluster.byName(name) : undefined;
    if (host) return forward(host, c.req.raw);
    // Not recorded here (another flock's build, or long gone): whichever engine runs it cancels it.
    const { answers } = await fanoutJson(ctx.cluster.healthy(), `${apiPrefixOf(c.req.url)}/build/cancel?id=${encodeURIComponent(id)}`, { method: "POST" });
    const ok = answers.find((a) => a.status === 200);
    if (ok) return c.body(null, 200);
    throw new DockerError(404, `flocker: no host runs build ${id}`);
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
