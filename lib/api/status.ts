/**
 * flocker's own endpoints under `/_flocker/`, and the counters behind them:
 *
 *   GET  /_flocker/                    status page (HTML, inline CSS, no script, no external asset)
 *   GET  /_flocker/hosts               the hosts and their status (JSON)
 *   GET  /_flocker/metrics             Prometheus text format, every name prefixed `flocker_`
 *   POST /_flocker/hosts/:name/drain   stop placing new containers on a host (admin)
 *   POST /_flocker/hosts/:name/undrain place on it again (admin)
 *
 * Admin actions answer 403 unless enabled (`FLOCKER_ADMIN=1`). Core code: no runtime imports.
 *
 * The hot path pays little: a request bumps one counter in nested maps (method -> route -> status,
 * all keys are strings and numbers the router and the response already hold) and an engine call
 * one histogram bucket; log lines are built only when the level asks for them.
 */
import { type Context, Hono, type MiddlewareHandler } from "hono";
import { HonoRequest } from "hono/request";
import type { FlockerContext } from "../context.ts";
import type { HostFetchFactory } from "../cluster/cluster.ts";
import type { Host } from "../cluster/host.ts";
import { errorResponse } from "../errors.ts";
import { type Logger, requestLevel } from "../log.ts";
import { upstreamHost } from "../upstream/forward.ts";

/** Upper bounds (seconds) of the upstream latency histogram's buckets. */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const RECENT_ERRORS = 20;

export class Histogram {
  /** Per bucket (not cumulative); the last one is +Inf. */
  readonly counts: number[] = new Array(LATENCY_BUCKETS.length + 1).fill(0);
  sum = 0;
  count = 0;
  errors = 0;

  observe(seconds: number) {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]) i++;
    this.counts[i]++;
    this.sum += seconds;
    this.count++;
  }
}

export interface RecentError {
  time: number;
  message: string;
}

/** Counters of one flocker process. */
export class Telemetry {
  readonly startedAt = Date.now();
  /** Attach / exec streams being piped right now (the server glue counts them). */
  hijackedStreams = 0;
  /** Client connections accepted, by front thread (0: the main thread). */
  readonly frontConnections: number[] = [];
  readonly frontConnectionsOpen: number[] = [];
  /** method -> route pattern -> status -> count */
  readonly requests = new Map<string, Map<string, Map<number, number>>>();
  /** Engine call latency by host address. */
  readonly latency = new Map<string, Histogram>();
  /** The last few failures (5xx answers, unreachable engines), newest last. */
  readonly recentErrors: RecentError[] = [];
  readonly #idPrefix = Math.random().toString(36).slice(2, 8);
  #seq = 0;

  count(method: string, route: string, status: number, n = 1) {
    let byRoute = this.requests.get(method);
    if (!byRoute) this.requests.set(method, (byRoute = new Map()));
    let byStatus = byRoute.get(route);
    if (!byStatus) byRoute.set(route, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + n);
  }

  histogram(address: string): Histogram {
    let h = this.latency.get(address);
    if (!h) this.latency.set(address, (h = new Histogram()));
    return h;
  }

  noteError(message: string) {
    this.recentErrors.push({ time: Date.now(), message });
    if (this.recentErrors.length > RECENT_ERRORS) this.recentErrors.shift();
  }

  readonly #routes = new Map<string, { path: string; route: string }>();

  /** A path without its API version, and its route: the container or exec id as `:id`, as the app's patterns write it. */
  #routeOf(pathname: string): { path: string; route: string } {
    let known = this.#routes.get(pathname);
    if (!known) {
      const path = pathname.replace(VERSION_PREFIX, "");
      known = { path, route: path.replace(ID_SEGMENT, "/$1/:id") };
      if (this.#routes.size >= ROUTES_KEPT) this.#routes.clear();
      this.#routes.set(pathname, known);
    }
    return known;
  }

  /** Client connections a front thread accepted (`opened`) and saw close (`closed`). */
  noteConnections(thread: number, opened: number, closed = 0) {
    for (let i = 0; i <= thread; i++) {
      this.frontConnections[i] ??= 0;
      this.frontConnectionsOpen[i] ??= 0;
    }
    this.frontConnections[thread] += opened;
    this.frontConnectionsOpen[thread] += opened - closed;
  }

