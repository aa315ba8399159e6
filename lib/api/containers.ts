/** Containers: create (placement, names, the pull dance), list over the flock, and per-container routing. */
import { Hono } from "hono";
import type { Context } from "hono";
import { z } from "zod";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { rankHosts } from "../cluster/scheduler.ts";
import { claimFor, placementOf } from "../cluster/placement.ts";
import { hostsWithPortsFree, PortClaims, type WantedPort, wantedPorts } from "../cluster/ports.ts";
import { hostTest, parseConstraints } from "../cluster/constraints.ts";
import { checkContainer } from "./policy.ts";
import { DockerError, NoSuchContainer } from "../errors.ts";
import { fanoutJson } from "../upstream/fanout.ts";
import { listContainers } from "./container-list.ts";
import { forward, forwardToAnyHealthy, hasBody } from "../upstream/forward.ts";
import type { Located } from "../cluster/locator.ts";
import { credentialsRefused, pullOnHost } from "./images.ts";

const strings = z.array(z.string()).nullish();
/**
 * The fields of a create body flocker reads (placement, policy, rules), typed as the engine takes
 * them, so a wrong type is a 400 that names the field; everything else passes through untouched.
 */
const CreateBody = z.looseObject({
  Image: z.string().optional(),
  Env: strings,
  Labels: z.record(z.string(), z.string()).nullish(),
  HostConfig: z.looseObject({
    Binds: strings,
    Mounts: z.array(z.looseObject({ Type: z.string().nullish(), Source: z.string().nullish() })).nullish(),
    VolumesFrom: strings,
    Links: strings,
    NetworkMode: z.string().nullish(),
    PidMode: z.string().nullish(),
    IpcMode: z.string().nullish(),
    UTSMode: z.string().nullish(),
    UsernsMode: z.string().nullish(),
  }).nullish(),
  NetworkingConfig: z.looseObject({ EndpointsConfig: z.record(z.string(), z.unknown()).nullish() }).nullish(),
});
type CreateBody = z.infer<typeof CreateBody>;

const NAME = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
/** An image given by id: nothing to pull. */
const IMAGE_ID = /^(sha256:)?[0-9a-f]{12,64}$/;
/** A name stays reserved this long at most if a create never finishes (crash, lost host). */
const RESERVATION_TTL_SECONDS = 120;
/** How long a failed start is held for the container's open waits to be answered. */
const WAIT_ORDER_LIMIT_MS = 200;
export const MAX_JSON_BODY = 4 * 1024 * 1024;

export async function readJsonBody(c: Context, limit = MAX_JSON_BODY): Promise<unknown> {
  const length = Number(c.req.header("content-length") ?? 0);
  if (length > limit) throw new DockerError(413, `request body too large (limit ${limit} bytes)`);
  const text = await c.req.text();
  if (text.length > limit) throw new DockerError(413, `request body too large (limit ${limit} bytes)`);
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new DockerError(400, `invalid JSON body: ${(err as Error).message}`);
  }
}

/** The candidates some rule prefers, or all of them when it prefers none. */
function preferred(candidates: Host[], chosen: Host[]): Host[] {
  return chosen.length ? chosen : candidates;
}

/**
 * The host a create is placing its container on, held from the tick it is ranked: counted as
 * holding one more container and as publishing the create's fixed host ports, so that
 * concurrent creates spread and do not meet on a port. Left when the create fails.
 */
