/**
 * flocker benchmark (issue 7): `npm run bench`.
 *
 * Starts its own real-engine test bed (scripts/cluster.sh up in CLUSTER_DIR, default /tmp/fkbench,
 * engines on 127.0.0.1:2451-2453, registry :5050, redis :6450), starts flocker under Bun and under
 * Deno, HAProxy and a 100-port fake engine, measures everything in ONE run with the variants
 * alternated round by round, prints a table of ratios with the absolute numbers beside them and
 * PASS/MISS per target, writes it to bench/results.md, and tears everything down again (also on
 * SIGINT / SIGTERM / SIGHUP). Every process is started here and stopped by its PID.
 *
 * Environment (defaults):
 *   CLUSTER_DIR=/tmp/fkbench ENGINE_PORT_BASE=2451 REGISTRY_PORT=5050 REDIS_PORT=6450
 *   ROUNDS=3            rounds; every number is a median over them (variants alternate within a round)
 *   WRK_DURATION=5s     per wrk run (wrk -t2 -c10 --latency)
 *   CP_MB=200 EXEC_MB=100 RSS_MB=1000   payload sizes (MB = 10^6 bytes)
 *   PS_SAMPLES=20       GET /containers/json per variant per round
 *   PS_CLI_SAMPLES=10   `docker ps -a` runs per variant per round
 *   PS_CONTAINERS=10    stopped containers made on each engine for the `ps` benchmark
 *   RUN_PER_ROUND=2     `docker run --rm` per variant per round
 *   FAKE_ENGINES=100 FAKE_CONTAINERS=5   simulated engines for the wide `ps`
 *   BENCH_RUNTIMES=bun,deno              flocker runtimes to measure
 *   BENCH_ONLY          unset: every part; else a comma list of routed,cp,exec,ps,run,rss,rss-requests,tls,fake
 *   HAPROXY_NBTHREAD    unset: HAProxy's own default (one thread per CPU)
 *   BENCH_DOCKER_CLI=/usr/bin/docker
 *   BENCH_RESULTS=bench/results.md
 */
import process from "node:process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { freePort } from "../tests/ports.ts";
import { defaultFrontThreads } from "../lib/adapter/node-server.ts";
import type { Subprocess } from "bun";

// ------------------------------------------------------------------------------------------ config

const ROOT = join(import.meta.dir, "..");
const BUN = join(ROOT, "node_modules/.bin/bun");
const DENO = join(ROOT, "node_modules/.bin/deno");
const env = process.env;

function numEnv(name: string, def: number): number {
  const v = env[name];
  if (v === undefined || v === "") return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`bench: ${name} must be a positive number (got '${v}')`);
    process.exit(2);
  }
  return n;
}

type Runtime = "bun" | "deno";
const CFG = {
  clusterDir: (env.CLUSTER_DIR ?? "/tmp/fkbench").replace(/\/+$/, ""),
  enginePortBase: numEnv("ENGINE_PORT_BASE", 2451),
  registryPort: numEnv("REGISTRY_PORT", 5050),
  redisPort: numEnv("REDIS_PORT", 6450),
  rounds: Math.round(numEnv("ROUNDS", 3)),
  wrkDuration: env.WRK_DURATION ?? "5s",
  cpBytes: Math.round(numEnv("CP_MB", 200) * 1e6),
  execBytes: Math.round(numEnv("EXEC_MB", 100) * 1e6),
  rssBytes: Math.round(numEnv("RSS_MB", 1000) * 1e6),
  psSamples: Math.round(numEnv("PS_SAMPLES", 20)),
  psCliSamples: Math.round(numEnv("PS_CLI_SAMPLES", 10)),
  psContainers: Math.round(numEnv("PS_CONTAINERS", 10)),
  runPerRound: Math.round(numEnv("RUN_PER_ROUND", 2)),
  fakeEngines: Math.round(numEnv("FAKE_ENGINES", 100)),
  fakeContainers: Math.round(numEnv("FAKE_CONTAINERS", 5)),
  only: env.BENCH_ONLY ? new Set(env.BENCH_ONLY.split(",").map((s) => s.trim())) : undefined,
  runtimes: (env.BENCH_RUNTIMES ?? "bun,deno").split(",").map((s) => s.trim()).filter(Boolean) as Runtime[],
  haproxyThreads: env.HAPROXY_NBTHREAD,
  docker: env.BENCH_DOCKER_CLI ?? "/usr/bin/docker",
  results: env.BENCH_RESULTS ?? join(ROOT, "bench", "results.md"),
};
for (const r of CFG.runtimes) {
  if (r !== "bun" && r !== "deno") {
    console.error(`bench: BENCH_RUNTIMES: unknown runtime '${r}' (bun, deno)`);
    process.exit(2);
  }
}
const CONTAINER = "fkb-main";
const TLS_CONTAINER = "fkb-tls";
const RSS_LIMIT_MB = 100;
const RSS_FLAT_MB = 10;

const t0 = performance.now();
const log = (msg: string) => console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${msg}`);

// ------------------------------------------------------------------------------ process tracking

const live = new Set<Subprocess>();
let aborted = false;
class Aborted extends Error {}

function spawn(cmd: string[], options: Parameters<typeof Bun.spawn>[1] = {}): Subprocess {
  if (aborted) throw new Aborted("aborted");
  const proc = Bun.spawn(cmd, { stdin: "ignore", ...options });
  live.add(proc);
  void proc.exited.then(() => live.delete(proc));
  return proc;
}

/** Children of every process, from /proc/PID/stat. */
function childrenMap(): Map<number, number[]> {
  const map = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = map.get(ppid) ?? [];
      list.push(Number(d));
      map.set(ppid, list);
    } catch { /* gone */ }
  }
  return map;
}

function descendants(pid: number, map = childrenMap()): number[] {
  const out: number[] = [];
  for (const c of map.get(pid) ?? []) out.push(c, ...descendants(c, map));
  return out;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Stop a process we started (and whatever it started: pipelines run by bash) by PID: TERM, then KILL. */
async function stopProcess(proc: Subprocess, graceMs = 5000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const pids = [proc.pid, ...descendants(proc.pid)];
  for (const p of pids) {
    try {
      process.kill(p, "SIGTERM");
    } catch { /* gone */ }
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && pids.some(alive)) await Bun.sleep(50);
  for (const p of pids.filter(alive)) {
    try {
      process.kill(p, "SIGKILL");
    } catch { /* gone */ }
  }
  await Promise.race([proc.exited, Bun.sleep(2000)]);
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run a command to its end; wall time in ms (spawn to exit). */
async function run(cmd: string[], options: { env?: Record<string, string | undefined>; timeoutMs?: number; cwd?: string } = {}): Promise<Result> {
  const start = performance.now();
  const proc = spawn(cmd, { env: options.env ?? env, cwd: options.cwd ?? ROOT, stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => void stopProcess(proc, 1000), options.timeoutMs ?? 300_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
    proc.exited,
  ]);
  const ms = performance.now() - start;
  clearTimeout(timer);
  if (aborted) throw new Aborted("aborted");
  return { code, stdout, stderr, ms };
}

async function mustRun(what: string, cmd: string[], options: Parameters<typeof run>[1] = {}): Promise<Result> {
  const r = await run(cmd, options);
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-600)}`);
  return r;
}

// ----------------------------------------------------------------------------------- statistics