  /** Count requests answered elsewhere (another front thread) that need no log line. */
  countRequests(method: string, pathname: string, status: number, n: number) {
    this.count(method, this.#routeOf(pathname).route, status, n);
  }

  requestId(): string {
    return `${this.#idPrefix}-${(++this.#seq).toString(36)}`;
  }

  /**
   * Count and log a request answered outside the Hono app (hijacks, the server's fast path): its
   * route is the path with the container or exec id as `:id`, as the app's patterns write it.
   */
  noteRequest(logger: Logger, method: string, pathname: string, status: number, host: Host | undefined, start: number) {
    const { path, route } = this.#routeOf(pathname);
    this.count(method, route, status);
    if (status >= 500) this.noteError(`${method} ${path}: ${status}`);
    if (status >= logger.minStatus) {
      logger.log(requestLevel(status), "request", {
        id: this.requestId(),
        method,
        route,
        path,
        host: host?.name,
        status,
        ms: Math.round((performance.now() - start) * 10) / 10,
      });
    }
  }
}

/** Paths whose route is kept (the fast path sees the same few over and over). */
const ROUTES_KEPT = 1024;

const VERSION_PREFIX = /^\/v\d+\.\d+(?=\/)/;
const ID_SEGMENT = /^\/(containers|exec)\/[^/]+/;

/** Wrap each engine's fetch to time it (until the engine's response headers). */
export function instrumentFetch(factory: HostFetchFactory, telemetry: Telemetry): HostFetchFactory {
  return (address) => {
    const fetch = factory(address);
    const histogram = telemetry.histogram(address.address);
    return async (request) => {
      const start = performance.now();
      try {
        const res = await fetch(request);
        histogram.observe((performance.now() - start) / 1000);
        return res;
      } catch (err) {
        histogram.errors++;
        if (!request.signal?.aborted) telemetry.noteError(`${address.name}: ${err instanceof Error ? err.message : String(err)}`);
        throw err;
      }
    };
  };
}

// Hono keeps the router's match behind a symbol-keyed getter (what `hono/route` reads). Reading it
// gives the matched route without the array `c.req.routePath` builds on every call.
const MATCH_RESULT = Object.getOwnPropertySymbols(HonoRequest.prototype).find((s) =>
  typeof Object.getOwnPropertyDescriptor(HonoRequest.prototype, s)?.get === "function"
);
type MatchResult = [[[unknown, { path?: unknown }], unknown][]];

/** The route pattern that answered (`/containers/:id/json`); `unmatched` when none did. */
export function routeOf(c: Context): string {
  let path: unknown;
  if (MATCH_RESULT) {
    const match = (c.req as unknown as Record<symbol, MatchResult | undefined>)[MATCH_RESULT];
    path = match?.[0]?.[c.req.routeIndex]?.[0]?.[1]?.path;
  }
  if (typeof path !== "string") path = c.req.routePath;
  return path === "*" || path === "/*" ? "unmatched" : path as string;
}

/** Count every request; log it when the level asks for it. Mount first. */
export function requestTelemetry(telemetry: Telemetry, logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const start = performance.now();
    await next();
    const status = c.res.status;
    const route = routeOf(c);
    telemetry.count(c.req.method, route, status);
    if (status >= 500) telemetry.noteError(`${c.req.method} ${c.req.path}: ${status}`);
    if (status >= logger.minStatus) {
      const host = upstreamHost.get(c.req.raw);
      logger.log(requestLevel(status), "request", {
        id: c.req.raw.headers.get("x-request-id")?.slice(0, 64) || telemetry.requestId(),
        method: c.req.method,
        route,
        path: c.req.path,
        host: host?.name,
        status,
        ms: Math.round((performance.now() - start) * 10) / 10,
        ...(logger.rank <= 10 && { agent: c.req.raw.headers.get("user-agent") ?? undefined }),
      });
    }
  };
}

/** Count and log a hijacked request (attach, exec start) once its host is known (101: handed to it). */
export function noteHijack(telemetry: Telemetry, logger: Logger, pathname: string, result: Host | Response, start: number) {
  const host = result instanceof Response ? undefined : result;
  telemetry.noteRequest(logger, "POST", pathname, result instanceof Response ? result.status : 101, host, start);
}

export interface StatusOptions {
  /** Allow the admin actions (drain / undrain). */
  admin?: boolean;
}

export function hostJson(h: Host) {
  const s = h.status;
  return {
    name: h.name,
    address: h.address,
    state: s.state,
    drained: s.drained,
    apiVersion: s.apiVersion ?? null,
    version: s.version ?? null,
    containers: s.containers,
    labels: s.labels,
    failures: s.failures,
    lastError: s.lastError ?? null,
    lastSeen: s.lastSeen ? new Date(s.lastSeen).toISOString() : null,
  };
}

