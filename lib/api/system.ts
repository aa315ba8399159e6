/** Version negotiation and flock-wide system calls: _ping, version, info, auth. */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import { DockerError } from "../errors.ts";
import { fanoutJson, type HostAnswer, refusalOf } from "../upstream/fanout.ts";
import { apiPrefixOf } from "./version.ts";
import { forwardToAnyHealthy } from "../upstream/forward.ts";
import { type Cluster, compareVersions } from "../cluster/cluster.ts";
import { mergePrune } from "./prune.ts";
import { mergeDiskUsage } from "./disk-usage.ts";
import { takeHostFilterOf } from "./host-filter.ts";

type Json = Record<string, unknown>;

/**
 * Images of the flock: distinct ids over the hosts that listed theirs, plus the count `/info` gave
 * for any host whose list did not come.
 */
function distinctImages(infos: HostAnswer<Json>[], lists: HostAnswer<{ Id: string }[]>[]): number {
  const ids = new Set<string>();
  let unlisted = 0;
  for (const info of infos) {
    const list = lists.find((l) => l.host === info.host && l.status === 200 && Array.isArray(l.body));
    if (list) for (const img of list.body) ids.add(img.Id);
    else unlisted += Number(info.body.Images) || 0;
  }
  return ids.size + unlisted;
}

/**
 * The answer to `GET` / `HEAD /_ping`, the first request of every docker CLI command: flocker's
 * own (the flock's API version), so the byte-level front answers it without the app too.
 */
export function pingResponse(cluster: Cluster, method: "GET" | "HEAD"): Response {
  const apiVersion = cluster.apiVersion();
  if (!apiVersion) throw new DockerError(503, "flocker: no Docker host is reachable");
  const headers = {
    "Api-Version": apiVersion,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    // The classic builder, as a 20.10 engine advertises by default (buildx's /grpc is not routed).
    "Builder-Version": "1",
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
  };
  return method === "HEAD"
    ? new Response(null, { headers: { ...headers, "content-length": "0" } })
    : new Response("OK", { headers: { ...headers, "content-type": "text/plain; charset=utf-8" } });
}

export function systemRoutes(ctx: FlockerContext) {
  const app = new Hono();
  const { cluster } = ctx;

  // dockerd answers OPTIONS on any path with an empty 200 (its CORS preflight); HAProxy's
  // `option httpchk` checks a server with `OPTIONS / HTTP/1.0` by default.
  app.on("OPTIONS", "*", () => new Response(null, { status: 200, headers: { "content-length": "0" } }));
  app.get("/_ping", () => pingResponse(cluster, "GET"));
  app.on("HEAD", "/_ping", () => pingResponse(cluster, "HEAD"));

  app.get("/version", async (c) => {
    const { answers } = await fanoutJson<Json>(cluster.healthy(), `${apiPrefixOf(c.req.url)}/version`);
    const refused = refusalOf(answers);
    if (refused) return refused;
    const ok = answers.filter((a) => a.status === 200);
    if (!ok.length) throw new DockerError(503, "flocker: no Docker host is reachable");
    ok.sort((a, b) => compareVersions(String(a.body.ApiVersion), String(b.body.ApiVersion)));
    const oldest = ok[0].body;
    const minApi = ok.map((a) => String(a.body.MinAPIVersion ?? "1.12")).sort(compareVersions).pop();
    return c.json({ ...oldest, MinAPIVersion: minApi, Platform: { Name: `flocker (${ok.length} hosts)` } });
  });

  app.get("/info", async (c) => {
    const healthy = cluster.healthy();
    const [{ answers }, images] = await Promise.all([
      fanoutJson<Json>(healthy, `${apiPrefixOf(c.req.url)}/info`),
      // An image pulled everywhere is one image of the flock, as `docker images` lists it once.
      fanoutJson<{ Id: string }[]>(healthy, `${apiPrefixOf(c.req.url)}/images/json?all=1`),
    ]);
    const refused = refusalOf(answers);
    if (refused) return refused;
    const ok = answers.filter((a) => a.status === 200);
    if (!ok.length) throw new DockerError(503, "flocker: no Docker host is reachable");
    const sum = (field: string) => ok.reduce((n, a) => n + (Number(a.body[field]) || 0), 0);
    const oldest = [...ok].sort((a, b) =>
      compareVersions(String(a.body.ServerVersion ?? "0"), String(b.body.ServerVersion ?? "0"))
    )[0].body;
    const hostLines = cluster.hosts.map((h) => {
      const s = h.status;
      return `flocker.host.${h.name}=${h.address} state=${s.drained ? "drained" : s.state} version=${s.version ?? "?"} containers=${s.containers}`;
    });
    const status: [string, string][] = [["Strategy", ctx.strategy], ["Hosts", String(cluster.hosts.length)]];
    for (const h of cluster.hosts) {
      status.push([` ${h.name}`, h.address], ["  └ Status", h.status.state], ["  └ Containers", String(h.status.containers)]);
    }
    return c.json({
      ...oldest,
      ID: "flocker",
      Name: "flocker",
      Containers: sum("Containers"),
      ContainersRunning: sum("ContainersRunning"),
      ContainersPaused: sum("ContainersPaused"),
      ContainersStopped: sum("ContainersStopped"),
      Images: distinctImages(ok, images.answers),
      NCPU: sum("NCPU"),
      MemTotal: sum("MemTotal"),
      Labels: [...hostLines, ...((oldest.Labels as string[] | undefined) ?? [])],
      SystemStatus: status,
      Warnings: ok.flatMap((a) => ((a.body.Warnings as string[] | null) ?? []).map((w) => `${a.host.name}: ${w}`)),
    });
  });

  // `docker login`: any engine can check credentials against the registry.
  app.post("/auth", (c) => forwardToAnyHealthy(cluster.healthy(), c.req.raw));

  // docker system df: every host's usage, as one (./disk-usage.ts).
  app.get("/system/df", async (c) => {
    const query = new URL(c.req.url).search;
    const { answers } = await fanoutJson<Json>(cluster.healthy(), `${apiPrefixOf(c.req.url)}/system/df${query}`, { timeoutMs: 30_000 });
    const refused = refusalOf(answers);
    if (refused) return refused;
    const ok = answers.filter((a) => a.status === 200);
    if (!ok.length) throw new DockerError(503, "flocker: no Docker host is reachable");
    return c.json(mergeDiskUsage(ok.map((a) => a.body)));
  });

  // Prunes that have no per-resource module: every host, results merged.
  for (const path of ["/containers/prune", "/build/prune"]) {
    app.post(path, async (c) => {
      const url = new URL(c.req.url);
      const wanted = takeHostFilterOf(url); // `--filter label=flocker.host=NAME`: that host's only
      const { answers } = await fanoutJson(cluster.healthy().filter(wanted), `${apiPrefixOf(c.req.url)}${path}${url.search}`, {
        method: "POST",
        timeoutMs: 120_000,
      });
      const refused = refusalOf(answers);
      if (refused) return refused;
      const merged = mergePrune(answers);
      if (path === "/containers/prune") {
        for (const id of (merged.ContainersDeleted as string[] | undefined) ?? []) await ctx.locator.forgetContainer(id);
      }
      return c.json(merged);
    });
  }

  // Registry metadata for an image: any engine can ask (the CLI's auth header passes through).
  app.get("/distribution/*", (c) => forwardToAnyHealthy(cluster.healthy(), c.req.raw));

  return app;
}