const median = (xs: number[]) => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** Round r runs the variants in a rotated order, so no variant always goes first. */
const rotate = <T>(xs: T[], r: number) => xs.map((_, i) => xs[(i + r) % xs.length]);
const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");
const fmtMs = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`);
const fmtMB = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
const fmtRate = (bytes: number, ms: number) => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
const RT_NAME: Record<Runtime, string> = { bun: "Bun", deno: "Deno" };

type Cpu = { user: number; sys: number };
/**
 * CPU a process has used so far, user and system, in ms (all its threads: /proc/PID/stat, in clock
 * ticks of 10 ms). Wall times on a shared 2-core machine swing by a third from run to run; what a
 * proxy itself burns per request or per copy is steadier, and it is what the engine and the CLI
 * lose to it when the cores are busy.
 */
function cpuMs(pid: number): Cpu {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // from field 3 (state) on
  return { user: Number(fields[11]) * 10, sys: Number(fields[12]) * 10 };
}
/** CPU (ms) `pid` used while `work` ran. */
async function cpuDuring<T>(pid: number | undefined, work: () => Promise<T>): Promise<{ result: T; cpu?: Cpu }> {
  const before = pid ? cpuMs(pid) : undefined;
  const result = await work();
  if (!pid || !before) return { result };
  const after = cpuMs(pid);
  return { result, cpu: { user: after.user - before.user, sys: after.sys - before.sys } };
}
const fmtCpu = (c: Cpu, unit: "us" | "ms") => {
  const f = (x: number) => (unit === "us" ? `${x.toFixed(1)} µs` : `${Math.round(x)} ms`);
  return `${f(c.user + c.sys)} (user ${f(c.user)}, sys ${f(c.sys)})`;
};
/** The median sample by total (user + sys), so that the two parts shown add up. */
const medianCpu = (cs: Cpu[]): Cpu => {
  const s = [...cs].sort((a, b) => a.user + a.sys - (b.user + b.sys));
  return s[(s.length - 1) >> 1];
};
/** The dockerd of engine 1 (the one every benchmark talks to), for its own CPU per request. */
const enginePid = () => Number(readFileSync(join(CFG.clusterDir, "e1", "pid"), "utf8").trim()) || undefined;

// --------------------------------------------------------------------------------------- results

interface Row {
  bench: string;
  variant: string;
  value: string;
  baseline: string;
  ratio: string;
  target: string;
  result: "PASS" | "MISS" | "ERROR" | "-";
}
const rows: Row[] = [];
const samples: string[] = [];
const notes: string[] = [];

function ratioRow(bench: string, variant: string, value: string, baseline: string, ratio: number, target: { op: ">=" | "<="; x: number } | undefined) {
  const ok = target ? (target.op === ">=" ? ratio >= target.x : ratio <= target.x) : undefined;
  rows.push({
    bench,
    variant,
    value,
    baseline,
    // A miss that two decimals would round onto the target shows a third one (0.995x, not 1.00x).
    ratio: Number.isFinite(ratio) ? `${ratio.toFixed(ok === false && Number(ratio.toFixed(2)) === target!.x ? 3 : 2)}x` : "n/a",
    target: target ? `${target.op} ${target.x.toFixed(1)}x` : "(info)",
    result: ok === undefined ? "-" : Number.isFinite(ratio) && ok ? "PASS" : "MISS",
  });
}

function errorRow(bench: string, variant: string, err: unknown) {
  const msg = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, " ").replace(/\|/g, "/").slice(0, 160);
  rows.push({ bench, variant, value: `error: ${msg}`, baseline: "", ratio: "", target: "", result: "ERROR" });
}

/** Run one benchmark section; a failure becomes an ERROR row and the run goes on. */
async function section(name: string, fn: () => Promise<void>) {
  if (aborted) throw new Aborted("aborted");
  log(`--- ${name}`);
  try {
    await fn();
  } catch (err) {
    if (err instanceof Aborted || aborted) throw err;
    log(`${name}: ERROR ${err instanceof Error ? err.stack ?? err.message : err}`);
    errorRow(name, "", err);
  }
}

// ------------------------------------------------------------------------------- the test bed

const clusterEnv = {
  ...env,
  CLUSTER_DIR: CFG.clusterDir,
  ENGINES: "3",
  ENGINE_PORT_BASE: String(CFG.enginePortBase),
  REGISTRY_PORT: String(CFG.registryPort),
  REDIS_PORT: String(CFG.redisPort),
};
let clusterStarted = false;
let workDir = "";

async function clusterUp(): Promise<Record<string, string>> {
  const status = await run(["bash", "scripts/cluster.sh", "status"], { env: clusterEnv, timeoutMs: 60_000 });
  if (status.code === 0) {
    throw new Error(
      `a test bed is already running in ${CFG.clusterDir}; the benchmark starts and stops its own: ` +
        `choose another CLUSTER_DIR or stop that one (CLUSTER_DIR=${CFG.clusterDir} scripts/cluster.sh down)`,
    );
  }
  log(`starting the test bed in ${CFG.clusterDir} (engines :${CFG.enginePortBase}-${CFG.enginePortBase + 2}, registry :${CFG.registryPort}, redis :${CFG.redisPort})`);
  clusterStarted = true;
  const proc = spawn(["bash", "scripts/cluster.sh", "up"], { env: clusterEnv, cwd: ROOT, stdout: "ignore", stderr: "inherit" });
  const code = await proc.exited;
  if (aborted) throw new Aborted("aborted");
  if (code !== 0) throw new Error(`scripts/cluster.sh up failed (exit ${code})`);
  const vars: Record<string, string> = {};
  for (const line of readFileSync(join(CFG.clusterDir, "env"), "utf8").split("\n")) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) vars[m[1]] = m[2];
  }
  return vars;
}

async function clusterDown() {
  if (!clusterStarted) return;
  clusterStarted = false;
  log(`tearing the test bed down (${CFG.clusterDir})`);
  // Not through spawn(): this must run during cleanup too.
  const proc = Bun.spawn(["bash", "scripts/cluster.sh", "down"], { env: clusterEnv, cwd: ROOT, stdin: "ignore", stdout: "inherit", stderr: "inherit" });
  const code = await proc.exited;
  if (code !== 0) log(`WARNING: scripts/cluster.sh down exited with ${code}; check ${CFG.clusterDir}`);
}

// ------------------------------------------------------------------------------- engine helpers

async function api<T = unknown>(hostPort: string, path: string, init?: RequestInit): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(`http://${hostPort}${path}`, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch { /* text */ }
  return { status: res.status, body: body as T, headers: res.headers };
}