export function statusRoutes(ctx: FlockerContext, telemetry: Telemetry, options: StatusOptions = {}) {
  const app = new Hono();
  const { cluster } = ctx;

  app.get("/_flocker", (c) => c.redirect("/_flocker/", 301));
  app.get("/_flocker/", () =>
    new Response(statusPage(ctx, telemetry, !!options.admin), {
      headers: {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
      },
    }));
  app.get("/_flocker/hosts", (c) => c.json(cluster.hosts.map(hostJson)));
  app.get("/_flocker/metrics", () =>
    new Response(metricsText(ctx, telemetry), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8", "cache-control": "no-store" },
    }));

  for (const action of ["drain", "undrain"] as const) {
    app.post(`/_flocker/hosts/:name/${action}`, (c) => {
      if (!options.admin) return errorResponse(403, "flocker: admin actions are disabled (start flocker with FLOCKER_ADMIN=1)");
      const name = c.req.param("name");
      const host = cluster.byName(name);
      if (!host) return errorResponse(404, `flocker: no such host: ${name}`);
      host.status.drained = action === "drain";
      return c.json(hostJson(host));
    });
  }
  return app;
}

// ---------------------------------------------------------------- metrics

const label = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

export function metricsText(ctx: FlockerContext, telemetry: Telemetry): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const hosts = ctx.cluster.hosts;

  family("flocker_info", "gauge", "This flocker: placement strategy and the API version it advertises.");
  out.push(`flocker_info{strategy="${label(ctx.strategy)}",api_version="${label(ctx.cluster.apiVersion() ?? "")}"} 1`);
  family("flocker_uptime_seconds", "gauge", "Seconds since this flocker started.");
  out.push(`flocker_uptime_seconds ${(Date.now() - telemetry.startedAt) / 1000}`);

  family("flocker_requests_total", "counter", "Requests answered, by method, route (the API pattern matched) and status.");
  for (const [method, byRoute] of telemetry.requests) {
    for (const [route, byStatus] of byRoute) {
      for (const [status, n] of byStatus) {
        out.push(`flocker_requests_total{method="${label(method)}",route="${label(route)}",status="${status}"} ${n}`);
      }
    }
  }

  family("flocker_upstream_latency_seconds", "histogram", "Time until an engine's response headers, per host.");
  for (const h of hosts) {
    const hist = telemetry.latency.get(h.address);
    if (!hist) continue;
    const host = label(h.name);
    let cumulative = 0;
    LATENCY_BUCKETS.forEach((le, i) => {
      cumulative += hist.counts[i];
      out.push(`flocker_upstream_latency_seconds_bucket{host="${host}",le="${le}"} ${cumulative}`);
    });
    out.push(`flocker_upstream_latency_seconds_bucket{host="${host}",le="+Inf"} ${hist.count}`);
    out.push(`flocker_upstream_latency_seconds_sum{host="${host}"} ${hist.sum}`);
    out.push(`flocker_upstream_latency_seconds_count{host="${host}"} ${hist.count}`);
  }
  family("flocker_upstream_errors_total", "counter", "Engine calls that failed without an answer (unreachable, timed out, aborted).");
  for (const h of hosts) {
    const hist = telemetry.latency.get(h.address);
    if (hist) out.push(`flocker_upstream_errors_total{host="${label(h.name)}"} ${hist.errors}`);
  }

  family("flocker_hijacked_streams", "gauge", "Attach and exec streams open now.");
  out.push(`flocker_hijacked_streams ${telemetry.hijackedStreams}`);
  family("flocker_front_connections_total", "counter", "Client connections accepted, by front thread (0: the main thread).");
  telemetry.frontConnections.forEach((n, thread) => out.push(`flocker_front_connections_total{thread="${thread}"} ${n ?? 0}`));
  family("flocker_front_connections_open", "gauge", "Client connections open now, by front thread (hijacked streams included).");
  telemetry.frontConnectionsOpen.forEach((n, thread) => out.push(`flocker_front_connections_open{thread="${thread}"} ${n ?? 0}`));

  family("flocker_host_up", "gauge", "1 when the host answers its health probes, else 0.");
  for (const h of hosts) out.push(`flocker_host_up{host="${label(h.name)}"} ${h.status.state === "healthy" ? 1 : 0}`);
  family("flocker_host_drained", "gauge", "1 when the host is drained (no new containers placed on it).");
  for (const h of hosts) out.push(`flocker_host_drained{host="${label(h.name)}"} ${h.status.drained ? 1 : 0}`);
  family("flocker_host_containers", "gauge", "Containers on the host, all states.");
  for (const h of hosts) out.push(`flocker_host_containers{host="${label(h.name)}"} ${h.status.containers}`);
  family("flocker_host_probe_failures", "gauge", "Consecutive failed health probes of the host.");
  for (const h of hosts) out.push(`flocker_host_probe_failures{host="${label(h.name)}"} ${h.status.failures}`);
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------- page

const esc = (v: unknown) =>
  String(v ?? "").replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!);