class Seat {
  #host: Host | undefined;
  /** The user's allocate hook chose the host. */
  allocated = false;
  #key = `pending:${crypto.randomUUID()}`;
  constructor(private readonly claims: PortClaims, readonly ports: WantedPort[]) {}
  take(host: Host): Host {
    this.leave();
    host.status.containers++;
    if (this.ports.length) this.claims.claim(this.#key, host, this.ports);
    return (this.#host = host);
  }
  leave() {
    if (!this.#host) return;
    this.#host.status.containers = Math.max(0, this.#host.status.containers - 1);
    this.claims.release(this.#key);
    this.#host = undefined;
  }
  /** The create succeeded: its ports stay claimed by the container until it starts. */
  keep(id: string) {
    this.claims.rename(this.#key, id);
  }
}

function conflict(name: string, holder: string) {
  return new DockerError(
    409,
    `Conflict. The container name "/${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`,
  );
}

export function containerRoutes(ctx: FlockerContext) {
  const app = new Hono();
  const { cluster, store, locator, wants } = ctx;
  const portClaims = new PortClaims();

  /** Reserve a name flock-wide; a stale holder (removed behind our back) is cleared. Returns the token. */
  async function reserveName(name: string): Promise<string> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const token = `pending:${crypto.randomUUID()}`;
      if (await store.setIfAbsent(`name:${name}`, token, RESERVATION_TTL_SECONDS)) {
        // The store knows only flocker's own containers: one made on an engine directly may hold it.
        const outside = await heldOnAHost(name);
        if (!outside) return token;
        await locator.recordContainer(outside.id, outside.host, name); // replaces the reservation
        throw conflict(name, outside.id);
      }
      const holder = await store.get(`name:${name}`);
      if (holder === null) continue;
      if (holder.startsWith("pending:")) throw conflict(name, "(being created)");
      if (await stillExists(holder)) throw conflict(name, holder);
      await locator.forgetContainer(holder, name);
    }
    throw conflict(name, "(being created)");
  }

  /** The container an engine holds under exactly this name (not an id prefix), asked of every healthy host. */
  async function heldOnAHost(name: string): Promise<{ host: Host; id: string } | undefined> {
    const { answers } = await fanoutJson<{ Id: string; Name?: string }>(cluster.healthy(), `/containers/${encodeURIComponent(name)}/json`);
    const hit = answers.find((a) => a.status === 200 && a.body.Name === `/${name}`);
    return hit && { host: hit.host, id: hit.body.Id };
  }

  async function stillExists(id: string): Promise<boolean> {
    try {
      const found = await locator.container(id);
      const res = await found.host.fetch(new Request(`${found.host.baseUrl}/containers/${id}/json`));
      await res.body?.cancel();
      return res.status !== 404;
    } catch (err) {
      return !(err instanceof DockerError && err.status === 404);
    }
  }

  async function releaseName(name: string | undefined, token: string | undefined) {
    if (name && token && (await store.get(`name:${name}`)) === token) await store.delete(`name:${name}`);
  }

  /**
   * `among`: only these hosts may take it (the holders of its image, when its pull failed): the
   * rules and pins still hold; the user's allocate hook is not asked again.
   */
  async function chooseHost(body: CreateBody, name: string | undefined, seat: Seat, among?: Set<Host>): Promise<Host> {
    let chosen: string | undefined | void;
    try {
      if (!among) chosen = await ctx.hooks.allocate?.({ name, container: body });
    } catch (err) {
      throw new DockerError(403, `flocker: allocate refused the container: ${(err as Error)?.message ?? err}`);
    }
    if (chosen) {
      const host = cluster.byName(chosen) ?? cluster.byName(ctx.parseAddress(chosen).address);
      if (!host) throw new DockerError(403, `flocker: allocate chose ${chosen}, which is not a host of the flock`);
      seat.allocated = true;
      return seat.take(host);
    }
    const allowed = (host: Host) => {
      if (among && !among.has(host)) throw new DockerError(409, `flocker: host ${host.name} does not hold ${body.Image}`);
      return host;
    };
    const rules = await Promise.all(parseConstraints(body).map(async (rule) => ({ rule, ok: await hostTest(ctx, rule) })));
    const hard = rules.filter((r) => !r.rule.soft);
    const refused = (host: Host) => hard.find((r) => !r.ok(host))?.rule;
    const placement = await placementOf(ctx, body);
    if (placement.pinned) {
      const { host, why } = placement.pinned;
      if (host.status.state !== "healthy") {
        throw new DockerError(503, `flocker: ${why} lives on host ${host.name}, which is ${host.status.state}`);
      }
      const rule = refused(host);
      if (rule) throw new DockerError(409, `flocker: ${why} lives on host ${host.name}, which does not satisfy ${rule.text}`);
      return seat.take(allowed(await claimFor(ctx, placement, host)));
    }
    let candidates = cluster.schedulable().filter((h) => !among || among.has(h));
    if (!candidates.length) throw new DockerError(503, "flocker: no healthy Docker host can take a new container");
    if (hard.length) {
      candidates = candidates.filter((h) => !refused(h));
      if (!candidates.length) {
        throw new DockerError(409, `flocker: no healthy host satisfies ${hard.map((r) => r.rule.text).join(", ")}`);
      }
    }
    const { ports } = seat;
    if (ports.length && candidates.length > 1) candidates = preferred(candidates, await hostsWithPortsFree(candidates, ports));
    const image = body.Image;
    // After the dance's pull, the retry goes where the image was pulled for it: a want marked
    // pulled (by this flocker or another one sharing the store), or one where the image now is.
    const ready = new Set(image ? await wants.readyAmong(image, candidates, (h) => cluster.holdsImage(h, image)) : []);
    // A client just told the image exists (compose, SDKs) creates without pulling: where it is.
    if (image && await wants.wasShown(image)) for (const h of await cluster.imageHolders(image)) ready.add(h);
    // From here to the take, no await: concurrent creates see each other's claims and counts.
    if (ports.length) candidates = preferred(candidates, candidates.filter((h) => !portClaims.taken(h, ports)));
    // Where the image waits for this run (or is, for a client told so) outweighs a preference:
    // elsewhere the create fails.
    candidates = preferred(candidates, candidates.filter((h) => ready.has(h)));
    // Soft rules (`==~`), in order: each is followed while some candidate satisfies it.
    for (const { ok } of rules.filter((r) => r.rule.soft)) candidates = preferred(candidates, candidates.filter(ok));
    const best = seat.take(rankHosts(candidates, ctx.strategy, { holdsImage: (h) => !!image && cluster.holdsImage(h, image) })[0]);
    const host = await claimFor(ctx, placement, best).catch((err) => {
      seat.leave();
      throw err;
    });
    return host === best ? host : seat.take(allowed(host));
  }

  app.post("/containers/create", async (c) => {
    const parsed = CreateBody.safeParse(await readJsonBody(c));
    if (!parsed.success) {
      throw new DockerError(400, `invalid container config: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
    }
    const body = parsed.data;
    checkContainer(ctx.policy, body);
    const rawName = c.req.query("name");
    if (rawName && !NAME.test(rawName)) {
      throw new DockerError(400, `Invalid container name (${rawName}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    }
    const name = rawName?.replace(/^\//, "") || undefined;
    const token = name ? await reserveName(name) : undefined;
    let created = false;
    const seat = new Seat(portClaims, wantedPorts(body.HostConfig));
    try {
      let host = await chooseHost(body, name, seat);
      const send = () => forward(host, c.req.raw, { body: JSON.stringify(body), headers: { "content-type": "application/json" } });
      let res = await send();
      const image = body.Image;
      if (res.status === 404 && image && ctx.pull === "auto" && !IMAGE_ID.test(image)) {
        // Auto mode: pull right there, with the configured credentials; the CLI never sees the 404.
        await res.body?.cancel();
        try {
          await pullOnHost(ctx, host, image);
        } catch (err) {
          // As in the dance (images.ts, steerToHolder): a host that holds it takes the run.
          if (!(err instanceof DockerError) || credentialsRefused(err.message) || seat.allocated) throw err;
          const holders = new Set(await cluster.imageHolders(image));
          host = await chooseHost(body, name, seat, holders).catch(() => Promise.reject(err));
        }
        res = await send();
      }
      if (res.status === 201) {
        const answer = await res.json() as { Id: string };
        await locator.recordContainer(answer.Id, host, name);
        created = true;
        seat.keep(answer.Id);
        if (body.Image) await wants.created(body.Image, host);
        return c.json(answer, 201);
      }
      if (res.status === 404 && body.Image) {
        // Image missing there: the CLI pulls next, and that pull must reach this host. Nothing else
        // is kept: the name is released below, and the retry is placed afresh (on a pulled host).
        await wants.missing(body.Image, host);
      }
      return res;
    } finally {
      if (!created) {
        seat.leave();
        await releaseName(name, token);
      }
    }
  });

  app.get("/containers/json", (c) => listContainers(ctx, new URL(c.req.url)));

  /**
   * Forward to the container's host. A recorded location may be stale (the container was removed, or
   * made again elsewhere, behind flocker's back): on the engine's "No such container", forget it and,
   * for a request without a body (it can be sent again), ask the hosts and retry where it is now.
   */
  async function forwardToContainer(c: Context): Promise<{ found: Located; res: Response }> {
    const ref = c.req.param("ref") ?? "";
    const found = await locator.container(ref);
    const res = await forward(found.host, c.req.raw);
    if (res.status !== 404 || hasBody(c.req.raw)) return { found, res };
    const text = await res.text();
    const original = new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
    if (!text.includes("No such container")) return { found, res: original };
    await locator.forgetContainer(found.id, found.name);
    const moved = await locator.container(ref).catch(() => undefined);
    if (!moved || (moved.host === found.host && moved.id === found.id)) return { found, res: original };
    return { found: moved, res: await forward(moved.host, c.req.raw) };
  }

  app.delete("/containers/:ref", async (c) => {
    const { found, res } = await forwardToContainer(c);
    if (res.status === 204) {
      portClaims.release(found.id);
      await locator.forgetContainer(found.id, found.name);
      found.host.status.containers = Math.max(0, found.host.status.containers - 1);
    }
    return res;
  });

  app.post("/containers/:ref/exec", async (c) => {
    const found = await locator.container(c.req.param("ref"));
    let body: string | undefined;
    if (ctx.policy.denyPrivileged) {
      const config = await readJsonBody(c) as { Privileged?: boolean };
      checkContainer(ctx.policy, config);
      body = JSON.stringify(config);
    }
    const res = await forward(found.host, c.req.raw, body === undefined ? {} : { body, headers: { "content-type": "application/json" } });
    if (res.status !== 201) return res;
    const answer = await res.json() as { Id: string };
    await locator.recordExec(answer.Id, found.host);
    return c.json(answer, 201);
  });

  app.post("/containers/:ref/rename", async (c) => {
    const found = await locator.container(c.req.param("ref"));
    const newName = c.req.query("name")?.replace(/^\//, "");
    // A bad name, or its own name (the engine refuses both, in its own words): nothing to reserve.
    if (!newName || !NAME.test(newName) || newName === found.name) return forward(found.host, c.req.raw);
    const token = await reserveName(newName).catch((err) => {
      // The engine's words for a rename's conflict.
      if (err instanceof DockerError && err.status === 409) err.message = `Error when allocating new name: ${err.message}`;
      throw err;
    });
    let renamed = false;
    try {
      const res = await forward(found.host, c.req.raw);
      if (res.status === 204) {
        await locator.forgetContainer(found.id, found.name);
        await locator.recordContainer(found.id, found.host, newName);
        renamed = true;
      }
      return res;
    } finally {
      if (!renamed) await releaseName(newName, token);
    }
  });

  app.all("/containers/:ref/*", async (c) => {
    try {
      const { found, res } = await forwardToContainer(c);
      // Started (the engine lists its ports now) or refused: its claim is done either way.
      if (c.req.method === "POST" && c.req.path.endsWith("/start")) portClaims.release(found.id);
      // A failed start is answered after the container's open waits (see upstream/waits.ts).
      if (res.status >= 400 && c.req.method === "POST" && c.req.path.endsWith("/start")) {
        await Promise.all([ctx.waits.answered(found.id, WAIT_ORDER_LIMIT_MS), ctx.waits.answered(c.req.param("ref"), WAIT_ORDER_LIMIT_MS)]);
      }
      return res;
    } catch (err) {
      // In no host: one engine answers, in its own words for this call (`docker kill` says "Cannot
      // kill container: x: No such container: x").
      if (!(err instanceof NoSuchContainer)) throw err;
      return forwardToAnyHealthy(ctx.cluster.healthy(), c.req.raw);
    }
  });

  return app;
}