async function createContainer(hostPort: string, name: string, cmd: string[], image: string, start: boolean): Promise<string> {
  const created = await api<{ Id: string; message?: string }>(hostPort, `/containers/create?name=${name}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ Image: image, Cmd: cmd, Labels: { "flocker.bench": "1" } }),
  });
  if (created.status !== 201) throw new Error(`create ${name} on ${hostPort}: ${created.status} ${JSON.stringify(created.body)}`);
  if (start) {
    const started = await api(hostPort, `/containers/${created.body.Id}/start`, { method: "POST" });
    if (started.status !== 204) throw new Error(`start ${name} on ${hostPort}: ${started.status} ${JSON.stringify(started.body)}`);
  }
  return created.body.Id;
}

function dockerEnv(dockerHost: string) {
  return {
    PATH: env.PATH ?? "/usr/bin:/bin",
    HOME: env.HOME ?? "/root",
    DOCKER_HOST: dockerHost,
    DOCKER_CONFIG: join(workDir, "dcfg"),
    DOCKER_CLI_HINTS: "false",
  };
}

// ------------------------------------------------------------------------------ flocker, haproxy

interface Flocker {
  runtime: Runtime;
  label: string;
  proc: Subprocess;
  pid: number;
  port: number;
  url: string;
  dockerHost: string;
  logPath: string;
  startMs: number;
  /** VmRSS (kB) right after start-up, before any load. */
  startRss: number;
}

/** `tls`: flocker serves mTLS with these PEM files (and polls itself with them). */
type ServeTls = { ca: string; cert: string; key: string; extraEnv: Record<string, string> };

async function startFlocker(runtime: Runtime, hosts: string[], tag: string, tls?: ServeTls): Promise<Flocker> {
  const port = await freePort();
  const logPath = join(workDir, `flocker-${tag}-${runtime}.log`);
  const fd = openSync(logPath, "w");
  const cmd = runtime === "bun" ? [BUN, "run", "main.ts"] : [DENO, "run", "-A", "main.ts"];
  const start = performance.now();
  const proc = spawn(cmd, {
    cwd: ROOT,
    env: {
      PATH: env.PATH ?? "/usr/bin:/bin",
      HOME: env.HOME ?? "/root",
      DENO_NO_UPDATE_CHECK: "1",
      FLOCKER_HOSTS: hosts.join(","),
      FLOCKER_LISTEN: `127.0.0.1:${port}`,
      FLOCKER_LOG: "error",
      ...tls?.extraEnv,
    },
    stdout: fd,
    stderr: fd,
  });
  closeSync(fd);
  const url = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`flocker (${runtime}) exited with ${proc.exitCode}: ${readFileSync(logPath, "utf8").slice(-800)}`);
    try {
      const res = await fetch(`${url}/_ping`, tls && ({ tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } as RequestInit));
      await res.text();
      if (res.status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      await stopProcess(proc);
      throw new Error(`flocker (${runtime}) did not answer /_ping within 60 s: ${readFileSync(logPath, "utf8").slice(-800)}`);
    }
    await Bun.sleep(50);
  }
  const startMs = performance.now() - start;
  await Bun.sleep(200);
  const startRss = rssKb(proc.pid);
  log(`flocker (${RT_NAME[runtime]}) pid ${proc.pid} on :${port} over ${hosts.length} engines, up in ${fmtMs(startMs)}, RSS ${(startRss / 1024).toFixed(1)} MB`);
  return { runtime, label: `flocker (${RT_NAME[runtime]})`, proc, pid: proc.pid, port, url, dockerHost: `tcp://127.0.0.1:${port}`, logPath, startMs, startRss };
}

/** Still alive? A dead flocker is reported with the tail of its log. */
function checkAlive(f: Flocker) {
  if (f.proc.exitCode !== null || f.proc.signalCode !== null) {
    throw new Error(`${f.label} died (exit ${f.proc.exitCode ?? f.proc.signalCode}): ${readFileSync(f.logPath, "utf8").slice(-600)}`);
  }
}

async function startHaproxy(engine: string): Promise<{ proc: Subprocess; url: string; cfg: string }> {
  const port = await freePort();
  const cfg = join(workDir, "haproxy.cfg");
  writeFileSync(
    cfg,
    `# generated by bench/bench.ts: plain HTTP reverse proxy in front of engine 1
global
    maxconn 4096
${CFG.haproxyThreads ? `    nbthread ${CFG.haproxyThreads}\n` : ""}
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench
    bind 127.0.0.1:${port}
    default_backend engine

backend engine
    server e1 ${engine}
`,
  );
  const logPath = join(workDir, "haproxy.log");
  const fd = openSync(logPath, "w");
  const proc = spawn(["haproxy", "-f", cfg, "-db"], { stdout: fd, stderr: fd });
  closeSync(fd);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`haproxy exited with ${proc.exitCode}: ${readFileSync(logPath, "utf8").slice(-800)}`);
    try {
      const res = await fetch(`${url}/_ping`);
      await res.text();
      if (res.status === 200) break;
    } catch { /* not up */ }
    if (Date.now() > deadline) throw new Error(`haproxy did not answer within 15 s: ${readFileSync(logPath, "utf8").slice(-800)}`);
    await Bun.sleep(50);
  }
  log(`haproxy pid ${proc.pid} on :${port} -> ${engine}`);
  return { proc, url, cfg };
}

// ------------------------------------------------------------------------------------------ wrk

interface Wrk {
  rps: number;
  p50: number;
  p99: number;
  requests: number;
  errors: string[];
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };
function parseLatency(s: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s);
  return m ? Number(m[1]) * UNIT_MS[m[2]] : NaN;
}

async function wrk(url: string, duration = CFG.wrkDuration, threads = 2, conns = 10): Promise<Wrk> {
  const r = await mustRun("wrk", ["wrk", `-t${threads}`, `-c${conns}`, `-d${duration}`, "--latency", url], { timeoutMs: 120_000 });
  const out = r.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]);
  const p50 = parseLatency(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const p99 = parseLatency(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? "");
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const errors: string[] = [];
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1];
  if (non2xx) errors.push(`${non2xx} non-2xx`);
  const sock = /Socket errors:\s+(.*)/.exec(out)?.[1];
  if (sock) errors.push(`socket errors: ${sock.trim()}`);
  if (!Number.isFinite(rps) || !requests) throw new Error(`wrk gave no result: ${out.slice(-400)} ${r.stderr.slice(-200)}`);
  return { rps, p50, p99, requests, errors };
}

// --------------------------------------------------------------------------------------- main

interface Ctx {
  hosts: string[];
  image: string;
  e1: string;
  containerId: string;
  flockers: Flocker[];
  haproxy?: { proc: Subprocess; url: string; cfg: string };
  cpFile: string;
  execFile: string;
}

async function benchRouted(ctx: Ctx) {
  const path = `/containers/${ctx.containerId}/json`;
  // pid: whose CPU per request is counted (direct: the engine's own, for scale).
  const variants: { name: string; url: string; pid?: number }[] = [
    ...ctx.flockers.map((f) => ({ name: f.label, url: f.url + path, pid: f.pid })),
    { name: "direct", url: `http://${ctx.e1}${path}`, pid: enginePid() },
    { name: "HAProxy", url: ctx.haproxy!.url + path, pid: ctx.haproxy!.proc.pid },
  ];
  // Every variant answers 200 for the container, then a warm-up round as long as a measured one,
  // not counted: under Deno the first seconds of load cost up to ~2x the CPU per request of the
  // steady state (V8 still compiling the hot path, the young generation still growing).
  for (const v of variants) {
    const res = await fetch(v.url);
    const body = await res.text();
    if (res.status !== 200) throw new Error(`${v.name}: GET ${path} -> ${res.status} ${body.slice(0, 200)}`);
    await wrk(v.url);
  }
  const got = new Map<string, Wrk[]>(variants.map((v) => [v.name, []]));
  const cpu = new Map<string, Cpu[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < CFG.rounds; r++) {
    for (const v of rotate(variants, r)) {
      ctx.flockers.forEach(checkAlive);
      const { result: w, cpu: used } = await cpuDuring(v.pid, () => wrk(v.url));
      got.get(v.name)!.push(w);
      if (used) cpu.get(v.name)!.push({ user: (used.user * 1000) / w.requests, sys: (used.sys * 1000) / w.requests });
      log(`round ${r + 1}: ${v.name.padEnd(16)} ${fmtInt(w.rps).padStart(7)} req/s  p50 ${fmtMs(w.p50)}  p99 ${fmtMs(w.p99)}${w.errors.length ? "  " + w.errors.join(", ") : ""}`);
    }
  }
  const agg = (name: string) => {
    const ws = got.get(name)!;
    const errs = ws.flatMap((w) => w.errors);
    return {
      rps: median(ws.map((w) => w.rps)),
      p50: median(ws.map((w) => w.p50)),
      p99: median(ws.map((w) => w.p99)),
      errs,
      text() {
        return `${fmtInt(this.rps)} req/s, p50 ${fmtMs(this.p50)}, p99 ${fmtMs(this.p99)}${errs.length ? ` (${errs.join("; ")})` : ""}`;
      },
    };
  };
  for (const v of variants) samples.push(`routed ${v.name}: req/s ${got.get(v.name)!.map((w) => fmtInt(w.rps)).join(", ")}`);
  const ha = agg("HAProxy");
  const direct = agg("direct");
  const bench = "routed `GET /containers/{id}/json` (wrk -t2 -c10)";
  for (const f of ctx.flockers) {
    const a = agg(f.label);
    ratioRow(bench, `${f.label} / HAProxy`, a.text(), `HAProxy: ${ha.text()}`, a.rps / ha.rps, { op: ">=", x: 1.0 });
    ratioRow(bench, `${f.label} / direct`, a.text(), `direct: ${direct.text()}`, a.rps / direct.rps, undefined);
    if (a.errs.length) notes.push(`${f.label} routed: wrk reported ${a.errs.join("; ")}`);
  }
  if (ha.errs.length) notes.push(`HAProxy routed: wrk reported ${ha.errs.join("; ")}`);
  const perRequest = (name: string) => medianCpu(cpu.get(name)!);
  const haCpu = perRequest("HAProxy");
  const cpuBench = "CPU per routed request, the proxy process (user + sys; during the wrk runs above)";
  for (const f of ctx.flockers) {
    const c = perRequest(f.label);
    ratioRow(cpuBench, `${f.label} / HAProxy`, fmtCpu(c, "us"), `HAProxy: ${fmtCpu(haCpu, "us")}; the engine itself (direct): ${fmtCpu(perRequest("direct"), "us")}`, (c.user + c.sys) / (haCpu.user + haCpu.sys), undefined);
  }
}

