import { describe, expect, test } from "bun:test";
import { Hono } from "hono";
import { Logger, requestLevel } from "../../lib/log.ts";
import { Histogram, LATENCY_BUCKETS, requestTelemetry, routeOf, Telemetry } from "../../lib/api/status.ts";

describe("logger levels", () => {
  test("request lines: info logs all, warn 4xx+, error 5xx, silent none", () => {
    expect(new Logger("debug").minStatus).toBe(0);
    expect(new Logger("info").minStatus).toBe(0);
    expect(new Logger("warn").minStatus).toBe(400);
    expect(new Logger("error").minStatus).toBe(500);
    expect(new Logger("silent").minStatus).toBe(Infinity);
    expect([200, 304, 404, 502].map(requestLevel)).toEqual(["info", "info", "warn", "error"]);
  });

  test("one JSON object per line, only when the level is on", () => {
    const out: string[] = [];
    const log = new Logger("warn", (l) => out.push(l));
    log.log("info", "hidden");
    log.log("error", "shown", { status: 500 });
    expect(out.length).toBe(1);
    expect(JSON.parse(out[0])).toMatchObject({ level: "error", msg: "shown", status: 500 });
  });
});

describe("telemetry", () => {
  test("routeOf gives the matched pattern; counters by method, route and status; request lines", async () => {
    const telemetry = new Telemetry();
    const out: string[] = [];
    const app = new Hono();
    app.use(requestTelemetry(telemetry, new Logger("info", (l) => out.push(l))));
    app.use(async (_c, next) => await next());
    app.get("/containers/:id/json", (c) => c.json({ route: routeOf(c) }));
    const res = await app.request("/containers/abc/json");
    expect(await res.json()).toEqual({ route: "/containers/:id/json" });
    await app.request("/containers/def/json");
    await app.request("/nowhere");
    expect(telemetry.requests.get("GET")?.get("/containers/:id/json")?.get(200)).toBe(2);
    expect(telemetry.requests.get("GET")?.get("unmatched")?.get(404)).toBe(1);
    const lines = out.map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.route, l.status, l.level])).toEqual([
      ["/containers/:id/json", 200, "info"],
      ["/containers/:id/json", 200, "info"],
      ["unmatched", 404, "warn"],
    ]);
    expect(new Set(lines.map((l) => l.id)).size).toBe(3);
  });

  test("histogram buckets", () => {
    const h = new Histogram();
    for (const s of [0.001, 0.02, 0.02, 3, 60]) h.observe(s);
    expect(h.count).toBe(5);
    expect(h.counts[0]).toBe(1);
    expect(h.counts[LATENCY_BUCKETS.indexOf(0.025)]).toBe(2);
    expect(h.counts[LATENCY_BUCKETS.indexOf(5)]).toBe(1);
    expect(h.counts[LATENCY_BUCKETS.length]).toBe(1); // +Inf
  });
});