function ago(ms: number | undefined): string {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

const CSS = `
:root{color-scheme:light dark;--fg:#1d2430;--mut:#677489;--bg:#f6f7f9;--card:#fff;--line:#e3e6eb;
--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--off:#6e7781}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--mut:#8d96a0;--bg:#0d1117;--card:#161b22;--line:#30363d;
--ok:#3fb950;--bad:#f85149;--warn:#d29922;--off:#8d96a0}}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
main{max-width:1100px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px}
.sub{color:var(--mut);margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{color:var(--mut);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
table{width:100%;border-collapse:collapse;background:var(--card);border:1px solid var(--line);border-radius:8px;overflow:hidden}
th,td{text-align:left;padding:8px 10px;border-bottom:1px solid var(--line);vertical-align:middle}
th{font-size:12px;color:var(--mut);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
tr:last-child td{border-bottom:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.healthy{background:var(--ok)}.unhealthy{background:var(--bad)}.recovering{background:var(--warn)}.drained{background:var(--off)}
.err{color:var(--bad)}.mut{color:var(--mut)}
ul.errors{list-style:none;margin:0;padding:0;background:var(--card);border:1px solid var(--line);border-radius:8px}
ul.errors li{padding:7px 10px;border-bottom:1px solid var(--line)}ul.errors li:last-child{border-bottom:0}
footer{margin-top:28px;color:var(--mut)}a{color:inherit}
`;

export function statusPage(ctx: FlockerContext, telemetry: Telemetry, admin: boolean): string {
  const { cluster } = ctx;
  const hosts = cluster.hosts;
  const healthy = hosts.filter((h) => h.status.state === "healthy").length;
  const drained = hosts.filter((h) => h.status.drained).length;
  const containers = hosts.reduce((n, h) => n + h.status.containers, 0);
  const rows = hosts.map((h) => {
    const s = h.status;
    const state = `<span class="badge ${esc(s.state)}">${esc(s.state)}</span>` +
      (s.drained ? ` <span class="badge drained">drained</span>` : "");
    return `<tr><td><b>${esc(h.name)}</b>${h.name !== h.address ? `<div class="mut mono">${esc(h.address)}</div>` : ""}</td>` +
      `<td>${state}</td><td class="mono">${esc(s.apiVersion ?? "-")}</td><td class="mono">${esc(s.version ?? "-")}</td>` +
      `<td class="num">${s.containers}</td><td class="num">${s.failures}</td><td>${esc(ago(s.lastSeen))}</td>` +
      `<td class="${s.lastError ? "err" : "mut"}">${esc(s.lastError ?? "none")}</td></tr>`;
  }).join("\n");
  const errors = telemetry.recentErrors.slice().reverse().map((e) =>
    `<li><span class="mut">${esc(new Date(e.time).toISOString().replace("T", " ").slice(0, 19))}</span> ${esc(e.message)}</li>`
  ).join("\n");
  const uptime = Math.round((Date.now() - telemetry.startedAt) / 1000);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta http-equiv="refresh" content="5"><title>flocker: ${healthy}/${hosts.length} hosts healthy</title><style>${CSS}</style></head>
<body><main>
<h1>flocker</h1>
<p class="sub">${hosts.length} Docker hosts as one engine &middot; strategy <b>${esc(ctx.strategy)}</b> &middot; API ${esc(cluster.apiVersion() ?? "-")} &middot; up ${uptime} s</p>
<div class="cards">
<div class="card"><span>hosts</span><b>${hosts.length}</b></div>
<div class="card"><span>healthy</span><b>${healthy}</b></div>
<div class="card"><span>drained</span><b>${drained}</b></div>
<div class="card"><span>containers</span><b>${containers}</b></div>
<div class="card"><span>open streams</span><b>${telemetry.hijackedStreams}</b></div>
</div>
<h2>Hosts</h2>
<table><thead><tr><th>host</th><th>state</th><th>API</th><th>engine</th><th>containers</th><th>failures</th><th>last seen</th><th>last error</th></tr></thead>
<tbody>
${rows || `<tr><td colspan="8" class="mut">no hosts</td></tr>`}
</tbody></table>
<h2>Recent errors</h2>
${errors ? `<ul class="errors">\n${errors}\n</ul>` : `<p class="mut">none</p>`}
<footer><a href="/_flocker/hosts">hosts (JSON)</a> &middot; <a href="/_flocker/metrics">metrics</a> &middot;
admin actions ${admin ? "enabled: <code>POST /_flocker/hosts/NAME/drain</code>, <code>/undrain</code>" : "disabled (FLOCKER_ADMIN=1 enables them)"}
&middot; refreshes every 5 s</footer>
</main></body></html>
`;
}