interface CliVariant {
  name: string;
  dockerHost: string;
  flocker?: Flocker;
  /** A proxy's process, whose CPU per run is counted. */
  pid?: number;
}

function cliVariants(ctx: Ctx): CliVariant[] {
  return [{ name: "direct", dockerHost: `tcp://${ctx.e1}` }, ...ctx.flockers.map((f) => ({ name: f.label, dockerHost: f.dockerHost, flocker: f, pid: f.pid }))];
}

/** Run `measure` for every variant, ROUNDS times alternated; returns ms samples per variant. */
async function alternate(variants: CliVariant[], perRound: number, what: string, measure: (v: CliVariant) => Promise<number>) {
  const got = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  /** CPU (ms) each proxy used per run. */
  const cpu = new Map<string, Cpu[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < CFG.rounds; r++) {
    for (const v of rotate(variants, r)) {
      for (let k = 0; k < perRound; k++) {
        if (v.flocker) checkAlive(v.flocker);
        const { result: ms, cpu: used } = await cpuDuring(v.pid, () => measure(v));
        got.get(v.name)!.push(ms);
        if (used) cpu.get(v.name)!.push(used);
        log(`round ${r + 1}: ${what} ${v.name.padEnd(16)} ${fmtMs(ms)}`);
      }
    }
  }
  for (const v of variants) samples.push(`${what} ${v.name}: ${got.get(v.name)!.map(fmtMs).join(", ")}`);
  return { ms: got, cpu };
}

/** An info row: the CPU each proxy used per run (median), beside HAProxy's when it ran too. */
function cpuRows(bench: string, ctx: Ctx, cpu: Map<string, Cpu[]>) {
  const ha = cpu.get("HAProxy")?.length ? medianCpu(cpu.get("HAProxy")!) : undefined;
  for (const f of ctx.flockers) {
    const c = medianCpu(cpu.get(f.label)!);
    ratioRow(`${bench}: CPU per run, the proxy process`, ha ? `${f.label} / HAProxy` : f.label, fmtCpu(c, "ms"), ha ? `HAProxy: ${fmtCpu(ha, "ms")}` : "", ha ? (c.user + c.sys) / (ha.user + ha.sys) : NaN, undefined);
  }
}

/** Size of a file in the container, from the engine's archive stat header. */
async function sizeInContainer(ctx: Ctx, path: string): Promise<number> {
  const res = await fetch(`http://${ctx.e1}/containers/${ctx.containerId}/archive?path=${encodeURIComponent(path)}`, { method: "HEAD" });
  const stat = res.headers.get("X-Docker-Container-Path-Stat");
  if (res.status !== 200 || !stat) return -1;
  return Number(JSON.parse(Buffer.from(stat, "base64").toString("utf8")).size);
}

async function benchCp(ctx: Ctx) {
  // The C proxy too, for reference: what any proxy's extra copy of the bytes costs on this machine.
  const haproxy = ctx.haproxy && { name: "HAProxy", dockerHost: ctx.haproxy.url.replace(/^http:/, "tcp:"), pid: ctx.haproxy.proc.pid };
  const variants = [...cliVariants(ctx), ...(haproxy ? [haproxy] : [])];
  const out = join(workDir, "cp-out");
  const outGot = await alternate(variants, 1, "cp out", async (v) => {
    rmSync(out, { force: true });
    const r = await mustRun(`docker cp out (${v.name})`, [CFG.docker, "cp", `${CONTAINER}:/tmp/big`, out], { env: dockerEnv(v.dockerHost) });
    const size = existsSync(out) ? statSync(out).size : -1;
    if (size !== CFG.cpBytes) throw new Error(`docker cp out (${v.name}): got ${size} bytes, want ${CFG.cpBytes}`);
    return r.ms;
  });
  rmSync(out, { force: true });
  const inGot = await alternate(variants, 1, "cp in", async (v) => {
    const r = await mustRun(`docker cp in (${v.name})`, [CFG.docker, "cp", ctx.cpFile, `${CONTAINER}:/tmp/in`], { env: dockerEnv(v.dockerHost) });
    const size = await sizeInContainer(ctx, "/tmp/in");
    if (size !== CFG.cpBytes) throw new Error(`docker cp in (${v.name}): container has ${size} bytes, want ${CFG.cpBytes}`);
    return r.ms;
  });
  for (const [dir, { ms: got, cpu }] of [["out", outGot], ["in", inGot]] as const) {
    const bench = `\`docker cp\` ${dir} ${fmtMB(CFG.cpBytes)}`;
    const d = median(got.get("direct")!);
    for (const f of ctx.flockers) {
      const m = median(got.get(f.label)!);
      ratioRow(bench, `${f.label} / direct (throughput)`, `${fmtMs(m)} (${fmtRate(CFG.cpBytes, m)})`, `direct: ${fmtMs(d)} (${fmtRate(CFG.cpBytes, d)})`, d / m, { op: ">=", x: 0.9 });
    }
    if (haproxy) {
      const h = median(got.get(haproxy.name)!);
      ratioRow(bench, "HAProxy / direct (throughput)", `HAProxy: ${fmtMs(h)} (${fmtRate(CFG.cpBytes, h)})`, `direct: ${fmtMs(d)} (${fmtRate(CFG.cpBytes, d)})`, d / h, undefined);
    }
    cpuRows(bench, ctx, cpu);
  }
}

