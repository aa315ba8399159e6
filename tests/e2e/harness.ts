/**
 * End-to-end harness: start flocker under Bun or Deno over the real test bed (scripts/cluster.sh,
 * started by `npm test`), and drive the real docker CLIs through it.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const HOW = "run the tests through `npm test` (scripts/test.sh), or `source $FLOCKER_TEST_DIR/env` after `scripts/cluster.sh up`";

export function requireEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set: ${HOW}`);
  return v;
}

export const ROOT = join(import.meta.dir, "..", "..");
export const testEnv = {
  get hosts() {
    return requireEnv("FLOCKER_TEST_HOSTS").split(",");
  },
  get sockets() {
    return requireEnv("FLOCKER_TEST_SOCKETS").split(",");
  },
  get image() {
    return requireEnv("FLOCKER_TEST_IMAGE");
  },
  get privateImage() {
    return requireEnv("FLOCKER_TEST_PRIVATE_IMAGE");
  },
  get registry() {
    return requireEnv("FLOCKER_TEST_REGISTRY");
  },
  get registryUser() {
    return requireEnv("FLOCKER_TEST_REGISTRY_USER");
  },
  get registryPass() {
    return requireEnv("FLOCKER_TEST_REGISTRY_PASS");
  },
  get redis() {
    return requireEnv("FLOCKER_TEST_REDIS");
  },
};

export type Runtime = "bun" | "deno";
export const RUNTIMES: Runtime[] = ["bun", "deno"];

/** The docker CLIs on this machine: the 20.10 client always, the 28.x one where installed. */
export const CLIS: { name: string; path: string }[] = [
  { name: "docker-20.10", path: "/usr/bin/docker" },
  { name: "docker-28", path: "/usr/local/bin/docker" },
].filter((c) => existsSync(c.path));
if (!CLIS.length) throw new Error("no docker CLI found at /usr/bin/docker: install docker.io");

import { freePort } from "../ports.ts";
export { freePort };

export interface RunningFlocker {
  runtime: Runtime;
  port: number;
  /** For DOCKER_HOST: tcp://127.0.0.1:PORT (or unix://PATH) */
  dockerHost: string;
  url: string;
  output: () => string;
  stop: () => Promise<void>;
  kill: (signal?: NodeJS.Signals) => void;
  pid: number;
}

export async function startFlocker(runtime: Runtime, env: Record<string, string> = {}, args: string[] = []): Promise<RunningFlocker> {
  // FLOCKER_LISTEN=unix:///path listens there (port 0); otherwise a TCP port on loopback.
  const unixPath = env.FLOCKER_LISTEN?.startsWith("unix://") ? env.FLOCKER_LISTEN.slice(7) : undefined;
  const port = unixPath ? 0 : env.FLOCKER_LISTEN ? Number(env.FLOCKER_LISTEN.split(":").pop()) : await freePort();
  const cmd = runtime === "bun"
    ? [join(ROOT, "node_modules/.bin/bun"), "run", "main.ts", ...args]
    : [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "main.ts", ...args];
  const proc = Bun.spawn(cmd, {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      FLOCKER_HOSTS: testEnv.hosts.join(","),
      FLOCKER_LISTEN: `127.0.0.1:${port}`,
      FLOCKER_PROBE_INTERVAL: "1000",
      ...env,
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  const collect = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) out += dec.decode(chunk);
  };
  void collect(proc.stdout);
  void collect(proc.stderr);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`flocker (${runtime}) exited with ${proc.exitCode}:\n${out}`);
    try {
      const res = await fetch(unixPath ? "http://localhost/_ping" : `${url}/_ping`, unixPath ? { unix: unixPath } : {});
      if (res.status === 200) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) {
      proc.kill();
      throw new Error(`flocker (${runtime}) did not answer /_ping within 30 s:\n${out}`);
    }
    await Bun.sleep(100);
  }
  return {
    runtime,
    port,
    url,
    dockerHost: unixPath ? `unix://${unixPath}` : `tcp://127.0.0.1:${port}`,
    output: () => out,
    pid: proc.pid,
    kill: (signal = "SIGKILL") => proc.kill(signal),
    stop: async () => {
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await proc.exited;
      clearTimeout(timer);
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface DockerOptions {
  input?: string | Uint8Array;
  timeoutMs?: number;
  /** DOCKER_CONFIG dir (credentials); default: an empty one per process. */
  config?: string;
  env?: Record<string, string>;
}

let defaultConfig: string | undefined;
export function tempDir(prefix = "flk-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
export function removeDir(dir: string) {
  rmSync(dir, { recursive: true, force: true });
}

/** Run a docker CLI against `dockerHost` (tcp://...). */
export async function docker(cli: string, dockerHost: string, args: string[], options: DockerOptions = {}): Promise<CliResult> {
  if (!defaultConfig) {
    // Inside the test bed's directory, which `cluster.sh down` removes (bun test does not always
    // run exit handlers, so a temp dir of its own would be left behind).
    const bed = process.env.FLOCKER_TEST_DIR;
    defaultConfig = bed ? mkdtempSync(join(bed, "dcfg-")) : tempDir("flk-dcfg-");
    const dir = defaultConfig;
    process.on("exit", () => removeDir(dir));
  }
  const proc = Bun.spawn([cli, ...args], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/root",
      DOCKER_HOST: dockerHost,
      DOCKER_CONFIG: options.config ?? defaultConfig,
      DOCKER_CLI_HINTS: "false",
      ...options.env,
    },
    stdin: options.input !== undefined ? new Blob([options.input]) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), options.timeoutMs ?? 60_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Ask one engine directly (not through flocker). */
export async function engine<T = unknown>(host: string, path: string, init?: RequestInit): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://${host}${path}`, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch { /* text */ }
  return { status: res.status, body: body as T };
}

/** Which engine holds a container (by id or name), asked of the engines themselves. */
export async function hostOf(ref: string): Promise<string | undefined> {
  for (const h of testEnv.hosts) {
    if ((await engine(h, `/containers/${ref}/json`)).status === 200) return h;
  }
  return undefined;
}

/** Remove every container on every engine whose name starts with `prefix` (test cleanup). */
export async function removeContainers(prefix: string) {
  for (const h of testEnv.hosts) {
    const { body } = await engine<{ Id: string; Names: string[] }[]>(h, "/containers/json?all=1");
    for (const c of body) {
      if (c.Names.some((n) => n.replace(/^\//, "").startsWith(prefix))) {
        await engine(h, `/containers/${c.Id}?force=1`, { method: "DELETE" });
      }
    }
  }
}

export const uniq = (base: string) => `${base}-${Math.random().toString(36).slice(2, 8)}`;

/** Wait until something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connectTcp(port, "127.0.0.1", () => (s.end(), resolve(true)));
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await Bun.sleep(100);
  }
}
