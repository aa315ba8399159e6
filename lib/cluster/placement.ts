/**
 * Placement that keeps projects working. Volumes and user-defined networks are created on every
 * host, so any container can use them; the first container that uses one pins it to the host it
 * lands on, and every later container that uses it (or joins another container's namespaces,
 * mounts its volumes, or belongs to the same compose project) is placed on that host.
 * Images that exist only where they were built or loaded pin their containers the same way.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "./host.ts";
import { normalizeImageRef } from "./cluster.ts";
import { DockerError } from "../errors.ts";
import { parseConstraints } from "./constraints.ts";

export const PROJECT_LABEL = "com.docker.compose.project";
export const PREDEFINED_NETWORKS = new Set(["default", "bridge", "host", "none"]);

/** `vol:<name>` / `net:<name>` -> host name, set by the first container that uses it. */
export const pinKey = (kind: "vol" | "net", name: string) => `${kind}:${name}`;
/** `netid:<id>` -> network name (each host gives its copy of a network its own id). */
export const networkIdKey = (id: string) => `netid:${id}`;
export const projectKey = (project: string) => `project:${project}`;
/** An image that exists only where it was built, loaded, committed or imported (no registry has it). */
export const localImageKey = (ref: string) => `image:${normalizeImageRef(ref)}`;

interface CreateShape {
  Image?: string;
  Env?: string[] | null;
  Labels?: Record<string, string> | null;
  HostConfig?: {
    Binds?: string[] | null;
    Mounts?: { Type?: string | null; Source?: string | null }[] | null;
    NetworkMode?: string | null;
    VolumesFrom?: string[] | null;
    Links?: string[] | null;
    PidMode?: string | null;
    IpcMode?: string | null;
  } | null;
  NetworkingConfig?: { EndpointsConfig?: Record<string, unknown> | null } | null;
}

interface Pin {
  hostName: string;
  why: string;
}

export interface Placement {
  /** The host the container must go to, if something it uses already lives somewhere. */
  pinned?: { host: Host; why: string };
  /** Keys of resources it uses that are not pinned yet: claimed for the chosen host. */
  claims: { key: string; why: string }[];
}

async function networkName(ctx: FlockerContext, ref: string): Promise<string> {
  return (await ctx.store.get(networkIdKey(ref))) ?? ref;
}

export async function placementOf(ctx: FlockerContext, body: CreateShape): Promise<Placement> {
  const pins: Pin[] = [];
  const claims: Placement["claims"] = [];
  const hc = body.HostConfig ?? {};
  const uses: { key: string; why: string }[] = [];
  // The project first: concurrent creates of one project (compose creates a level at a time, in
  // parallel) all follow whichever of them claims it first (claimFor).
  const project = body.Labels?.[PROJECT_LABEL];
  if (project) uses.push({ key: projectKey(project), why: `compose project ${project}` });
  const volumes = [
    ...(hc.Binds ?? []).map((b) => b.split(":")[0]).filter((s) => s && !s.startsWith("/")),
    ...(hc.Mounts ?? []).filter((m) => (m.Type ?? "volume") === "volume" && m.Source).map((m) => m.Source!),
  ];
  for (const v of volumes) uses.push({ key: pinKey("vol", v), why: `volume ${v}` });
  const networks = new Set(Object.keys(body.NetworkingConfig?.EndpointsConfig ?? {}));
  if (hc.NetworkMode && !hc.NetworkMode.includes(":")) networks.add(hc.NetworkMode);
  for (const n of networks) {
    if (PREDEFINED_NETWORKS.has(n)) continue;
    const name = await networkName(ctx, n);
    uses.push({ key: pinKey("net", name), why: `network ${name}` });
    if (name !== n) {
      // Each host gives its copy its own id: send the name, which every copy shares.
      if (hc.NetworkMode === n) hc.NetworkMode = name;
      const endpoints = body.NetworkingConfig?.EndpointsConfig;
      if (endpoints && n in endpoints) {
        endpoints[name] = endpoints[n];
        delete endpoints[n];
      }
    }
  }
  for (const use of uses) {
    const hostName = await ctx.store.get(use.key);
    if (hostName) pins.push({ hostName, why: use.why });
    else claims.push(use);
  }
  const containerRefs = [
    ...[hc.NetworkMode, hc.PidMode, hc.IpcMode].filter((m) => m?.startsWith("container:")).map((m) => m!.slice(10)),
    ...(hc.VolumesFrom ?? []).map((v) => v.split(":")[0]),
    ...(hc.Links ?? []).map((l) => l.split(":")[0]),
    ...parseConstraints(body).filter((c) => c.kind === "affinity" && c.key === "container" && !c.negate && !c.soft).map((c) => c.value),
  ];
  for (const ref of containerRefs) {
    const found = await ctx.locator.container(ref).catch(() => undefined);
    if (found) pins.push({ hostName: found.host.name, why: `container ${ref}` });
  }
  if (body.Image) {
    const h = await ctx.store.get(localImageKey(body.Image));
    if (h) pins.push({ hostName: h, why: `image ${body.Image} (built or loaded there)` });
  }
  if (!pins.length) return { claims };
  // A compose project pin yields to a concrete resource's pin.
  const strong = pins.filter((p) => !p.why.startsWith("compose project"));
  const decisive = strong.length ? strong : pins;
  const first = decisive[0];
  const clash = decisive.find((p) => p.hostName !== first.hostName);
  if (clash) {
    throw new DockerError(409, `flocker: ${first.why} is on host ${first.hostName} but ${clash.why} is on host ${clash.hostName}; one container cannot use both`);
  }
  const host = ctx.cluster.byName(first.hostName);
  if (!host) throw new DockerError(503, `flocker: ${first.why} is on host ${first.hostName}, which is no longer in the flock`);
  return { pinned: { host, why: first.why }, claims };
}

/**
 * Pin the unpinned resources a new container uses to the host chosen for it. When a concurrent
 * create pinned one first, the container follows that pin instead (if nothing else holds it).
 */
export async function claimFor(ctx: FlockerContext, placement: Placement, chosen: Host): Promise<Host> {
  let host = chosen;
  let movable = !placement.pinned;
  for (const claim of placement.claims) {
    if (await ctx.store.setIfAbsent(claim.key, host.name)) {
      movable = false;
      continue;
    }
    const winner = await ctx.store.get(claim.key);
    if (!winner || winner === host.name) continue;
    const other = ctx.cluster.byName(winner);
    // A project claimed first by a concurrent create: follow it if nothing holds this container here.
    if (claim.why.startsWith("compose project") && !(movable && other)) continue;
    if (movable && other) {
      host = other;
      movable = false;
      continue;
    }
    throw new DockerError(409, `flocker: ${claim.why} was just placed on host ${winner}, not ${host.name}; retry the create`);
  }
  return host;
}