async function benchExec(ctx: Ctx) {
  const variants = cliVariants(ctx);
  const script = `set -o pipefail; "$1" exec -i ${CONTAINER} cat < "$2" | wc -c`;
  const { ms: got, cpu } = await alternate(variants, 1, "exec -i cat", async (v) => {
    const r = await mustRun(`docker exec -i cat (${v.name})`, ["bash", "-c", script, "bash", CFG.docker, ctx.execFile], { env: dockerEnv(v.dockerHost) });
    const n = Number(r.stdout.trim());
    if (n !== CFG.execBytes) throw new Error(`docker exec -i cat (${v.name}): ${n} bytes came back, want ${CFG.execBytes}`);
    return r.ms;
  });
  const bench = `\`exec -i cat\` ${fmtMB(CFG.execBytes)} (byte count checked)`;
  const d = median(got.get("direct")!);
  for (const f of ctx.flockers) {
    const m = median(got.get(f.label)!);
    ratioRow(bench, `${f.label} / direct (throughput)`, `${fmtMs(m)} (${fmtRate(CFG.execBytes, m)})`, `direct: ${fmtMs(d)} (${fmtRate(CFG.execBytes, d)})`, d / m, { op: ">=", x: 0.9 });
  }
  cpuRows(bench, ctx, cpu);
}

/**
 * The deployment off loopback: a 4th engine that speaks only TLS and wants client certificates
 * (dockerd --tlsverify), and flocker serving mTLS in front of it. `exec -i cat` over it: the
 * CLI's TLS to flocker, flocker's own to the engine (direct: the CLI's to the engine).
 */
async function benchTls(ctx: Ctx) {
  const dir = join(workDir, "tls");
  const certs = join(dir, "certs");
  mkdirSync(certs, { recursive: true });
  const sh = (what: string, cmd: string) => mustRun(what, ["sh", "-c", cmd], { cwd: certs });
  // One CA; the engine and flocker show the server certificate, the CLI and flocker the client one.
  await sh("TLS certificates", [
    "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=bench-ca",
    "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > server.ext",
    "openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 1 -extfile server.ext",
    "printf 'extendedKeyUsage=clientAuth\\n' > client.ext",
    "openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=bench-client",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile client.ext",
  ].map((c) => `${c} 2>/dev/null`).join(" && "));
  const pem = (f: string) => readFileSync(join(certs, f), "utf8");
  const port = await freePort();
  const sock = join(dir, "s");
  writeFileSync(join(dir, "daemon.json"), JSON.stringify({ "deprecated-key-path": join(dir, "key.json") }));
  const logFd = openSync(join(dir, "dockerd.log"), "w");
  const dockerd = spawn([
    "dockerd", "--config-file", join(dir, "daemon.json"), "--data-root", join(dir, "data"), "--exec-root", join(dir, "x"),
    "--pidfile", join(dir, "pid"), "-H", `unix://${sock}`, "-H", `tcp://127.0.0.1:${port}`,
    "--tlsverify", "--tlscacert", join(certs, "ca.pem"), "--tlscert", join(certs, "server.pem"), "--tlskey", join(certs, "server-key.pem"),
    "--iptables=false", "--ip-masq=false", "--bridge=none", "--storage-driver=vfs",
  ], { stdout: logFd, stderr: logFd });
  closeSync(logFd);
  const flockers: Flocker[] = [];
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (dockerd.exitCode !== null) throw new Error(`TLS dockerd exited with ${dockerd.exitCode}: ${readFileSync(join(dir, "dockerd.log"), "utf8").slice(-600)}`);
      try {
        if ((await fetch("http://localhost/_ping", { unix: sock } as RequestInit)).status === 200) break;
      } catch { /* not up yet */ }
      if (Date.now() > deadline) throw new Error("TLS dockerd did not answer within 60 s");
      await Bun.sleep(200);
    }
    await mustRun("image to the TLS engine", ["bash", "-c", `"$1" -H "tcp://$2" save "$3" | "$1" -H "unix://$4" load`, "bash", CFG.docker, ctx.e1, ctx.image, sock]);
    await mustRun("container on the TLS engine", [CFG.docker, "-H", `unix://${sock}`, "run", "-d", "--name", TLS_CONTAINER, ctx.image, "sleep", "999999999"], { env: dockerEnv(`unix://${sock}`) });
    const serve: ServeTls = {
      ca: pem("ca.pem"),
      cert: pem("cert.pem"),
      key: pem("key.pem"),
      extraEnv: {
        FLOCKER_HOST_CERT_PATH: certs,
        FLOCKER_TLS_CERT: join(certs, "server.pem"),
        FLOCKER_TLS_KEY: join(certs, "server-key.pem"),
        FLOCKER_TLS_CA: join(certs, "ca.pem"),
      },
    };
    for (const rt of CFG.runtimes) flockers.push(await startFlocker(rt, [`secure=https://127.0.0.1:${port}`], "tls", serve));
    const variants: CliVariant[] = [
      { name: "direct", dockerHost: `tcp://127.0.0.1:${port}` },
      ...flockers.map((f) => ({ name: f.label, dockerHost: f.dockerHost, flocker: f, pid: f.pid })),
    ];
    const script = `set -o pipefail; "$1" exec -i ${TLS_CONTAINER} cat < "$2" | wc -c`;
    const { ms: got, cpu } = await alternate(variants, 1, "exec -i cat (mTLS)", async (v) => {
      const r = await mustRun(`docker exec -i cat over mTLS (${v.name})`, ["bash", "-c", script, "bash", CFG.docker, ctx.execFile], {
        env: { ...dockerEnv(v.dockerHost), DOCKER_TLS_VERIFY: "1", DOCKER_CERT_PATH: certs },
      });
      const n = Number(r.stdout.trim());
      if (n !== CFG.execBytes) throw new Error(`docker exec -i cat over mTLS (${v.name}): ${n} bytes came back, want ${CFG.execBytes}`);
      return r.ms;
    });
    const bench = `\`exec -i cat\` ${fmtMB(CFG.execBytes)}, mTLS end to end (CLI, flocker and a --tlsverify engine)`;
    const d = median(got.get("direct")!);
    for (const f of flockers) {
      const m = median(got.get(f.label)!);
      const peak = statusKb(f.pid, "VmHWM") / 1024;
      ratioRow(bench, `${f.label} / direct (throughput)`, `${fmtMs(m)} (${fmtRate(CFG.execBytes, m)}); peak RSS ${peak.toFixed(1)} MB`, `direct: ${fmtMs(d)} (${fmtRate(CFG.execBytes, d)})`, d / m, undefined);
    }
    cpuRows(bench, { ...ctx, flockers }, cpu);
  } finally {
    for (const f of flockers) await stopProcess(f.proc);
    await run([CFG.docker, "-H", `unix://${sock}`, "rm", "-f", TLS_CONTAINER], { env: dockerEnv(`unix://${sock}`), timeoutMs: 30_000 }).catch(() => {});
    await stopProcess(dockerd, 15_000);
    // What a killed dockerd may have left mounted under its directories.
    await run(["sh", "-c", `grep ' ${dir}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l`]).catch(() => {});
  }
}

async function timedGet(url: string, expectItems?: number): Promise<number> {
  const start = performance.now();
  const res = await fetch(url);
  const text = await res.text();
  const ms = performance.now() - start;
  if (res.status !== 200) throw new Error(`GET ${url} -> ${res.status} ${text.slice(0, 200)}`);
  if (expectItems !== undefined) {
    const n = (JSON.parse(text) as unknown[]).length;
    if (n !== expectItems) throw new Error(`GET ${url}: ${n} containers, want ${expectItems}`);
  }
  return ms;
}

/** `docker ps -a` through DOCKER_HOST, the listed count checked; wall time of the CLI in ms. */
async function timedPs(dockerHost: string, want: number): Promise<number> {
  const r = await mustRun(`docker ps -a (${dockerHost})`, [CFG.docker, "ps", "-a"], { env: dockerEnv(dockerHost) });
  const n = r.stdout.trim().split("\n").length - 1; // a header line, then one per container
  if (n !== want) throw new Error(`docker ps -a via ${dockerHost}: ${n} containers, want ${want}`);
  return r.ms;
}

