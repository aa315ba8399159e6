/**
 * Issue 6: host loss, store loss, restarts, bad input, TLS and access policy, with real engines,
 * a real redis-server and certificates made by openssl here.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { connect, createServer, type Server, type Socket } from "node:net";
import { connect as connectTls } from "node:tls";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  CLIS, docker, freePort, hostOf, removeContainers, removeDir, ROOT, RUNTIMES, type Runtime, type RunningFlocker, startFlocker, tempDir,
  testEnv, uniq, waitForPort,
} from "./harness.ts";

const cli = CLIS[CLIS.length - 1].path;
const testDir = () => process.env.FLOCKER_TEST_DIR!;

/** Send raw bytes on a connection of their own; what comes back until it closes (or 3 s). */
function rawExchange(port: number, payload: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1", () => s.write(payload));
    let out = "";
    s.on("data", (d) => (out += d));
    s.on("close", () => resolve(out));
    s.on("error", () => resolve(out));
    setTimeout(() => (s.destroy(), resolve(out)), 3000);
  });
}

/** Client connections open in a flocker (its metrics; the asking one included), over all front threads. */
async function openConnections(g: RunningFlocker): Promise<number> {
  const text = await rawExchange(g.port, "GET /_flocker/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const threads = [...text.matchAll(/^flocker_front_connections_open\{thread="\d+"\} (-?\d+)$/gm)];
  return threads.length ? threads.reduce((sum, m) => sum + Number(m[1]), 0) : NaN;
}

/** A sleeping container on the first engine, and in front of the flock a one-thread flocker of each runtime in turn. */
async function eachRuntimeBesideASleeper(label: string, body: (g: RunningFlocker, runtime: Runtime, name: string) => Promise<void>) {
  const name = uniq(label);
  try {
    const run = await docker(cli, `tcp://${testEnv.hosts[0]}`, ["run", "-d", "--name", name, testEnv.image, "sleep", "300"]);
    expect(run.code, run.stderr).toBe(0);
    for (const runtime of RUNTIMES) {
      const g = await startFlocker(runtime, { FLOCKER_THREADS: "1" });
      try {
        await body(g, runtime, name);
      } finally {
        await g.stop();
      }
    }
  } finally {
    await docker(cli, `tcp://${testEnv.hosts[0]}`, ["rm", "-f", name]);
  }
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const value = await fn();
  return [value, performance.now() - t];
}

describe("host loss", () => {
  let hang: Server;
  const hung: Socket[] = [];
  let f: RunningFlocker;
  let hangPort: number;
  let refusedPort: number;
  const prefix = uniq("loss");

  beforeAll(async () => {
    hangPort = await freePort();
    refusedPort = await freePort();
    // Accepts TCP and never answers.
    hang = createServer((s) => void hung.push(s));
    await new Promise<void>((r) => hang.listen(hangPort, "127.0.0.1", r));
    f = await startFlocker("bun", {
      FLOCKER_HOSTS: [...testEnv.hosts, `hang=127.0.0.1:${hangPort}`, `refused=127.0.0.1:${refusedPort}`].join(","),
    });
  });
  afterAll(async () => {
    await f.stop();
    for (const s of hung) s.destroy();
    hang.close();
    await removeContainers(prefix);
    // The engine this suite kills must be back for the tests after it.
    spawnSync("bash", ["scripts/cluster.sh", "start-engine", "3"], { cwd: ROOT, env: { ...process.env, CLUSTER_DIR: testDir() } });
  });

  test("ps and info answer within 3 s with a hanging and a refusing host; info shows their state", async () => {
    const [ps, ms] = await timed(() => docker(cli, f.dockerHost, ["ps", "-a"]));
    expect(ps.code, ps.stderr).toBe(0);
    expect(ms).toBeLessThan(3000);
    const [info, ims] = await timed(() => docker(cli, f.dockerHost, ["info", "--format", "{{json .Labels}}"]));
    expect(ims).toBeLessThan(3000);
    expect(info.stdout).toContain("flocker.host.hang=");
    expect(info.stdout).toMatch(/flocker\.host\.hang=\S+ state=unhealthy/);
    expect(info.stdout).toMatch(/flocker\.host\.refused=\S+ state=unhealthy/);
    // New containers never go to them.
    for (let i = 0; i < 4; i++) {
      const r = await docker(cli, f.dockerHost, ["run", "-d", "--name", `${prefix}-${i}`, testEnv.image, "sleep", "300"]);
      expect(r.code, r.stderr).toBe(0);
      expect(testEnv.hosts).toContain((await hostOf(`${prefix}-${i}`))!);
    }
  });

  test("a killed dockerd: fan-outs go on, its containers get a clear 503 naming it, it comes back", async () => {
    const victim = `${prefix}-victim`;
    const r = await docker(cli, f.dockerHost, ["run", "-d", "--name", victim, "-e", `constraint:node==${testEnv.hosts[2]}`, testEnv.image, "sleep", "300"]);
    expect(r.code, r.stderr).toBe(0);
    const pid = Number(readFileSync(join(testDir(), "e3", "pid"), "utf8"));
    process.kill(pid, "SIGKILL");
    await Bun.sleep(2500); // a probe or two
    const [ps, ms] = await timed(() => docker(cli, f.dockerHost, ["ps"]));
    expect(ps.code, ps.stderr).toBe(0);
    expect(ms).toBeLessThan(3000);
    const logs = await docker(cli, f.dockerHost, ["logs", victim]);
    expect(logs.code).not.toBe(0);
    expect(logs.stderr).toContain(testEnv.hosts[2]);
    expect(logs.stderr).toMatch(/unhealthy|unreachable/);
    // Back: the engine restarts, flocker notices (recovering, then healthy) and routes again.
    const up = spawnSync("bash", ["scripts/cluster.sh", "start-engine", "3"], { cwd: ROOT, env: { ...process.env, CLUSTER_DIR: testDir() } });
    expect(up.status, String(up.stderr)).toBe(0);
    const deadline = Date.now() + 40_000;
    let inspect;
    do {
      await Bun.sleep(500);
      inspect = await docker(cli, f.dockerHost, ["inspect", "-f", "{{.Name}}", victim]);
    } while (inspect.code !== 0 && Date.now() < deadline);
    expect(inspect.stdout.trim()).toBe(`/${victim}`);
  });
});

describe("store loss (real redis-server)", () => {
  let redis: ReturnType<typeof Bun.spawn>;
  let redisPort: number;
  let f: RunningFlocker;
  const prefix = uniq("storeloss");
  const startRedis = async () => {
    redis = Bun.spawn(["redis-server", "--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdout: "ignore", stderr: "ignore" });
    await waitForPort(redisPort, 5000);
  };
  beforeAll(async () => {
    redisPort = await freePort();
    await startRedis();
    f = await startFlocker("bun", { FLOCKER_REDIS: `redis://127.0.0.1:${redisPort}` });
  });
  afterAll(async () => {
    await f.stop();
    redis.kill();
    await removeContainers(prefix);
  });

  test("with Redis down: 503 naming the store for creates, reads keep working; it recovers by itself", async () => {
    const before = `${prefix}-before`;
    expect((await docker(cli, f.dockerHost, ["run", "-d", "--name", before, testEnv.image, "sleep", "300"])).code).toBe(0);
    redis.kill("SIGKILL");
    await redis.exited;
    await Bun.sleep(300);
    const ps = await docker(cli, f.dockerHost, ["ps"]);
    expect(ps.code, ps.stderr).toBe(0);
    const inspect = await docker(cli, f.dockerHost, ["inspect", "-f", "{{.Name}}", before]);
    expect(inspect.stdout.trim()).toBe(`/${before}`);
    const create = await docker(cli, f.dockerHost, ["create", "--name", `${prefix}-during`, testEnv.image]);
    expect(create.code).not.toBe(0);
    expect(create.stderr).toContain("store unreachable");
    await startRedis();
    const deadline = Date.now() + 15_000;
    let after;
    do {
      await Bun.sleep(300);
      after = await docker(cli, f.dockerHost, ["run", "-d", "--name", `${prefix}-after`, testEnv.image, "sleep", "300"]);
    } while (after.code !== 0 && Date.now() < deadline);
    expect(after.code, after.stderr).toBe(0);
    expect((await docker(cli, f.dockerHost, ["exec", before, "true"])).code).toBe(0);
  });
});

describe("restarts", () => {
  const prefix = uniq("restart");
  afterAll(() => removeContainers(prefix));

  test("kill -9 flocker during exec -i; after restart every container is reachable by id and name", async () => {
    const f1 = await startFlocker("bun");
    const names = [0, 1, 2, 3].map((i) => `${prefix}-${i}`);
    for (const n of names) expect((await docker(cli, f1.dockerHost, ["run", "-d", "--name", n, testEnv.image, "sleep", "300"])).code).toBe(0);
    const exec = Bun.spawn([cli, "exec", "-i", names[0], "cat"], { env: { DOCKER_HOST: f1.dockerHost, PATH: process.env.PATH! }, stdin: "pipe", stdout: "pipe" });
    exec.stdin.write("partial");
    await Bun.sleep(500);
    f1.kill("SIGKILL");
    await exec.exited;
    const f2 = await startFlocker("deno", { FLOCKER_LISTEN: `127.0.0.1:${f1.port}` });
    try {
      for (const n of names) {
        const id = (await docker(cli, f2.dockerHost, ["inspect", "-f", "{{.Id}}", n])).stdout.trim();
        expect(id).toMatch(/^[0-9a-f]{64}$/);
        expect((await docker(cli, f2.dockerHost, ["exec", id.slice(0, 10), "true"])).code).toBe(0);
      }
      // The name is still taken flock-wide after the restart.
      const again = await docker(cli, f2.dockerHost, ["create", "--name", names[1], testEnv.image]);
      expect(again.stderr).toContain("Conflict");
    } finally {
      await f2.stop();
    }
  });
});

test.each(RUNTIMES)("%s: behind HAProxy with its default health check (OPTIONS / HTTP/1.0, no Host) and with GET /_ping: marked up, docker ps and run -i through it", async (runtime) => {
  const f = await startFlocker(runtime);
  const dir = tempDir("flk-lb-");
  const ports = [await freePort(), await freePort()];
  const cfg = join(dir, "haproxy.cfg");
  const listen = (name: string, port: number, check: string) =>
    `listen ${name}\n  bind 127.0.0.1:${port}\n  ${check}\n  server flocker 127.0.0.1:${f.port} check inter 100 fall 1 rise 1\n`;
  writeFileSync(cfg, "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n" +
    listen("default_check", ports[0], "option httpchk") + listen("ping_check", ports[1], "option httpchk GET /_ping"));
  const haproxy = Bun.spawn(["haproxy", "-db", "-f", cfg], { stdout: "pipe", stderr: "pipe" });
  try {
    await waitForPort(ports[1]);
    await Bun.sleep(1000); // ten checks: a server whose check fails is down after the first
    for (const port of ports) {
      const ps = await docker(cli, `tcp://127.0.0.1:${port}`, ["ps"], { timeoutMs: 20_000 });
      expect(ps.code, `${port}: ${ps.stderr}`).toBe(0);
      const cat = await docker(cli, `tcp://127.0.0.1:${port}`, ["run", "--rm", "-i", testEnv.image, "cat"], { input: "through-the-balancer\n" });
      expect(cat.stdout, cat.stderr).toBe("through-the-balancer\n");
    }
  } finally {
    haproxy.kill();
    await haproxy.exited;
    await f.stop();
    removeDir(dir);
  }
});

describe("bad input", () => {
  let f: RunningFlocker;
  beforeAll(async () => {
    f = await startFlocker("bun");
  });
  afterAll(() => f.stop());

  const expectDockerError = async (res: Response, status?: number) => {
    if (status) expect(res.status).toBe(status);
    else expect(res.status).toBeGreaterThanOrEqual(400);
    const body = (await res.json()) as { message?: string };
    expect(typeof body.message).toBe("string");
  };

  test("malformed, wrong-typed, oversized bodies; bad ids and versions: docker-style errors", async () => {
    const post = (path: string, body: string) => fetch(`${f.url}${path}`, { method: "POST", body, headers: { "content-type": "application/json" } });
    await expectDockerError(await post("/v1.41/containers/create", "{not json"), 400);
    await expectDockerError(await post("/v1.41/containers/create", '{"Image": 42, "Env": "x"}'), 400);
    await expectDockerError(await post("/v1.41/containers/create", "[1,2,3]"), 400);
    // Fields flocker reads to place and check a container, of the wrong type: a 400 naming them.
    for (const [body, field] of [
      [{ HostConfig: { Binds: "/tmp:/tmp" } }, "HostConfig.Binds"],
      [{ HostConfig: { Binds: [5] } }, "HostConfig.Binds.0"],
      [{ HostConfig: { NetworkMode: 5 } }, "HostConfig.NetworkMode"],
      [{ HostConfig: { Mounts: [{ Type: "bind", Source: 5 }] } }, "HostConfig.Mounts.0.Source"],
      [{ NetworkingConfig: { EndpointsConfig: "x" } }, "NetworkingConfig.EndpointsConfig"],
      [{ Env: ["constraint:node==/[/"] }, "invalid regular expression in constraint:node==/[/"],
    ] as const) {
      const res = await post("/v1.41/containers/create", JSON.stringify({ Image: testEnv.image, ...body }));
      expect({ field, status: res.status }).toEqual({ field, status: 400 });
      expect(((await res.json()) as { message: string }).message).toContain(field);
    }
    await expectDockerError(await post("/v1.41/containers/create", JSON.stringify({ Image: testEnv.image, Env: ["x".repeat(6 * 1024 * 1024)] })), 413);
    await expectDockerError(await fetch(`${f.url}/v1.41/containers/..%2F..%2Finfo/json`), 404);
    await expectDockerError(await fetch(`${f.url}/v1.41/containers/a%00b/json`), 400);
    await expectDockerError(await fetch(`${f.url}/v1.41/containers/%E0%A4%A/json`), 400);
    await expectDockerError(await fetch(`${f.url}/v9.99/info`), 400);
    await expectDockerError(await fetch(`${f.url}/vxyz/info`), 404); // not a version: a path, as docker routes it
    // Too old for the engines: they refuse the fan-outs too (flocker asks in the client's version).
    for (const path of ["/v1.11/containers/json", "/v1.11/info", "/v1.11/images/json"]) {
      const old = await fetch(`${f.url}${path}`);
      expect(old.status).toBe(400);
      expect(((await old.json()) as { message: string }).message).toContain("client version 1.11 is too old");
    }
    // A malformed filter is refused as the engine refuses it, not answered with an empty merge.
    const bad = encodeURIComponent("{bad");
    for (const [method, path, status] of [["GET", "/images/json", 500], ["GET", "/volumes", 400], ["GET", "/networks", 500], ["POST", "/containers/prune", 400], ["POST", "/images/prune", 500], ["POST", "/volumes/prune", 500]] as const) {
      const res = await fetch(`${f.url}/v1.41${path}?filters=${bad}`, { method });
      expect({ path, status: res.status }).toEqual({ path, status });
      expect(((await res.json()) as { message: string }).message).toContain("invalid character");
    }
    // Paths without a version that start with "v" are paths (this one was once taken for a bad version).
    const volume = `flk-rel-unversioned-${Date.now()}`;
    const created = await post("/volumes/create", JSON.stringify({ Name: volume }));
    expect(created.status).toBe(201);
    expect((await fetch(`${f.url}/volumes/${volume}`, { method: "DELETE" })).status).toBe(204);
    await expectDockerError(await fetch(`${f.url}/v1.41/nonsense/path`), 404);
    await expectDockerError(await fetch(`${f.url}/v1.41/containers/json`, { method: "PATCH" }));
  });

  test("a Host header cannot reshape the path that is routed and checked", async () => {
    const answer = await new Promise<string>((resolve) => {
      const s = connect(f.port, "127.0.0.1", () => s.write("GET /v1.41/_flocker/nothing HTTP/1.1\r\nHost: x/v1.41/version?\r\nConnection: keep-alive\r\n\r\n"));
      let out = "";
      s.on("data", (d) => {
        out += d;
        if (out.includes("\r\n\r\n")) setTimeout(() => (s.destroy(), resolve(out)), 100);
      });
      s.on("error", () => resolve(out));
      setTimeout(() => (s.destroy(), resolve(out)), 3000);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 404/);
    expect(answer).not.toContain("ApiVersion");
  });

  test("request smuggling and garbage on the wire get a 400 and close", async () => {
    const raw = (payload: string) => rawExchange(f.port, payload);
    const smuggle = await raw("POST /containers/create HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /info HTTP/1.1\r\n\r\n");
    expect(smuggle).toMatch(/^HTTP\/1\.1 400/);
    const garbage = await raw("\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n");
    expect(garbage).toMatch(/^HTTP\/1\.1 400/);
    const gzip = await raw("POST /containers/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    expect(gzip).toMatch(/^HTTP\/1\.1 501 .*unsupported transfer encoding/s);
  });

  test("a CLI speaking TLS to the plain port gets an answer at once, as from dockerd, not a hang", async () => {
    const dir = tempDir("flk-tlsplain-");
    try {
      const r = spawnSync("sh", ["-c", "openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out ca.pem -days 1 -subj /CN=x 2>/dev/null"], { cwd: dir });
      expect(r.status).toBe(0);
      for (const runtime of RUNTIMES) {
        const g = runtime === "bun" ? f : await startFlocker(runtime);
        try {
          for (const { path } of CLIS) {
            const ps = await docker(path, g.dockerHost, ["--tls", "--tlscacert", join(dir, "ca.pem"), "ps"], { timeoutMs: 15_000 });
            expect(ps.code, `${runtime} ${path}`).not.toBe(0);
            expect(ps.stderr, `${runtime} ${path}`).toContain("server gave HTTP response to HTTPS client");
          }
        } finally {
          if (g !== f) await g.stop();
        }
      }
    } finally {
      removeDir(dir);
    }
  });

  test("a head with a bare LF or CR (or ended by them) gets a 400 at once (an engine reads a Content-Length behind a bare LF and waits for a body)", async () => {
    const name = uniq("barelf");
    const run = await docker(cli, `tcp://${testEnv.hosts[0]}`, ["run", "-d", "--name", name, testEnv.image, "sleep", "300"]);
    expect(run.code, run.stderr).toBe(0);
    const id = run.stdout.trim();
    try {
      for (const runtime of RUNTIMES) {
        const g = runtime === "bun" ? f : await startFlocker(runtime);
        try {
          const answer = (payload: string) => rawExchange(g.port, payload);
          const path = `/v1.41/containers/${id}/json`;
          for (const crlf of ["\n", "\r"]) {
            const out = await answer(`GET ${path} HTTP/1.1\r\nHost: x${crlf}Content-Length: 3\r\n\r\nabc`);
            expect(out, `${runtime} ${JSON.stringify(crlf)}`).toMatch(/^HTTP\/1\.1 400 /);
          }
          // Ended by bare line feeds (`printf 'GET ... \n\n' | nc`): no CRLF CRLF will ever come.
          expect(await answer(`GET ${path} HTTP/1.1\nHost: x\n\n`), runtime).toMatch(/^HTTP\/1\.1 400 .*"message"/s);
          // The same request with proper line breaks is routed as usual.
          const fine = await answer(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
          expect(fine, runtime).toMatch(/^HTTP\/1\.1 200 /);
        } finally {
          if (g !== f) await g.stop();
        }
      }
    } finally {
      await removeContainers(name);
    }
  });

  test("answered before its body came (refused): the body is read and dropped, the answer arrives, the connection goes on", async () => {
    for (const runtime of RUNTIMES) {
      const ro = await startFlocker(runtime, { FLOCKER_READ_ONLY: "1" });
      // The `/_ping` answer, with a length or chunked.
      const PING_ANSWERED = /HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n(?:OK|2\r\nOK\r\n0\r\n\r\n)$/;
      try {
        const body = '{"Image":"x"}' + " ".repeat(5000);
        const out = await new Promise<string>((resolve) => {
          let text = "";
          let bodySent = false;
          const s = connect(ro.port, "127.0.0.1", () =>
            s.write(`POST /v1.41/containers/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`));
          s.on("data", (d) => {
            text += d;
            if (text.includes("read-only") && !bodySent) {
              // The refusal came first (as the docker CLI may see it): now the body, then another request.
              bodySent = true;
              s.write(body);
              s.write("GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n");
            }
            if (PING_ANSWERED.test(text)) s.end();
          });
          s.on("error", (err) => resolve(`${text}\n[${err.message}]`));
          s.on("close", () => resolve(text));
          setTimeout(() => s.destroy(), 5000);
        });
        expect(out, runtime).toMatch(/^HTTP\/1\.1 403 /);
        expect(out, runtime).toContain("read-only mode: POST /containers/create is refused");
        expect(out, runtime).toMatch(PING_ANSWERED);
      } finally {
        await ro.stop();
      }
    }
  });

  test("fuzz: thousands of junk requests, then a normal docker run", async () => {
    const methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    const pieces = ["containers", "exec", "images", "x", "%2F", "..", "%2e%2e", "%00", "v1.41", "v0.1", "json", "start", "attach", "", "a".repeat(300), "%", "😀", "'", "*"];
    const bodies = ["", "{", "null", "[]", '{"Image":null}', '{"Image":{}}', "\u0000", "x".repeat(5000), '{"HostConfig":"no"}'];
    const pick = <T>(a: T[]) => a[Math.floor(Math.random() * a.length)];
    let served = 0;
    for (let batch = 0; batch < 40; batch++) {
      await Promise.all(Array.from({ length: 50 }, async () => {
        const path = "/" + Array.from({ length: 1 + Math.floor(Math.random() * 4) }, () => pick(pieces)).join("/");
        // Nothing that could create or remove: junk only reaches `create` with junk bodies.
        const method = pick(methods);
        const body = method === "GET" || method === "HEAD" ? undefined : pick(bodies);
        const res = await fetch(`${f.url}${path}`, { method, body, signal: AbortSignal.timeout(5000) }).catch((e) => e as Error);
        if (res instanceof Error) throw new Error(`${method} ${path}: ${res.message}`);
        if (res.status >= 400 && method !== "HEAD") {
          const text = await res.text();
          let json = true;
          try {
            JSON.parse(text);
          } catch {
            json = false;
          }
          // Not JSON: only where an engine answers so itself (`POST /containers/x/y/attach` reaches
          // one: no host holds "x", and its attach route takes "x/y"; it answers in plain text).
          if (!json) {
            const direct = await fetch(`http://${testEnv.hosts[0]}${path}`, { method, body, signal: AbortSignal.timeout(5000) });
            expect({ path, status: res.status, text }).toEqual({ path, status: direct.status, text: await direct.text() });
          }
        } else await res.body?.cancel();
        served++;
      }));
    }
    expect(served).toBe(2000);
    const run = await docker(cli, f.dockerHost, ["run", "--rm", testEnv.image, "echo", "still-fine"]);
    expect(run.stdout.trim()).toBe("still-fine");
    // Nothing kept open: 2000 requests, many with bodies on kept-alive connections, many refused
    // outright, once left ~1000 sockets open for good (and a long-lived flocker hit EMFILE).
    await Bun.sleep(500);
    expect(readdirSync(`/proc/${f.pid}/fd`).length).toBeLessThan(300);
  });

  test("requests with bodies on one kept-alive connection, and refused hijacks, leave no socket open (both runtimes)", async () => {
    for (const runtime of RUNTIMES) {
      const g = await startFlocker(runtime);
      try {
        const fds = () => readdirSync(`/proc/${g.pid}/fd`).length;
        let before = 0;
        for (let i = 0; i < 200; i++) {
          // After a warm-up that fills the idle pools (to the app behind the front, to engines).
          if (i === 50) {
            await Bun.sleep(300);
            before = fds();
          }
          const res = await fetch(`${g.url}/v1.41/nonsense`, { method: "POST", body: "{}", headers: { "content-type": "application/json" } });
          expect(res.status).toBe(404);
          await res.text();
          const hijack = await fetch(`${g.url}/v1.41/containers/${uniq("none")}/attach?stream=1`, { method: "POST" });
          expect(hijack.status).toBe(404);
          await hijack.text();
        }
        await Bun.sleep(500);
        // 150 more of each: a leak would be 150 to 300 descriptors. Nor do idle connections pile
        // up: a request with a body takes a kept connection that answered within the last second
        // (when each one dialled afresh, the pools behind the front grew by ~28 here).
        const growth = fds() - before;
        expect({ runtime, growth, bounded: growth < 10 }).toEqual({ runtime, growth, bounded: true });
      } finally {
        await g.stop();
      }
    }
  });

  test("a CLI killed in the middle of `wait`, `logs -f` or `events` leaves no connection behind (both runtimes)", async () => {
    // dockerd cancels a request whose client stops sending; flocker held these until the
    // container exited (each killed `docker run` kept its wait and two sockets open meanwhile).
    const closeWait = (port: number) =>
      spawnSync("ss", ["-Htn", "state", "close-wait", `sport = :${port}`], { encoding: "utf8" }).stdout.trim().split("\n").filter(Boolean).length;
    await eachRuntimeBesideASleeper("killed", async (g, runtime, name) => {
      const env = { PATH: process.env.PATH!, HOME: process.env.HOME ?? "/root", DOCKER_HOST: g.dockerHost };
      const commands = [["wait", name], ["logs", "-f", "--tail", "0", name], ["events", "--filter", `container=${name}`]];
      const before = await openConnections(g); // this one, and the harness's kept-alive one
      const procs = commands.map((args) => Bun.spawn([cli, ...args], { env, stdout: "ignore", stderr: "ignore" }));
      const deadline = Date.now() + 10_000;
      while ((await openConnections(g)) < before + commands.length && Date.now() < deadline) await Bun.sleep(100);
      expect(await openConnections(g)).toBe(before + commands.length);
      await Bun.sleep(300); // each has its request in flight
      for (const p of procs) p.kill("SIGKILL");
      await Promise.all(procs.map((p) => p.exited));
      await Bun.sleep(500);
      const open = await openConnections(g); // at most `before`: the harness's one may have gone idle and closed
      expect({ runtime, open, leftOpen: open > before, closeWait: closeWait(g.port) }).toEqual({ runtime, open, leftOpen: false, closeWait: 0 });
      // The engine ended each one itself (its answer had begun): nothing is blamed on it.
      const metrics = await rawExchange(g.port, "GET /_flocker/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      expect(metrics).toContain('flocker_requests_total{method="POST",route="/containers/:id/wait",status="200"} 1');
      expect(metrics).not.toMatch(/status="5\d\d"/);
    });
  });

  test("connections that leave the front (exec streams, refused hijacks, requests for the full server) are let go once closed (both runtimes)", async () => {
    // The front used to drop every "close" listener of a connection it handed on, the server's
    // own with it: each `docker exec` left its connection (and two sockets' objects) in the
    // server's set for good: ~30 KB a command (a heap snapshot found them), not one fd.
    await eachRuntimeBesideASleeper("leave", async (g, runtime, name) => {
      const before = await openConnections(g); // this one, and the harness's kept-alive one
      for (let i = 0; i < 6; i++) {
        const exec = await docker(cli, g.dockerHost, ["exec", name, "echo", `hi-${i}`]);
        expect(exec.stdout.trim(), exec.stderr).toBe(`hi-${i}`);
        const refused = await fetch(`${g.url}/v1.41/containers/${uniq("none")}/attach?stream=1`, { method: "POST" });
        expect(refused.status).toBe(404);
        await refused.text();
        // `Connection: close` is not the front's to serve: the full server answers it.
        expect(await rawExchange(g.port, "GET /v1.41/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).toStartWith("HTTP/1.1 200");
      }
      await Bun.sleep(300);
      // 18 more when each one was kept.
      const open = await openConnections(g); // at most `before`: the harness's one may have gone idle and closed
      expect({ runtime, open, leftOpen: open > before }).toEqual({ runtime, open, leftOpen: false });
    });
  });
});

describe("security", () => {
  const prefix = uniq("sec");
  afterAll(() => removeContainers(prefix));

  test("refuses a non-loopback address without TLS unless FLOCKER_INSECURE=1", async () => {
    const port = await freePort();
    const refused = Bun.spawnSync([join(ROOT, "node_modules/.bin/bun"), "run", "main.ts"], {
      cwd: ROOT,
      env: { PATH: process.env.PATH!, FLOCKER_HOSTS: testEnv.hosts[0], FLOCKER_LISTEN: `0.0.0.0:${port}` },
      timeout: 20_000,
    });
    expect(refused.exitCode).not.toBe(0);
    expect(refused.stderr.toString()).toContain("FLOCKER_INSECURE");
    const f = await startFlocker("bun", { FLOCKER_LISTEN: `0.0.0.0:${port}`, FLOCKER_INSECURE: "1" });
    expect(f.output()).toContain("WARNING");
    await f.stop();
  });

  test.each(RUNTIMES)("%s: mTLS like dockerd --tlsverify: the CLI with a signed certificate works (run -i with 24 MB of stdin and its end too), without one it is refused; HTTP/1.1 on every front thread", async (runtime) => {
    const dir = tempDir("flk-tls-");
    try {
      serverCertificates(dir);
      const sh = (cmd: string) => {
        const r = spawnSync("sh", ["-c", cmd], { cwd: dir });
        if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
      };
      writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
      mkdirSync(join(dir, "client"));
      sh("openssl req -newkey rsa:2048 -nodes -keyout client/key.pem -out client.csr -subj /CN=client 2>/dev/null");
      sh("openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client/cert.pem -days 1 -extfile client.ext 2>/dev/null");
      sh("cp ca.pem client/ca.pem");
      const port = await freePort();
      const f = await startTls(port, dir, runtime);
      try {
        const tlsArgs = ["--tlsverify", "--tlscacert", join(dir, "ca.pem"), "--tlscert", join(dir, "client/cert.pem"), "--tlskey", join(dir, "client/key.pem")];
        const ps = await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "ps"]);
        expect(ps.code, ps.stderr).toBe(0);
        const run = await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "run", "--rm", "-i", testEnv.image, "cat"], { input: "over-tls\n" });
        expect(run.stdout).toBe("over-tls\n");
        // Stdin that has to wait for the engine, then ends: the CLI's FIN must reach the engine
        // (Deno's TLS layer dropped one that came while it was paused: the CLI hung).
        const bulk = randomBytes(24 * 1024 * 1024);
        const md5 = await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "run", "--rm", "-i", testEnv.image, "md5sum"], { input: bulk });
        expect(md5.stdout.split(" ")[0]).toBe(createHash("md5").update(bulk).digest("hex"));
        const anon = await docker(cli, `tcp://127.0.0.1:${port}`, ["--tls", "--tlscacert", join(dir, "ca.pem"), "ps"]);
        expect(anon.code).not.toBe(0);
        // A client that offers h2 too (curl, browsers, some SDKs) is answered in HTTP/1.1: hijacking needs it.
        const alpn = await new Promise<string | false>((resolve, reject) => {
          const read = (p: string) => readFileSync(join(dir, p), "utf8");
          const s = connectTls({ host: "127.0.0.1", port, ca: read("ca.pem"), cert: read("client/cert.pem"), key: read("client/key.pem"), ALPNProtocols: ["h2", "http/1.1"] }, () => {
            resolve(s.alpnProtocol);
            s.end();
          });
          s.on("error", reject);
        });
        expect(alpn).toBe("http/1.1");
        // Under Bun every front thread does TLS handshakes: fresh connections land on each of them
        // (Deno serves from one thread).
        const read = (p: string) => readFileSync(join(dir, p), "utf8");
        const tlsFetch = (path: string) =>
          fetch(`https://127.0.0.1:${port}${path}`, { headers: { Connection: "close" }, tls: { ca: read("ca.pem"), cert: read("client/cert.pem"), key: read("client/key.pem") } } as RequestInit);
        const listeners = () => spawnSync("ss", ["-Hltn", `sport = :${port}`], { encoding: "utf8" }).stdout.trim().split("\n").length;
        for (const deadline = Date.now() + 10_000; runtime === "bun" && listeners() < 2 && Date.now() < deadline;) await Bun.sleep(100);
        for (let i = 0; i < 24; i++) expect(await (await tlsFetch("/_ping")).text()).toBe("OK");
        await Bun.sleep(100); // the second thread reports in batches
        const metrics = await (await tlsFetch("/_flocker/metrics")).text();
        for (const thread of runtime === "bun" ? ["0", "1"] : ["0"]) {
          expect(Number(new RegExp(`flocker_front_connections_total\\{thread="${thread}"\\} (\\d+)`).exec(metrics)?.[1] ?? 0)).toBeGreaterThan(0);
        }
      } finally {
        await f.stop();
      }
    } finally {
      removeDir(dir);
    }
  });

  test.each(RUNTIMES)("%s: TLS without client certificates (no FLOCKER_TLS_CA): the CLI with --tls works, run -i with 24 MB of stdin too; a plain-HTTP client is turned away and the next TLS one still served", async (runtime) => {
    const dir = tempDir("flk-tls1-");
    try {
      serverCertificates(dir);
      const port = await freePort();
      const f = await startTls(port, dir, runtime, false);
      try {
        const tlsArgs = ["--tls", "--tlscacert", join(dir, "ca.pem")];
        const ps = await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "ps"]);
        expect(ps.code, ps.stderr).toBe(0);
        const bulk = randomBytes(24 * 1024 * 1024);
        const md5 = await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "run", "--rm", "-i", testEnv.image, "md5sum"], { input: bulk });
        expect(md5.stdout.split(" ")[0]).toBe(createHash("md5").update(bulk).digest("hex"));
        // Plain HTTP on the TLS port fails its handshake; the listener goes on.
        const plain = await docker(cli, `tcp://127.0.0.1:${port}`, ["ps"]);
        expect(plain.code).not.toBe(0);
        expect((await docker(cli, `tcp://127.0.0.1:${port}`, [...tlsArgs, "version"])).code).toBe(0);
      } finally {
        await f.stop();
      }
    } finally {
      removeDir(dir);
    }
  });

  /** A CA (ca.pem, ca-key.pem) and a server certificate it signed for 127.0.0.1 (server.pem, server-key.pem) in `dir`. */
  function serverCertificates(dir: string) {
    const sh = (cmd: string) => {
      const r = spawnSync("sh", ["-c", cmd], { cwd: dir });
      if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=flocker-test-ca 2>/dev/null");
    writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 1 -extfile server.ext 2>/dev/null");
  }

  async function startTls(port: number, dir: string, runtime: Runtime, clientCertificates = true) {
    const cmd = runtime === "bun" ? [join(ROOT, "node_modules/.bin/bun"), "run", "main.ts"] : [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "main.ts"];
    const proc = Bun.spawn(cmd, {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH!,
        HOME: process.env.HOME ?? "/root",
        FLOCKER_HOSTS: testEnv.hosts.join(","),
        FLOCKER_LISTEN: `127.0.0.1:${port}`,
        FLOCKER_TLS_CERT: join(dir, "server.pem"),
        FLOCKER_TLS_KEY: join(dir, "server-key.pem"),
        ...(clientCertificates && { FLOCKER_TLS_CA: join(dir, "ca.pem") }),
        ...(runtime === "bun" && { FLOCKER_THREADS: "2" }), // a TLS listener on each front thread
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    await waitForPort(port);
    return { stop: async () => (proc.kill(), await proc.exited) };
  }

  test("access policy: read-only, allow-lists on the normalized path, container restrictions; each refusal says why", async () => {
    const ro = await startFlocker("bun", { FLOCKER_READ_ONLY: "1" });
    try {
      expect((await docker(cli, ro.dockerHost, ["ps"])).code).toBe(0);
      const run = await docker(cli, ro.dockerHost, ["run", "--rm", testEnv.image, "true"]);
      expect(run.stderr).toContain("read-only");
    } finally {
      await ro.stop();
    }
    const listed = await startFlocker("bun", { FLOCKER_ALLOW: "GET:^/_ping$,HEAD:^/_ping$,GET:^/version$,GET:^/containers/json$" });
    try {
      expect((await docker(cli, listed.dockerHost, ["ps"])).code).toBe(0);
      const res = await fetch(`${listed.url}/v1.41/containers/json/..%2F..%2Finfo`);
      expect(res.status).toBe(403);
      const img = await fetch(`${listed.url}/v1.41/containers/%2e%2e/images/json`);
      expect(img.status).toBe(403);
      expect(((await img.json()) as { message: string }).message).toContain("/images/json");
    } finally {
      await listed.stop();
    }
    // /_ping is answered by the front itself: the allow-list still applies to it.
    const noPing = await startFlocker("bun", { FLOCKER_ALLOW: "GET:^/_ping$" });
    try {
      expect((await fetch(`${noPing.url}/v1.41/_ping`)).status).toBe(200);
      expect((await fetch(`${noPing.url}/v1.41/_ping`, { method: "HEAD" })).status).toBe(403);
      const version = await fetch(`${noPing.url}/version`);
      expect(version.status).toBe(403);
      expect(((await version.json()) as { message: string }).message).toContain("/version");
    } finally {
      await noPing.stop();
    }
    const allowed = tempDir("flk-bind-");
    const strict = await startFlocker("bun", { FLOCKER_DENY_PRIVILEGED: "1", FLOCKER_DENY_HOST_NAMESPACES: "1", FLOCKER_BIND_DIRS: allowed });
    try {
      const priv = await docker(cli, strict.dockerHost, ["run", "--rm", "--privileged", testEnv.image, "true"]);
      expect(priv.stderr).toContain("privileged");
      const hostNet = await docker(cli, strict.dockerHost, ["run", "--rm", "--network", "host", testEnv.image, "true"]);
      expect(hostNet.stderr).toContain("host's network namespace");
      const etc = await docker(cli, strict.dockerHost, ["run", "--rm", "-v", "/etc:/x", testEnv.image, "true"]);
      expect(etc.stderr).toContain("bind mount of /etc");
      const sneaky = await docker(cli, strict.dockerHost, ["run", "--rm", "-v", `${allowed}/../../etc:/x`, testEnv.image, "true"]);
      expect(sneaky.stderr).toContain("refuses the bind mount");
      const ok = await docker(cli, strict.dockerHost, ["run", "--rm", "--name", `${prefix}-ok`, "-v", `${allowed}:/x`, testEnv.image, "echo", "allowed"]);
      expect(ok.stdout.trim()).toBe("allowed");
    } finally {
      await strict.stop();
      removeDir(allowed);
    }
  });

  test("secrets never reach the logs", async () => {
    const f = await startFlocker("bun", { FLOCKER_LOG: "debug" });
    const config = tempDir("flk-secret-");
    try {
      const login = await docker(cli, f.dockerHost, ["login", testEnv.registry, "-u", testEnv.registryUser, "--password-stdin"], { input: testEnv.registryPass, config });
      expect(login.code, login.stderr).toBe(0);
      const pull = await docker(cli, f.dockerHost, ["pull", testEnv.privateImage], { config });
      expect(pull.code, pull.stderr).toBe(0);
      const out = f.output();
      expect(out).not.toContain(testEnv.registryPass);
      expect(out).not.toContain(btoa(`${testEnv.registryUser}:${testEnv.registryPass}`));
    } finally {
      await f.stop();
      removeDir(config);
      for (const h of testEnv.hosts.slice(1)) await fetch(`http://${h}/images/${testEnv.privateImage}?force=1`, { method: "DELETE" });
    }
  });
});

describe("TLS to engines", () => {
  const prefix = uniq("tlseng");
  // A fourth engine that speaks only TLS and wants client certificates (dockerd --tlsverify).
  const dir = join(testDir(), `t${Math.random().toString(36).slice(2, 6)}`);
  let dockerd: ReturnType<typeof Bun.spawn> | undefined;
  let port: number;
  const flockers = new Map<Runtime, RunningFlocker>();

  beforeAll(async () => {
    mkdirSync(join(dir, "certs"), { recursive: true });
    const sh = (cmd: string) => {
      const r = spawnSync("sh", ["-c", cmd], { cwd: join(dir, "certs") });
      if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=engine-ca 2>/dev/null");
    writeFileSync(join(dir, "certs", "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    sh("openssl req -newkey rsa:2048 -nodes -keyout server-key.pem -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
    sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 1 -extfile server.ext 2>/dev/null");
    writeFileSync(join(dir, "certs", "client.ext"), "extendedKeyUsage=clientAuth\n");
    sh("openssl req -newkey rsa:2048 -nodes -keyout key.pem -out client.csr -subj /CN=flocker 2>/dev/null");
    sh("openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile client.ext 2>/dev/null");
    port = await freePort();
    writeFileSync(join(dir, "daemon.json"), JSON.stringify({ "deprecated-key-path": join(dir, "key.json") }));
    dockerd = Bun.spawn([
      "dockerd", "--config-file", join(dir, "daemon.json"), "--data-root", join(dir, "data"), "--exec-root", join(dir, "x"),
      "--pidfile", join(dir, "pid"), "-H", `unix://${join(dir, "s")}`, "-H", `tcp://127.0.0.1:${port}`,
      "--tlsverify", "--tlscacert", join(dir, "certs/ca.pem"), "--tlscert", join(dir, "certs/server.pem"),
      "--tlskey", join(dir, "certs/server-key.pem"), "--iptables=false", "--ip-masq=false", "--bridge=none",
      "--storage-driver=vfs", "--insecure-registry", testEnv.registry,
    ], { stdout: "ignore", stderr: "ignore" });
    const deadline = Date.now() + 60_000;
    while (spawnSync("curl", ["-fsS", "--max-time", "2", "--unix-socket", join(dir, "s"), "http://localhost/_ping"]).status !== 0) {
      if (Date.now() > deadline) throw new Error("TLS dockerd did not start");
      await Bun.sleep(300);
    }
    for (const runtime of RUNTIMES) {
      flockers.set(runtime, await startFlocker(runtime, {
        FLOCKER_HOSTS: `${testEnv.hosts[0]},secure=https://127.0.0.1:${port}`,
        FLOCKER_HOST_CERT_PATH: join(dir, "certs"),
      }));
    }
  });
  afterAll(async () => {
    for (const f of flockers.values()) await f.stop();
    if (dockerd) {
      spawnSync("curl", ["-s", "-X", "POST", "--unix-socket", join(dir, "s"), "http://localhost/containers/prune"]);
      for (const c of JSON.parse(spawnSync("curl", ["-s", "--unix-socket", join(dir, "s"), "http://localhost/containers/json?all=1"]).stdout.toString() || "[]") as { Id: string }[]) {
        spawnSync("curl", ["-s", "-X", "DELETE", "--unix-socket", join(dir, "s"), `http://localhost/containers/${c.Id}?force=1`]);
      }
      dockerd.kill("SIGTERM");
      const timer = setTimeout(() => dockerd!.kill("SIGKILL"), 15_000);
      await dockerd.exited;
      clearTimeout(timer);
    }
    await removeContainers(prefix);
    spawnSync("sh", ["-c", `grep ' ${dir}' /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l; rm -rf '${dir}'`]);
  });

  for (const runtime of RUNTIMES) {
    test(`${runtime}: an https:// engine with client certificates: probed, pulled to, run on, exec'd into, copied to and from`, async () => {
      const f = flockers.get(runtime);
      const info = await docker(cli, f!.dockerHost, ["info", "--format", "{{json .Labels}}"]);
      expect(info.stdout).toMatch(/flocker\.host\.secure=https:\/\/127\.0\.0\.1:\d+ state=healthy/);
      const config = tempDir("flk-tlslogin-");
      try {
        expect((await docker(cli, f!.dockerHost, ["login", testEnv.registry, "-u", testEnv.registryUser, "--password-stdin"], { input: testEnv.registryPass, config })).code).toBe(0);
        const pull = await docker(cli, f!.dockerHost, ["pull", testEnv.privateImage], { config, timeoutMs: 120_000 });
        expect(pull.code, pull.stderr).toBe(0);
        const name = `${prefix}-${runtime}`;
        const run = await docker(cli, f!.dockerHost, ["run", "-d", "--name", name, "-e", "constraint:node==secure", testEnv.privateImage, "sleep", "120"]);
        expect(run.code, run.stderr).toBe(0);
        const exec = await docker(cli, f!.dockerHost, ["exec", "-i", name, "cat"], { input: "through-tls-engine\n" });
        expect(exec.stdout).toBe("through-tls-engine\n");
        // Bulk both ways over the engine's TLS connection (hijacked, then streamed), bytes checked.
        const bulk = randomBytes(24 * 1024 * 1024);
        const sum = createHash("md5").update(bulk).digest("hex");
        const md5 = await docker(cli, f!.dockerHost, ["exec", "-i", name, "sh", "-c", "tee /tmp/bulk | md5sum"], { input: bulk });
        expect(md5.stdout.split(" ")[0]).toBe(sum);
        const out = join(config, "bulk");
        expect((await docker(cli, f!.dockerHost, ["cp", `${name}:/tmp/bulk`, out])).code).toBe(0);
        expect(createHash("md5").update(readFileSync(out)).digest("hex")).toBe(sum);
        expect((await docker(cli, f!.dockerHost, ["logs", name])).code).toBe(0);
        expect((await docker(cli, f!.dockerHost, ["rm", "-f", name])).code).toBe(0);
      } finally {
        removeDir(config);
        for (const h of testEnv.hosts.slice(1)) await fetch(`http://${h}/images/${testEnv.privateImage}?force=1`, { method: "DELETE" });
      }
    });
  }
});
