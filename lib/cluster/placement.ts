/**
 * Placement that keeps projects working: a user-defined network or a named volume lives on one
 * host (chosen when it is created, compose projects kept together), and containers that use it,
 * join another container's namespace, or mount its volumes are placed on that host.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "./host.ts";
import { rankHosts } from "./scheduler.ts";
import { normalizeImageRef } from "./cluster.ts";
import { DockerError } from "../errors.ts";

export const PROJECT_LABEL = "com.docker.compose.project";
const PREDEFINED_NETWORKS = new Set(["default", "bridge", "host", "none"]);

export const resourceKey = (kind: "vol" | "net", name: string) => `${kind}:${name}`;
export const projectKey = (project: string) => `project:${project}`;
/** An image that exists only where it was built, loaded, committed or imported (no registry has it). */
export const localImageKey = (ref: string) => `image:${normalizeImageRef(ref)}`;

/** The host for a new network or volume: its compose project's host, else the strategy's pick. */
export async function placeResource(ctx: FlockerContext, labels: Record<string, string> | null | undefined): Promise<Host> {
  const project = labels?.[PROJECT_LABEL];
  if (project) {
    const name = await ctx.store.get(projectKey(project));
    const host = name ? ctx.cluster.byName(name) : undefined;
    if (host && host.status.state === "healthy") return host;
  }
  const host = rankHosts(ctx.cluster.schedulable(), ctx.strategy, { holdsImage: () => false })[0];
  if (!host) throw new DockerError(503, "flocker: no healthy Docker host is available");
  if (project) await ctx.store.set(projectKey(project), host.name);
  return host;
}

interface CreateShape {
  Image?: string;
  Labels?: Record<string, string> | null;
  HostConfig?: {
    Binds?: string[] | null;
    Mounts?: { Type?: string; Source?: string }[] | null;
    NetworkMode?: string;
    VolumesFrom?: string[] | null;
    Links?: string[] | null;
    PidMode?: string;
    IpcMode?: string;
  } | null;
  NetworkingConfig?: { EndpointsConfig?: Record<string, unknown> | null } | null;
}

/**
 * The host a new container must go to, if anything it uses pins it; with the reason, so a
 * refusal can say what could not be satisfied.
 */
export async function pinnedHost(ctx: FlockerContext, body: CreateShape): Promise<{ host: Host; why: string } | undefined> {
  const pins: { hostName: string; why: string }[] = [];
  const hc = body.HostConfig ?? {};
  const volumes = [
    ...(hc.Binds ?? []).map((b) => b.split(":")[0]).filter((s) => s && !s.startsWith("/")),
    ...(hc.Mounts ?? []).filter((m) => (m.Type ?? "volume") === "volume" && m.Source).map((m) => m.Source!),
  ];
  for (const v of volumes) {
    const h = await ctx.store.get(resourceKey("vol", v));
    if (h) pins.push({ hostName: h, why: `volume ${v}` });
  }
  const networks = new Set(Object.keys(body.NetworkingConfig?.EndpointsConfig ?? {}));
  if (hc.NetworkMode && !hc.NetworkMode.includes(":")) networks.add(hc.NetworkMode);
  for (const n of networks) {
    if (PREDEFINED_NETWORKS.has(n)) continue;
    const h = await ctx.store.get(resourceKey("net", n));
    if (h) pins.push({ hostName: h, why: `network ${n}` });
  }
  const containerRefs = [
    ...[hc.NetworkMode, hc.PidMode, hc.IpcMode].filter((m) => m?.startsWith("container:")).map((m) => m!.slice(10)),
    ...(hc.VolumesFrom ?? []).map((v) => v.split(":")[0]),
    ...(hc.Links ?? []).map((l) => l.split(":")[0]),
  ];
  for (const ref of containerRefs) {
    const found = await ctx.locator.container(ref).catch(() => undefined);
    if (found) pins.push({ hostName: found.host.name, why: `container ${ref}` });
  }
  if (body.Image) {
    const h = await ctx.store.get(localImageKey(body.Image));
    if (h) pins.push({ hostName: h, why: `image ${body.Image} (built or loaded there)` });
  }
  const project = body.Labels?.[PROJECT_LABEL];
  if (!pins.length && project) {
    const h = await ctx.store.get(projectKey(project));
    if (h) pins.push({ hostName: h, why: `compose project ${project}` });
  }
  if (!pins.length) return undefined;
  const first = pins[0];
  const clash = pins.find((p) => p.hostName !== first.hostName);
  if (clash) {
    throw new DockerError(409, `flocker: ${first.why} is on host ${first.hostName} but ${clash.why} is on host ${clash.hostName}; one container cannot use both`);
  }
  const host = ctx.cluster.byName(first.hostName);
  if (!host) throw new DockerError(503, `flocker: ${first.why} is on host ${first.hostName}, which is no longer in the flock`);
  return { host, why: first.why };
}