interface PsVariant {
  name: string;
  run: () => Promise<number>;
}

/** Warm up, then `samples` runs of each variant per round, rounds rotated; medians by name. */
async function psMedians(variants: PsVariant[], perRound: number, what: string) {
  for (const v of variants) for (let k = 0; k < 3; k++) await v.run(); // warm-up
  const got = new Map<string, number[]>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < CFG.rounds; r++) {
    for (const v of rotate(variants, r)) {
      for (let k = 0; k < perRound; k++) got.get(v.name)!.push(await v.run());
    }
  }
  const med = (n: string) => median(got.get(n)!);
  log(`${what}: ${variants.map((v) => `${v.name} ${fmtMs(med(v.name))}`).join(", ")}`);
  for (const v of variants) samples.push(`${what} ${v.name}: median ${fmtMs(med(v.name))}, max ${fmtMs(Math.max(...got.get(v.name)!))} of ${got.get(v.name)!.length}`);
  return { med, got };
}

async function benchPs3(ctx: Ctx) {
  const path = "/containers/json?all=1";
  const perEngine = await Promise.all(ctx.hosts.map(async (h) => (await api<unknown[]>(h, path)).body.length));
  const total = perEngine.reduce((a, b) => a + b, 0);
  const engines = ctx.hosts.map((_, i) => `engine ${i + 1}`);

  // What the issue names: the `docker ps` command, flocker over 3 engines vs each engine alone.
  const cli = await psMedians([
    ...ctx.flockers.map((f) => ({ name: f.label, run: () => timedPs(f.dockerHost, total) })),
    ...ctx.hosts.map((h, i) => ({ name: engines[i], run: () => timedPs(`tcp://${h}`, perEngine[i]) })),
  ], CFG.psCliSamples, "docker ps -a, 3 engines");
  const cliSlowest = engines.reduce((a, b) => (cli.med(a) >= cli.med(b) ? a : b));
  const cliBench = `\`docker ps -a\` over 3 engines (${total} containers; CLI wall time)`;
  for (const f of ctx.flockers) {
    ratioRow(cliBench, `${f.label} / slowest engine`, fmtMs(cli.med(f.label)), `slowest (${cliSlowest}): ${fmtMs(cli.med(cliSlowest))}; ${engines.map((e) => fmtMs(cli.med(e))).join(" / ")}`, cli.med(f.label) / cli.med(cliSlowest), { op: "<=", x: 1.2 });
  }

  // The request alone, without the CLI around it: where the proxy's own cost shows.
  const one = (url: string, want: number) => () => timedGet(url, want);
  // The floor: this process asking the 3 engines at once, no proxy. On 2 cores the engines compete
  // for CPU, so this alone is well over the slowest engine; the proxy's own cost is flocker / floor.
  const floor = async () => {
    const start = performance.now();
    await Promise.all(ctx.hosts.map((h, i) => timedGet(`http://${h}${path}`, perEngine[i])));
    return performance.now() - start;
  };
  const { med } = await psMedians([
    ...ctx.flockers.map((f) => ({ name: f.label, run: one(f.url + path, total) })),
    ...ctx.hosts.map((h, i) => ({ name: engines[i], run: one(`http://${h}${path}`, perEngine[i]) })),
    { name: "3 engines at once", run: floor },
  ], CFG.psSamples, "GET /containers/json, 3 engines");
  const slowest = engines.reduce((a, b) => (med(a) >= med(b) ? a : b));
  const bench = `\`GET /containers/json?all=1\` over 3 engines (${total} containers; the request alone)`;
  for (const f of ctx.flockers) {
    ratioRow(bench, `${f.label} / slowest engine`, fmtMs(med(f.label)), `slowest (${slowest}): ${fmtMs(med(slowest))}; ${engines.map((e) => fmtMs(med(e))).join(" / ")}`, med(f.label) / med(slowest), undefined);
  }
  for (const f of ctx.flockers) {
    ratioRow(bench, `${f.label} / 3 engines at once, no proxy`, fmtMs(med(f.label)), `the 3 engines asked at once by the benchmark itself: ${fmtMs(med("3 engines at once"))}`, med(f.label) / med("3 engines at once"), undefined);
  }
}

async function benchRun(ctx: Ctx) {
  const variants = cliVariants(ctx);
  const { ms: got } = await alternate(variants, CFG.runPerRound, "run --rm true", async (v) => {
    const r = await mustRun(`docker run --rm (${v.name})`, [CFG.docker, "run", "--rm", ctx.image, "true"], { env: dockerEnv(v.dockerHost), timeoutMs: 120_000 });
    return r.ms;
  });
  const bench = "`docker run --rm IMAGE true` latency";
  const d = median(got.get("direct")!);
  for (const f of ctx.flockers) {
    const m = median(got.get(f.label)!);
    ratioRow(bench, `${f.label} / direct`, fmtMs(m), `direct: ${fmtMs(d)}`, m / d, { op: "<=", x: 1.1 });
  }
}

/** A size from /proc/PID/status in kB: VmRSS the resident size now, VmHWM its peak since start. */
function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)\\s+kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

const rssKb = (pid: number) => statusKb(pid, "VmRSS");

/** Run `work` while sampling the process's VmRSS (kB) every 50 ms. */
async function sampleRss<T>(pid: number, work: () => Promise<T>): Promise<{ series: number[]; result: T }> {
  const series: number[] = [];
  const timer = setInterval(() => {
    const kb = rssKb(pid);
    if (Number.isFinite(kb)) series.push(kb);
  }, 50);
  try {
    return { series, result: await work() };
  } finally {
    clearInterval(timer);
  }
}

