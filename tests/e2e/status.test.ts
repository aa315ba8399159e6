/**
 * Issue 8: flocker's own endpoints (status page in headless Chromium, hosts JSON, Prometheus
 * metrics, admin drain/undrain) and its logs (one JSON line per request, levels, no secrets).
 * Run through scripts/test.sh (it starts the test bed and installs chromium).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CLIS, docker, hostOf, removeContainers, removeDir, type RunningFlocker, startFlocker, tempDir, testEnv, uniq,
} from "./harness.ts";

const cli = CLIS[0].path;
const PREFIX = uniq("fkstatus");
const CHROMIUM = "/usr/bin/chromium";

let admin: RunningFlocker; // Bun, FLOCKER_ADMIN=1, FLOCKER_LOG=info (default)
let plain: RunningFlocker; // Deno, admin off, FLOCKER_LOG=warn
const dir = tempDir("flk-status-");
const dockerConfig = tempDir("flk-status-dcfg-");

beforeAll(async () => {
  [admin, plain] = await Promise.all([
    startFlocker("bun", { FLOCKER_ADMIN: "1" }),
    startFlocker("deno", { FLOCKER_LOG: "warn" }),
  ]);
});

afterAll(async () => {
  await Promise.all([admin?.stop(), plain?.stop()]);
  await removeContainers(PREFIX);
  removeDir(dockerConfig);
  removeDir(dir);
});

async function ok(host: string, args: string[], options: Parameters<typeof docker>[3] = {}) {
  const r = await docker(cli, host, args, { config: dockerConfig, ...options });
  if (r.code !== 0) throw new Error(`docker ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

async function scrape(f: RunningFlocker): Promise<Map<string, number>> {
  const res = await fetch(`${f.url}/_flocker/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const samples = new Map<string, number>();
  const text = await res.text();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      expect(line).toMatch(/^# (HELP|TYPE) flocker_[a-z_]+ \S/);
      continue;
    }
    const m = /^(flocker_[a-z_]+)(\{(?:[a-z_]+="(?:[^"\\]|\\.)*",?)*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const value = Number(m[3]);
    if (!Number.isFinite(value)) throw new Error(`not a numeric value: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ""}`, value);
  }
  return samples;
}

const sum = (samples: Map<string, number>, prefix: string) =>
  [...samples].filter(([k]) => k.startsWith(prefix)).reduce((n, [, v]) => n + v, 0);

describe("hosts, metrics, admin", () => {
  test("GET /_flocker/hosts lists the three engines with their state and version", async () => {
    const hosts = (await (await fetch(`${admin.url}/_flocker/hosts`)).json()) as Record<string, unknown>[];
    expect(hosts.map((h) => h.name)).toEqual(testEnv.hosts);
    for (const h of hosts) {
      expect(h.state).toBe("healthy");
      expect(h.drained).toBe(false);
      expect(String(h.apiVersion)).toMatch(/^1\.\d+$/);
      expect(typeof h.containers).toBe("number");
    }
  });

  test("metrics after a few docker calls: every line parses; requests, latency, hosts, hijacks", async () => {
    await ok(admin.dockerHost, ["ps", "-a"]);
    await ok(admin.dockerHost, ["version"]);
    await ok(admin.dockerHost, ["run", "--rm", "--name", `${PREFIX}-echo`, testEnv.image, "echo", "hi"]);
    expect((await docker(cli, admin.dockerHost, ["inspect", `${PREFIX}-missing`], { config: dockerConfig })).code).not.toBe(0);

    const m = await scrape(admin);
    expect(m.get('flocker_requests_total{method="GET",route="/containers/json",status="200"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('flocker_requests_total{method="GET",route="/version",status="200"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('flocker_requests_total{method="POST",route="/containers/create",status="201"}')).toBeGreaterThanOrEqual(1);
    expect(m.get('flocker_requests_total{method="POST",route="/containers/:id/attach",status="101"}')).toBeGreaterThanOrEqual(1);
    expect(sum(m, "flocker_requests_total{") - sum(m, 'flocker_requests_total{method="HEAD"')).toBeGreaterThanOrEqual(5);
    for (const h of testEnv.hosts) {
      expect(m.get(`flocker_host_up{host="${h}"}`)).toBe(1);
      expect(m.get(`flocker_host_drained{host="${h}"}`)).toBe(0);
      expect(m.get(`flocker_upstream_latency_seconds_count{host="${h}"}`)).toBeGreaterThan(0);
      expect(m.get(`flocker_upstream_latency_seconds_bucket{host="${h}",le="+Inf"}`))
        .toBe(m.get(`flocker_upstream_latency_seconds_count{host="${h}"}`)!);
    }
    expect(m.has("flocker_hijacked_streams")).toBe(true);
  });

  test("the hijacked-streams gauge counts an open attach and drops when it closes", async () => {
    const name = `${PREFIX}-attach`;
    await ok(admin.dockerHost, ["run", "-d", "--name", name, testEnv.image, "sleep", "60"]);
    const attach = Bun.spawn([cli, "attach", "--no-stdin", name], {
      env: { PATH: process.env.PATH!, DOCKER_HOST: admin.dockerHost, DOCKER_CONFIG: dockerConfig },
      stdout: "ignore",
      stderr: "ignore",
    });
    const until = async (want: (n: number) => boolean) => {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const n = (await scrape(admin)).get("flocker_hijacked_streams")!;
        if (want(n)) return n;
        if (Date.now() > deadline) throw new Error(`flocker_hijacked_streams stayed at ${n}`);
        await Bun.sleep(100);
      }
    };
    try {
      expect(await until((n) => n >= 1)).toBeGreaterThanOrEqual(1);
    } finally {
      attach.kill("SIGKILL");
      await attach.exited;
    }
    // Half-close is kept (the engine may still send output), so the stream ends with the container.
    await ok(admin.dockerHost, ["rm", "-f", name]);
    expect(await until((n) => n === 0)).toBe(0);
  });

  test("admin actions are refused (403, docker-style message) without FLOCKER_ADMIN", async () => {
    const res = await fetch(`${plain.url}/_flocker/hosts/${testEnv.hosts[0]}/drain`, { method: "POST" });
    expect(res.status).toBe(403);
    expect(((await res.json()) as { message: string }).message).toContain("FLOCKER_ADMIN");
    const hosts = (await (await fetch(`${plain.url}/_flocker/hosts`)).json()) as { drained: boolean }[];
    expect(hosts.every((h) => !h.drained)).toBe(true);
  });

  test("drain keeps new containers off a host; undrain lets them back", async () => {
    const drained = testEnv.hosts[0];
    const missing = await fetch(`${admin.url}/_flocker/hosts/no-such-host/drain`, { method: "POST" });
    expect(missing.status).toBe(404);
    const res = await fetch(`${admin.url}/_flocker/hosts/${drained}/drain`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { drained: boolean }).drained).toBe(true);
    try {
      const hosts = (await (await fetch(`${admin.url}/_flocker/hosts`)).json()) as { name: string; drained: boolean }[];
      expect(hosts.find((h) => h.name === drained)?.drained).toBe(true);
      expect((await scrape(admin)).get(`flocker_host_drained{host="${drained}"}`)).toBe(1);
      expect(await (await fetch(`${admin.url}/_flocker/`)).text()).toContain("drained");
      for (let i = 0; i < 3; i++) {
        const name = `${PREFIX}-drain-${i}`;
        await ok(admin.dockerHost, ["create", "--name", name, testEnv.image, "true"]);
        expect(await hostOf(name)).not.toBe(drained);
      }
    } finally {
      const back = await fetch(`${admin.url}/_flocker/hosts/${drained}/undrain`, { method: "POST" });
      expect(((await back.json()) as { drained: boolean }).drained).toBe(false);
    }
  });
});

describe("status page", () => {
  test("HTML with inline CSS only: no script, no external asset", async () => {
    const res = await fetch(`${plain.url}/_flocker/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    const html = await res.text();
    expect(html).toContain("<style>");
    expect(html).not.toMatch(/<script|<link|src=|url\(|@import|href="https?:/i);
    for (const h of testEnv.hosts) expect(html).toContain(h);
    expect((await fetch(`${plain.url}/_flocker`, { redirect: "manual" })).headers.get("location")).toBe("/_flocker/");
  });

  test("headless Chromium renders it: three hosts, screenshot saved", async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} missing: scripts/system-deps.sh installs the chromium package`);
    const profile = join(dir, "profile");
    mkdirSync(profile, { recursive: true });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1200, height: 700 },
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
      ],
      timeout: 60_000,
    });
    try {
      const page = context.pages()[0] ?? await context.newPage();
      const res = await page.goto(`${admin.url}/_flocker/`, { waitUntil: "load", timeout: 30_000 });
      expect(res?.status()).toBe(200);
      expect(await page.title()).toContain("hosts healthy");
      const rows = page.locator("table tbody tr");
      expect(await rows.count()).toBe(3);
      const text = await page.locator("table").innerText();
      for (const h of testEnv.hosts) expect(text).toContain(h);
      expect(text.match(/healthy/g)?.length).toBeGreaterThanOrEqual(3);
      const png = join(dir, "status-page.png");
      await page.screenshot({ path: png, fullPage: true });
      expect(statSync(png).size).toBeGreaterThan(10_000);
      console.log(`status page screenshot: ${png}`);
    } finally {
      await context.close();
    }
  }, 120_000);
});

describe("logs", () => {
  interface Line {
    time: string;
    level: string;
    msg: string;
    [k: string]: unknown;
  }
  const lines = (f: RunningFlocker): Line[] =>
    f.output().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line);

  test("start-up is one JSON line naming every host when stdout is not a terminal", () => {
    const start = lines(admin).find((l) => l.msg === "listening")!;
    expect(start.level).toBe("info");
    expect((start.hosts as { name: string; state: string; version: string }[]).map((h) => h.name)).toEqual(testEnv.hosts);
    expect((start.hosts as { state: string }[]).every((h) => h.state === "healthy")).toBe(true);
  });

  test("one JSON line per request: id, method, route, host, status, duration", async () => {
    const name = `${PREFIX}-log`;
    await ok(admin.dockerHost, ["create", "--name", name, testEnv.image, "true"]);
    await Bun.sleep(200);
    const requests = lines(admin).filter((l) => l.msg === "request");
    const create = requests.filter((l) => l.route === "/containers/create" && l.status === 201).at(-1)!;
    expect(create).toBeDefined();
    expect(create.method).toBe("POST");
    expect(testEnv.hosts).toContain(create.host as string);
    expect(create.host).toBe((await hostOf(name))!);
    expect(typeof create.ms).toBe("number");
    expect(String(create.id)).toMatch(/\S/);
    expect(new Set(requests.map((l) => l.id)).size).toBe(requests.length);
    expect(requests.some((l) => l.route === "/_ping" && l.level === "info")).toBe(true);
  });

  test("never logs registry credentials (docker login, X-Registry-Auth on pull)", async () => {
    const login = await docker(cli, admin.dockerHost, ["login", testEnv.registry, "-u", testEnv.registryUser, "--password-stdin"], {
      config: dockerConfig,
      input: testEnv.registryPass,
    });
    expect(login.code, login.stderr).toBe(0);
    // A tag the registry lacks: the CLI still sends its credentials (X-Registry-Auth), nothing is pulled.
    const pull = await docker(cli, admin.dockerHost, ["pull", `${testEnv.registry}/flocker/busybox:no-such-tag`], { config: dockerConfig });
    expect(pull.code).not.toBe(0);
    await Bun.sleep(200);
    const out = admin.output();
    expect(out).toContain('"route":"/auth"');
    expect(out).not.toContain(testEnv.registryPass);
    expect(out).not.toContain(btoa(`${testEnv.registryUser}:${testEnv.registryPass}`));
    expect(out.toLowerCase()).not.toContain("x-registry-auth");
  });

  test("FLOCKER_LOG=warn writes only failed requests", async () => {
    await ok(plain.dockerHost, ["ps"]);
    expect((await docker(cli, plain.dockerHost, ["inspect", `${PREFIX}-missing`], { config: dockerConfig })).code).not.toBe(0);
    await Bun.sleep(200);
    const requests = lines(plain).filter((l) => l.msg === "request");
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.every((l) => (l.status as number) >= 400 && l.level === "warn")).toBe(true);
  });
});