async function benchRss(ctx: Ctx) {
  const script = `set -o pipefail; "$1" exec ${CONTAINER} sh -c 'head -c ${CFG.rssBytes} /dev/zero' | wc -c`;
  const got = new Map<string, { idle: number; peak: number; late: number; ms: number }[]>(ctx.flockers.map((f) => [f.label, []]));
  const directMs: number[] = [];
  // The same stream straight from engine 1, for its throughput (no RSS to sample there).
  const variants: (Flocker | "direct")[] = ["direct", ...ctx.flockers];
  for (let r = 0; r < CFG.rounds; r++) {
    for (const f of rotate(variants, r)) {
      if (f === "direct") {
        const res = await mustRun(`docker exec head -c ${CFG.rssBytes} (direct)`, ["bash", "-c", script, "bash", CFG.docker], { env: dockerEnv(`tcp://${ctx.e1}`), timeoutMs: 600_000 });
        const n = Number(res.stdout.trim());
        if (n !== CFG.rssBytes) throw new Error(`direct: ${n} bytes came back through exec, want ${CFG.rssBytes}`);
        directMs.push(res.ms);
        log(`round ${r + 1}: stream direct           ${fmtMs(res.ms)} (${fmtRate(CFG.rssBytes, res.ms)})`);
        continue;
      }
      checkAlive(f);
      const idle = rssKb(f.pid);
      const { series, result: res } = await sampleRss(f.pid, () =>
        mustRun(`docker exec head -c ${CFG.rssBytes} (${f.label})`, ["bash", "-c", script, "bash", CFG.docker], { env: dockerEnv(f.dockerHost), timeoutMs: 600_000 })
      );
      const n = Number(res.stdout.trim());
      if (n !== CFG.rssBytes) throw new Error(`${f.label}: ${n} bytes came back through exec, want ${CFG.rssBytes}`);
      const peak = Math.max(idle, ...series);
      const half = series.length >> 1;
      const firstHalf = Math.max(idle, ...series.slice(0, half));
      const late = Math.max(0, Math.max(...series.slice(half)) - firstHalf);
      got.get(f.label)!.push({ idle, peak, late, ms: res.ms });
      log(`round ${r + 1}: RSS ${f.label.padEnd(16)} idle ${(idle / 1024).toFixed(1)} MB, peak ${(peak / 1024).toFixed(1)} MB, 2nd-half growth ${(late / 1024).toFixed(1)} MB, ${series.length} samples, ${fmtRate(CFG.rssBytes, res.ms)}`);
    }
  }
  const bench = `peak RSS while ${fmtMB(CFG.rssBytes)} streams (\`docker exec ... head -c\`)`;
  const d = median(directMs);
  samples.push(`stream ${fmtMB(CFG.rssBytes)} direct: ${directMs.map(fmtMs).join(", ")}`);
  for (const f of ctx.flockers) {
    const m = median(got.get(f.label)!.map((x) => x.ms));
    samples.push(`stream ${fmtMB(CFG.rssBytes)} ${f.label}: ${got.get(f.label)!.map((x) => fmtMs(x.ms)).join(", ")}`);
    ratioRow(`\`docker exec\` stdout stream ${fmtMB(CFG.rssBytes)} (the RSS run)`, `${f.label} / direct (throughput)`, `${fmtMs(m)} (${fmtRate(CFG.rssBytes, m)})`, `direct: ${fmtMs(d)} (${fmtRate(CFG.rssBytes, d)})`, d / m, undefined);
  }
  for (const f of ctx.flockers) {
    const xs = got.get(f.label)!;
    samples.push(`RSS ${f.label}: peaks ${xs.map((x) => (x.peak / 1024).toFixed(1)).join(", ")} MB`);
    const peak = Math.max(...xs.map((x) => x.peak)) / 1024;
    const idle = median(xs.map((x) => x.idle)) / 1024;
    const late = Math.max(...xs.map((x) => x.late)) / 1024;
    const ms = median(xs.map((x) => x.ms));
    const ok = peak < RSS_LIMIT_MB && late < RSS_FLAT_MB;
    rows.push({
      bench,
      variant: f.label,
      value: `peak ${peak.toFixed(1)} MB (idle before the stream ${idle.toFixed(1)} MB, at start-up ${(f.startRss / 1024).toFixed(1)} MB; ` +
        `2nd-half growth ${late.toFixed(1)} MB; ${fmtRate(CFG.rssBytes, ms)})`,
      baseline: "",
      ratio: "",
      target: `< ${RSS_LIMIT_MB} MB, flat (< ${RSS_FLAT_MB} MB growth)`,
      result: ok ? "PASS" : "MISS",
    });
  }
}

/**
 * RSS under a storm of app requests (`docker ps`: three engines asked, JSON merged), where the
 * garbage is the app's, not streamed bytes. Informational: the issue's memory target is for streams.
 */
async function benchRssRequests(ctx: Ctx) {
  const bench = "peak RSS under `GET /containers/json?all=1` (wrk -t2 -c10, 5 s)";
  for (const f of ctx.flockers) {
    checkAlive(f);
    const idle = rssKb(f.pid);
    const { series, result: w } = await sampleRss(f.pid, () => wrk(`${f.url}/containers/json?all=1`, "5s"));
    const peak = Math.max(idle, ...series) / 1024;
    log(`RSS under requests ${f.label}: idle ${(idle / 1024).toFixed(1)} MB, peak ${peak.toFixed(1)} MB, ${fmtInt(w.rps)} req/s`);
    rows.push({
      bench,
      variant: f.label,
      value: `peak ${peak.toFixed(1)} MB (idle before ${(idle / 1024).toFixed(1)} MB; ${fmtInt(w.rps)} req/s${w.errors.length ? "; " + w.errors.join(", ") : ""})`,
      baseline: "",
      ratio: "",
      target: "(info)",
      result: "-",
    });
  }
}

async function benchFake(ctx: Ctx) {
  const fakeLog = join(workDir, "fake-engine.log");
  const errFd = openSync(fakeLog, "w");
  const fake = spawn([BUN, "run", join(ROOT, "bench", "fake-engine.ts"), String(CFG.fakeEngines), String(CFG.fakeContainers)], { cwd: ROOT, stdout: "pipe", stderr: errFd });
  closeSync(errFd);
  const reader = (fake.stdout as ReadableStream<Uint8Array>).getReader();
  let line = "";
  const dec = new TextDecoder();
  const deadline = Date.now() + 30_000;
  while (!line.includes("\n")) {
    const chunk = await Promise.race([reader.read(), Bun.sleep(Math.max(1, deadline - Date.now())).then(() => "timeout" as const)]);
    if (chunk === "timeout" || chunk.done) throw new Error(`fake engine did not report its ports: ${readFileSync(fakeLog, "utf8").slice(-400)}`);
    line += dec.decode(chunk.value);
  }
  reader.releaseLock();
  const ports = (JSON.parse(line.split("\n")[0]) as { ports: number[] }).ports;
  log(`fake engine pid ${fake.pid}: ${ports.length} ports (${ports[0]}...)`);
  const hosts = ports.map((p) => `127.0.0.1:${p}`);
  const want = CFG.fakeEngines * CFG.fakeContainers;
  const path = "/containers/json?all=1";
  const flockers: Flocker[] = [];
  try {
    for (const rt of CFG.runtimes) flockers.push(await startFlocker(rt, hosts, "fake"));
    const one = "one fake engine";
    // The `docker ps -a` command (what the issue names), then the request alone.
    for (const level of ["cli", "api"] as const) {
      const variants = [
        ...flockers.map((f) => ({ name: f.label, run: level === "cli" ? () => timedPs(f.dockerHost, want) : () => timedGet(f.url + path, want) })),
        { name: one, run: level === "cli" ? () => timedPs(`tcp://${hosts[0]}`, CFG.fakeContainers) : () => timedGet(`http://${hosts[0]}${path}`, CFG.fakeContainers) },
      ];
      const what = level === "cli" ? `docker ps -a, ${CFG.fakeEngines} fake engines` : `GET /containers/json, ${CFG.fakeEngines} fake engines`;
      const { med, got } = await psMedians(variants, level === "cli" ? CFG.psCliSamples : CFG.psSamples, what);
      const bench = level === "cli"
        ? `\`docker ps -a\` over ${CFG.fakeEngines} simulated engines (${want} containers; CLI wall time)`
        : `\`GET /containers/json?all=1\` over ${CFG.fakeEngines} simulated engines (${want} containers; the request alone)`;
      for (const f of flockers) {
        const xs = got.get(f.label)!;
        const m = med(f.label);
        rows.push({
          bench,
          variant: f.label,
          value: `${fmtMs(m)} (max ${fmtMs(Math.max(...xs))})`,
          baseline: `one fake engine: ${fmtMs(med(one))}`,
          ratio: "",
          target: "< 1 s",
          result: m < 1000 ? "PASS" : "MISS",
        });
      }
    }
    for (const f of flockers) samples.push(`${f.label} start-up with ${CFG.fakeEngines} hosts: ${fmtMs(f.startMs)}`);
  } finally {
    for (const f of flockers) await stopProcess(f.proc);
    await stopProcess(fake);
  }
}

// ---------------------------------------------------------------------------------- report

function firstLine(s: string) {
  return s.split("\n").find((l) => l.trim())?.trim() ?? "";
}

async function environment(ctx: Ctx | undefined): Promise<string> {
  const out = async (cmd: string[]) => {
    try {
      const r = await run(cmd, { timeoutMs: 20_000 });
      return firstLine(r.stdout || r.stderr);
    } catch {
      return "?";
    }
  };
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.trim() ?? "?";
  const parts = [
    new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    `\`uname -m\` ${await out(["uname", "-m"])}`,
    `\`nproc\` ${await out(["nproc"])} (${cpu})`,
    `Bun ${await out([BUN, "--version"])}`,
    `${(await out([DENO, "--version"])).replace(/ \(.*/, "")}`.replace(/^deno/, "Deno"),
    (await out(["haproxy", "-v"])).replace(/ - https.*/, "").replace(/ version/, ""),
    (await out(["wrk", "-v"])).replace(/ \[.*|Copyright.*/g, "").trim(),
  ];
  if (ctx) {
    try {
      const v = await api<{ Version: string; ApiVersion: string }>(ctx.e1, "/version");
      parts.push(`dockerd ${v.body.Version} (API ${v.body.ApiVersion}, vfs)`);
    } catch { /* down */ }
  }
  parts.push(`docker CLI ${await out([CFG.docker, "version", "--format", "{{.Client.Version}}"])}`);
  parts.push(`ROUNDS=${CFG.rounds}`);
  return parts.join(" · ");
}

function table(): string {
  const head = ["benchmark", "flocker vs baseline", "flocker", "baseline", "ratio", "target", "result"];
  const body = rows.map((r) => [r.bench, r.variant, r.value, r.baseline, r.ratio, r.target, r.result]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(" | ")} |`;
  return [line(head), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
}

async function report(ctx: Ctx | undefined, failure?: unknown) {
  const envLine = await environment(ctx);
  const pass = rows.filter((r) => r.result === "PASS").length;
  const miss = rows.filter((r) => r.result === "MISS").length;
  const errs = rows.filter((r) => r.result === "ERROR").length;
  const md = [
    "# flocker benchmark",
    "",
    envLine,
    "",
    "`npm run bench` (bench/bench.ts): one run over the real test bed (3 dockerd on loopback, vfs), flocker in front of " +
      "all 3 engines, the container under test on engine 1; \"direct\" is engine 1's own TCP socket, HAProxy a `mode http` proxy " +
      `to it. Medians of ${CFG.rounds} rounds with the variants alternated; MB = 10^6 bytes. Throughput ratios are flocker/baseline ` +
      "(higher is better), latency ratios flocker/baseline (lower is better). A benchmark, not a test: on a shared machine the numbers " +
      "are noisy, the ratios within one run are what count.",
    "",
    table(),
    "",
    `${pass} PASS, ${miss} MISS${errs ? `, ${errs} ERROR` : ""}.`,
    ...(failure ? ["", `**The run stopped early:** ${failure instanceof Error ? failure.message : String(failure)}`] : []),
    "",
    "Notes:",
    "",
    `- HAProxy ${CFG.haproxyThreads ? `nbthread ${CFG.haproxyThreads}` : `with its default thread count (one per CPU, ${navigator.hardwareConcurrency} here)`}; ` +
      `flocker (Bun) serves with its default threads (one per two CPUs: ${defaultFrontThreads()} here), flocker (Deno) with one. wrk, the engines and the proxies share the same CPUs.`,
    "- RSS is VmRSS from /proc/PID/status sampled every 50 ms, of the flocker process that has already served every benchmark above; " +
      "\"flat\" = the peak in the second half of the stream exceeds the first half's by less than " + `${RSS_FLAT_MB} MB.`,
    ...notes.map((n) => `- ${n}`),
    "",
    "<details><summary>samples</summary>",
    "",
    ...samples.map((s) => `- ${s}`),
    "",
    "</details>",
    "",
  ].join("\n");
  console.log("\n" + md);
  mkdirSync(join(CFG.results, ".."), { recursive: true });
  writeFileSync(CFG.results, md);
  log(`wrote ${CFG.results}`);
}

// ---------------------------------------------------------------------------------- cleanup

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    aborted = true;
    for (const p of [...live]) await stopProcess(p, 3000);
    await clusterDown();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  })());
}

for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  process.on(sig, () => {
    if (cleaning) return;
    log(`caught ${sig}: stopping everything`);
    void cleanup().finally(() => process.exit(code));
  });
}

async function main(): Promise<number> {
  for (const bin of [CFG.docker, BUN, ...(CFG.runtimes.includes("deno") ? [DENO] : [])]) {
    if (!existsSync(bin)) throw new Error(`${bin} not found`);
  }
  for (const bin of ["wrk", "haproxy", "bash"]) {
    if (!Bun.which(bin)) throw new Error(`${bin} not found on PATH (install it: apt-get install ${bin})`);
  }
  let ctx: Ctx | undefined;
  let failure: unknown;
  try {
    const vars = await clusterUp();
    workDir = mkdtempSync(join(dirname(CFG.clusterDir), "fkbench-w-"));
    mkdirSync(join(workDir, "dcfg"), { mode: 0o700 });
    writeFileSync(join(workDir, "dcfg", "config.json"), "{}");
    const hosts = vars.FLOCKER_TEST_HOSTS.split(",");
    const image = vars.FLOCKER_TEST_IMAGE;
    const e1 = hosts[0];

    log(`payloads: ${fmtMB(CFG.cpBytes)} for cp, ${fmtMB(CFG.execBytes)} for exec`);
    const cpFile = join(workDir, "cp.bin");
    const execFile = join(workDir, "exec.bin");
    await mustRun("make payloads", ["bash", "-c", `head -c ${CFG.cpBytes} /dev/urandom > "$1" && head -c ${CFG.execBytes} /dev/urandom > "$2"`, "bash", cpFile, execFile]);

    log(`container ${CONTAINER} on engine 1, ${CFG.psContainers} stopped containers on each engine`);
    const containerId = await createContainer(e1, CONTAINER, ["sleep", "999999999"], image, true);
    await mustRun("docker cp (setup)", [CFG.docker, "cp", cpFile, `${CONTAINER}:/tmp/big`], { env: dockerEnv(`tcp://${e1}`) });
    await Promise.all(hosts.map(async (h, i) => {
      for (let k = 0; k < CFG.psContainers; k++) await createContainer(h, `fkb-ps-${i + 1}-${k}`, ["true"], image, false);
    }));

    ctx = { hosts, image, e1, containerId, flockers: [], cpFile, execFile };
    for (const rt of CFG.runtimes) ctx.flockers.push(await startFlocker(rt, hosts, "3"));
    ctx.haproxy = await startHaproxy(e1);

    const c = ctx;
    const part = (key: string, title: string, body: () => Promise<void>) => (CFG.only && !CFG.only.has(key) ? undefined : section(title, body));
    await part("routed", "routed GET /containers/{id}/json", () => benchRouted(c));
    await part("cp", "docker cp", () => benchCp(c));
    await stopProcess(c.haproxy!.proc);
    await part("exec", "exec -i cat", () => benchExec(c));
    await part("ps", "ps over 3 engines", () => benchPs3(c));
    await part("run", "docker run --rm", () => benchRun(c));
    await part("rss", "RSS", () => benchRss(c));
    await part("rss-requests", "RSS under app requests", () => benchRssRequests(c));
    await part("tls", "exec -i cat over mTLS", () => benchTls(c));
    for (const f of c.flockers) await stopProcess(f.proc);
    await part("fake", `ps over ${CFG.fakeEngines} simulated engines`, () => benchFake(c));
  } catch (err) {
    if (aborted) throw err;
    failure = err;
    log(`ERROR: ${err instanceof Error ? err.stack ?? err.message : err}`);
  }
  if (rows.length || ctx) await report(ctx, failure);
  return failure ? 1 : rows.some((r) => r.result === "ERROR") ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  if (!(err instanceof Aborted)) console.error(`bench: ${err instanceof Error ? err.message : err}`);
} finally {
  await cleanup();
}
process.exit(code);
