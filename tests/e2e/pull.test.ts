/**
 * Issue 3: images where they are needed. The `docker run` pull dance against the test bed's real
 * htpasswd registry (its image is on engine 1 only at the start of every case), docker login
 * through flocker, auto-pull mode, and the routing store shared by two flocker processes over the
 * test bed's real redis-server. Run through scripts/test.sh (it starts the test bed).
 *
 * Runtimes: the dance, login and auto mode run under Bun and Deno. The Redis cases run their two
 * flocker processes one under Bun and one under Deno (so both runtimes talk to Redis); restart
 * cases run under one runtime each (Redis: Bun, memory: Deno).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import {
  CLIS,
  type CliResult,
  docker,
  engine,
  hostOf,
  removeContainers,
  removeDir,
  type Runtime,
  RUNTIMES,
  type RunningFlocker,
  startFlocker,
  tempDir,
  testEnv,
  uniq,
} from "./harness.ts";

const PREFIX = uniq("fkpull");
const nameFor = (what: string) => uniq(`${PREFIX}-${what}`);
const PRIVATE = () => testEnv.privateImage;
const cli = (i: number) => CLIS[i % CLIS.length].path;

const running = new Set<RunningFlocker>();
const dirs: string[] = [];
async function start(runtime: Runtime, env: Record<string, string> = {}) {
  const f = await startFlocker(runtime, env);
  running.add(f);
  return f;
}
async function stop(f: RunningFlocker) {
  running.delete(f);
  await f.stop();
}
function dir(prefix: string) {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

afterEach(async () => {
  for (const f of [...running]) await stop(f);
  await removeContainers(PREFIX);
});
afterAll(async () => {
  await removeContainers(PREFIX);
  await resetPrivateImage();
  for (const d of dirs) removeDir(d);
});

/** Back to the start: the private image on engine 1 only (never touched there). */
async function resetPrivateImage() {
  const [first, ...rest] = testEnv.hosts;
  for (const h of rest) {
    const found = await engine<{ RepoDigests?: string[] }>(h, `/images/${PRIVATE()}/json`);
    if (found.status !== 200) continue;
    for (const ref of [PRIVATE(), ...(found.body.RepoDigests ?? [])]) {
      await engine(h, `/images/${ref}?force=1`, { method: "DELETE" });
    }
    expect((await engine(h, `/images/${PRIVATE()}/json`)).status).toBe(404);
  }
  expect((await engine(first, `/images/${PRIVATE()}/json`)).status).toBe(200);
}

/** An image on one host only, tagged there and never pushed (no registry has it); its reference. */
async function imageOnlyOn(host: string, repo: string, tag: string): Promise<string> {
  const tagged = await engine(host, `/images/${testEnv.image}/tag?repo=${encodeURIComponent(repo)}&tag=${tag}`, { method: "POST" });
  expect(tagged.status).toBe(201);
  return `${repo}:${tag}`;
}

const holds = async (host: string) => (await engine(host, `/images/${PRIVATE()}/json`)).status === 200;

/** Make engine 1 (the holder) busier than the others, so new containers go to engines 2 and 3 first. */
async function busyFirstHost(n = 3) {
  for (let i = 0; i < n; i++) {
    const res = await engine(testEnv.hosts[0], `/containers/create?name=${nameFor("busy")}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ Image: testEnv.image, Cmd: ["true"] }),
    });
    expect(res.status).toBe(201);
  }
}

async function ok(cliPath: string, host: string, args: string[], options?: Parameters<typeof docker>[3]): Promise<CliResult> {
  const r = await docker(cliPath, host, args, options);
  if (r.code !== 0) throw new Error(`docker ${args.join(" ")} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r;
}

function login(cliPath: string, host: string, config: string, password = testEnv.registryPass) {
  return docker(cliPath, host, ["login", testEnv.registry, "-u", testEnv.registryUser, "--password-stdin"], {
    input: password,
    config,
  });
}

/** What an engine itself answers to an anonymous pull of the private image: the registry's auth error. */
async function anonymousPullError(): Promise<string> {
  const [name, tag] = [PRIVATE().slice(0, PRIVATE().lastIndexOf(":")), PRIVATE().slice(PRIVATE().lastIndexOf(":") + 1)];
  const res = await engine<{ message: string }>(
    testEnv.hosts[1],
    `/images/create?fromImage=${encodeURIComponent(name)}&tag=${tag}`,
    { method: "POST", headers: { "X-Registry-Auth": "e30=" } },
  );
  expect(res.status).not.toBe(200);
  expect(res.body.message).toBeTruthy();
  return res.body.message;
}

/** Six `docker run --name` of the private image at once (both CLIs); all must print their output. */
async function sixRuns(host: string, config: string) {
  const names = Array.from({ length: 6 }, (_, i) => nameFor(`run${i}`));
  const results = await Promise.all(
    names.map((n, i) => docker(cli(i), host, ["run", "--name", n, PRIVATE(), "echo", `hello from ${n}`], { config, timeoutMs: 90_000 })),
  );
  results.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`run ${names[i]} (${cli(i)}) exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    expect(r.stdout).toContain(`hello from ${names[i]}`);
  });
  const placed = await Promise.all(names.map((n) => hostOf(n)));
  for (const p of placed) expect(p).toBeDefined();
  const used = [...new Set(placed as string[])];
  expect(used.length).toBeGreaterThanOrEqual(2); // spreading beats image affinity
  for (const h of used) expect(await holds(h)).toBe(true); // each host that ran one now holds it
  return { names, results, used };
}

for (const runtime of RUNTIMES) {
  describe(`the run dance against the auth'd registry (${runtime})`, () => {
    beforeAll(async () => {
      await removeContainers(PREFIX);
      await resetPrivateImage();
    });
    afterEach(resetPrivateImage);

    test("without login the CLI shows the registry's auth error, unchanged; no name is kept", async () => {
      const expected = await anonymousPullError();
      await busyFirstHost(); // the runs go to engines 2 and 3, which lack the image
      const f = await start(runtime);
      const config = dir("flk-pull-cfg-");
      for (const [i, c] of CLIS.entries()) {
        const name = nameFor(`noauth${i}`);
        const r = await docker(c.path, f.dockerHost, ["run", "--name", name, PRIVATE(), "echo", "never"], { config });
        expect(r.code, `${c.name}: ${r.stderr}`).not.toBe(0);
        expect(r.stderr).toContain(expected);
        expect(r.stdout).not.toContain("never");
        expect(await hostOf(name)).toBeUndefined();
        // The failed create kept nothing: the name is free at once.
        await ok(c.path, f.dockerHost, ["create", "--name", name, testEnv.image, "true"]);
      }
      // A plain pull (no dance) goes to every host and fails the same way.
      const pull = await docker(cli(0), f.dockerHost, ["pull", PRIVATE()], { config });
      expect(pull.code).not.toBe(0);
      expect(pull.stderr).toContain(expected);
      for (const h of testEnv.hosts.slice(1)) expect(await holds(h)).toBe(false);
    });

    test("after docker login through flocker, six runs print their output, spread, and pull where they land", async () => {
      const f = await start(runtime);
      const config = dir("flk-pull-cfg-");
      const bad = await login(cli(0), f.dockerHost, config, "not-the-password");
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/401|unauthorized/i);
      for (const c of CLIS) {
        const r = await login(c.path, f.dockerHost, config);
        expect(r.code, `${c.name} login: ${r.stderr}`).toBe(0);
        expect(r.stdout).toContain("Login Succeeded");
      }
      const { used, results } = await sixRuns(f.dockerHost, config);
      // At least one host had to pull: its progress came back through flocker to that CLI.
      expect(used.some((h) => h !== testEnv.hosts[0])).toBe(true);
      expect(results.some((r) => /Pull complete|Already exists|Downloaded newer image/.test(r.stdout + r.stderr))).toBe(true);
    });

    test("a pull no registry can serve (here: none reachable) while another host holds the image: the run goes to that host, as one engine runs an image it holds", async () => {
      const [first, second] = testEnv.hosts;
      const local = await imageOnlyOn(second, `${PREFIX}-localonly`, runtime);
      const f = await start(runtime);
      try {
        for (const [i, c] of CLIS.entries()) {
          const name = nameFor(`steered${i}`);
          // Preferred (soft) on the first host, which lacks it: the create there gets 404, the CLI
          // pulls, docker.io cannot be reached from here.
          const r = await docker(c.path, f.dockerHost, ["run", "--name", name, "-e", `constraint:node==~${first}`, local, "echo", `ran ${name}`], { config: dir("flk-pull-cfg-") });
          expect(r.code, `${c.name}: ${r.stderr}`).toBe(0);
          expect(r.stdout).toContain(`ran ${name}`);
          expect(r.stderr).toContain(`host ${second} holds it`);
          expect(await hostOf(name)).toBe(second);
        }
      } finally {
        await engine(second, `/images/${encodeURIComponent(local)}`, { method: "DELETE" });
      }
    });

    test("a plain docker pull goes to every healthy host, progress merged with per-host ids", async () => {
      const f = await start(runtime);
      const config = dir("flk-pull-cfg-");
      expect((await login(cli(1), f.dockerHost, config)).code).toBe(0);
      const r = await ok(cli(1), f.dockerHost, ["pull", PRIVATE()], { config, timeoutMs: 90_000 });
      const out = r.stdout + r.stderr;
      for (const h of testEnv.hosts) {
        expect(out).toContain(`${h}: `); // each host's lines, tagged with the host
        expect(await holds(h)).toBe(true);
      }
    });
  });

  describe(`auto pull mode (${runtime})`, () => {
    beforeAll(async () => {
      await removeContainers(PREFIX);
      await resetPrivateImage();
    });
    afterEach(resetPrivateImage);

    function authFile(password = testEnv.registryPass) {
      const path = join(dir("flk-pull-auth-"), "config.json");
      const auth = btoa(`${testEnv.registryUser}:${password}`);
      writeFileSync(path, JSON.stringify({ auths: { [testEnv.registry]: { auth } } }));
      return path;
    }

    test("FLOCKER_REGISTRY_AUTH: six runs with no login in the CLI print their output, spread, never see a 404", async () => {
      const f = await start(runtime, { FLOCKER_PULL: "auto", FLOCKER_REGISTRY_AUTH: authFile() });
      const config = dir("flk-pull-cfg-"); // the CLI has no credentials at all
      const { results } = await sixRuns(f.dockerHost, config);
      for (const r of results) expect(r.stderr).not.toContain("Unable to find image");
    });

    test("a pull no registry can serve while another host holds the image: the create goes to that host", async () => {
      const [first, second] = testEnv.hosts;
      const local = await imageOnlyOn(second, `${PREFIX}-autolocal`, runtime);
      const f = await start(runtime, { FLOCKER_PULL: "auto", FLOCKER_REGISTRY_AUTH: authFile() });
      try {
        const name = nameFor("autosteered");
        const r = await docker(cli(0), f.dockerHost, ["run", "--name", name, "-e", `constraint:node==~${first}`, local, "echo", `ran ${name}`], { config: dir("flk-pull-cfg-") });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`ran ${name}`);
        expect(await hostOf(name)).toBe(second);
      } finally {
        await engine(second, `/images/${encodeURIComponent(local)}`, { method: "DELETE" });
      }
    });

    test("a failed pull gives a clear error naming image and host", async () => {
      await busyFirstHost();
      const f = await start(runtime, { FLOCKER_PULL: "auto", FLOCKER_REGISTRY_AUTH: authFile("wrong-password") });
      const name = nameFor("autofail");
      const r = await docker(cli(0), f.dockerHost, ["run", "--name", name, PRIVATE(), "echo", "never"], { config: dir("flk-pull-cfg-") });
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(`pulling ${PRIVATE()} on host 127.0.0.1:`);
      expect(r.stderr).toMatch(/unauthorized|authentication required|401/i);
      expect(r.stderr).not.toContain("Unable to find image");
      expect(await hostOf(name)).toBeUndefined();
    });
  });
}

describe("auto pull mode with the registry-auth hook (in-process, Bun)", () => {
  test("credentials come from the hook; runs spread and pull where they land", async () => {
    await removeContainers(PREFIX);
    await resetPrivateImage();
    const { createFlocker, serve } = await import("../../lib/mod.ts");
    const asked: string[] = [];
    const flocker = createFlocker({
      hosts: testEnv.hosts,
      pull: "auto",
      probeIntervalMs: 1000,
      hooks: {
        registryAuth: async (registry) => {
          asked.push(registry);
          return { username: testEnv.registryUser, password: testEnv.registryPass };
        },
      },
    });
    await flocker.ready;
    const server = await serve(flocker, { listen: { host: "127.0.0.1", port: 0 } });
    try {
      const { results } = await sixRuns(`tcp://${server.address}`, dir("flk-pull-cfg-"));
      for (const r of results) expect(r.stderr).not.toContain("Unable to find image");
      expect(asked.length).toBeGreaterThanOrEqual(1);
      expect(new Set(asked)).toEqual(new Set([testEnv.registry]));
    } finally {
      await server.close();
      await flocker.close();
      await resetPrivateImage();
    }
  });
});

/** X-Registry-Auth as the CLI sends it after login. */
const registryAuth = () =>
  btoa(JSON.stringify({ username: testEnv.registryUser, password: testEnv.registryPass, serveraddress: testEnv.registry }))
    .replace(/\+/g, "-").replace(/\//g, "_");

async function api(f: RunningFlocker, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${f.url}${path}`, {
    method,
    headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json: unknown = text;
  try {
    json = JSON.parse(text);
  } catch { /* text */ }
  return { status: res.status, text, json: json as Record<string, unknown> };
}

describe("two flocker processes over one Redis (A: Bun, B: Deno)", () => {
  let prefix = "";
  let redis: Redis;
  beforeAll(async () => {
    redis = new Redis(testEnv.redis);
    await removeContainers(PREFIX);
    await resetPrivateImage();
  });
  afterAll(() => redis.disconnect());
  afterEach(resetPrivateImage);
  const redisEnv = (extra: Record<string, string> = {}) => ({ FLOCKER_REDIS: testEnv.redis, FLOCKER_REDIS_PREFIX: prefix, ...extra });

  test("create via A gets 404, the pull via B goes to that host, the retry via A lands there", async () => {
    prefix = `${uniq("fkpull")}:`;
    await busyFirstHost();
    // A never re-probes: only the shared store can tell it where B pulled.
    const a = await start("bun", redisEnv({ FLOCKER_PROBE_INTERVAL: "600000" }));
    const b = await start("deno", redisEnv());
    const name = nameFor("shared");
    const first = await api(a, "POST", `/v1.41/containers/create?name=${name}`, { Image: PRIVATE(), Cmd: ["echo", "hi"] });
    expect(first.status).toBe(404);
    const wants = await redis.keys(`${prefix}want:*`);
    expect(wants.length).toBe(1);
    const wantedHost = wants[0].slice(wants[0].lastIndexOf(":", wants[0].lastIndexOf(":") - 1) + 1);
    expect(testEnv.hosts.slice(1)).toContain(wantedHost);
    expect(await redis.get(`${prefix}name:${name}`)).toBeNull(); // the 404 reserved nothing

    const [repo, tag] = [PRIVATE().slice(0, PRIVATE().lastIndexOf(":")), PRIVATE().slice(PRIVATE().lastIndexOf(":") + 1)];
    const pull = await api(b, "POST", `/v1.41/images/create?fromImage=${encodeURIComponent(repo)}&tag=${tag}`, undefined, {
      "X-Registry-Auth": registryAuth(),
    });
    expect(pull.status).toBe(200);
    expect(pull.text).not.toContain('"error"');
    for (const h of testEnv.hosts.slice(1)) expect(await holds(h)).toBe(h === wantedHost); // only where it was wanted
    expect(await redis.get(wants[0])).toBe("pulled:1") // one run waits there;

    const again = await api(a, "POST", `/v1.41/containers/create?name=${name}`, { Image: PRIVATE(), Cmd: ["echo", "hi"] });
    expect(again.status).toBe(201);
    expect(await hostOf(String(again.json.Id))).toBe(wantedHost);
    expect(await redis.get(wants[0])).toBeNull(); // the want is cleared by the create
    expect(await redis.get(`${prefix}name:${name}`)).toBe(String(again.json.Id));
    // B routes the new container too (from the shared store).
    const inspect = await api(b, "GET", `/containers/${name}/json`);
    expect(inspect.status).toBe(200);
  });

  test("20 concurrent creates of one name spread over A and B: exactly one 201", async () => {
    prefix = `${uniq("fkpull")}:`;
    const a = await start("bun", redisEnv());
    const b = await start("deno", redisEnv());
    const name = nameFor("race");
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        api(i % 2 ? b : a, "POST", `/containers/create?name=${name}`, { Image: testEnv.image, Cmd: ["true"] })
      ),
    );
    const statuses = answers.map((r) => r.status);
    expect(statuses.filter((s) => s === 201).length).toBe(1);
    expect(statuses.filter((s) => s === 409).length).toBe(19);
    let found = 0;
    for (const h of testEnv.hosts) {
      const { body } = await engine<{ Names: string[] }[]>(h, `/containers/json?all=1&filters=${encodeURIComponent(JSON.stringify({ name: [name] }))}`);
      found += body.filter((c) => c.Names.includes(`/${name}`)).length;
    }
    expect(found).toBe(1);
  });

  test("restarting flocker with Redis loses no routing (containers, names, exec ids)", async () => {
    prefix = `${uniq("fkpull")}:`;
    const name = nameFor("keep");
    let f = await start("bun", redisEnv());
    await ok(cli(0), f.dockerHost, ["run", "-d", "--name", name, testEnv.image, "sleep", "300"]);
    const id = (await ok(cli(0), f.dockerHost, ["inspect", "-f", "{{.Id}}", name])).stdout.trim();
    const exec = await api(f, "POST", `/containers/${name}/exec`, { Cmd: ["echo", "x"] });
    expect(exec.status).toBe(201);
    const execId = String(exec.json.Id);
    const where = await hostOf(name);
    await stop(f);
    // The routes are in Redis, under the prefix.
    expect((await redis.get(`${prefix}ctr:${id}`))?.split("\t")[0]).toBe(where!);
    expect(await redis.get(`${prefix}name:${name}`)).toBe(id);
    expect(await redis.get(`${prefix}exec:${execId}`)).toBe(where!);
    // Kept an hour: engines forget finished execs within minutes, and records are one per exec.
    const ttl = await redis.ttl(`${prefix}exec:${execId}`);
    expect(ttl).toBeGreaterThan(3500);
    expect(ttl).toBeLessThanOrEqual(3600);

    f = await start("bun", redisEnv());
    expect((await api(f, "GET", `/exec/${execId}/json`)).status).toBe(200);
    const r = await ok(cli(1), f.dockerHost, ["exec", name, "echo", "still here"]);
    expect(r.stdout.trim()).toBe("still here");
    await ok(cli(1), f.dockerHost, ["rm", "-f", name]);
    expect(await hostOf(name)).toBeUndefined();
    expect(await redis.get(`${prefix}ctr:${id}`)).toBeNull();
  });

  test("containers removed behind flocker's back (run --rm, rm on the engine) leave no record in the store", async () => {
    prefix = `${uniq("fkpull")}:`;
    // Probes every 300 ms: records are swept every 12 of them.
    const f = await start("deno", redisEnv({ FLOCKER_PROBE_INTERVAL: "300" }));
    const [live, autoRemoved, removedOnEngine] = [nameFor("live"), nameFor("rm"), nameFor("gone")];
    await ok(cli(0), f.dockerHost, ["run", "-d", "--name", live, testEnv.image, "sleep", "300"]);
    const liveId = (await ok(cli(0), f.dockerHost, ["inspect", "-f", "{{.Id}}", live])).stdout.trim();
    const run = await ok(cli(1), f.dockerHost, ["run", "--rm", "--name", autoRemoved, testEnv.image, "echo", "ran"]);
    expect(run.stdout.trim()).toBe("ran");
    await ok(cli(0), f.dockerHost, ["run", "-d", "--name", removedOnEngine, testEnv.image, "sleep", "300"]);
    const removed = await engine(await hostOf(removedOnEngine) ?? "", `/containers/${removedOnEngine}?force=1`, { method: "DELETE" });
    expect(removed.status).toBe(204);
    // The engine removed one, another was removed on its engine: flocker heard of neither. Every
    // record left must be of a container some engine holds (other cases' containers may be there).
    const held = async () => {
      const ids = new Set<string>();
      for (const h of testEnv.hosts) for (const c of (await engine<{ Id: string }[]>(h, "/containers/json?all=1")).body) ids.add(c.Id);
      return ids;
    };
    const stale = async () => {
      const ids = await held();
      const records = (await redis.keys(`${prefix}ctr:*`)).map((k) => k.slice(`${prefix}ctr:`.length));
      return {
        recordsOfRemovedContainers: records.filter((id) => !ids.has(id)).length,
        names: await Promise.all([autoRemoved, removedOnEngine, live].map((n) => redis.get(`${prefix}name:${n}`))),
      };
    };
    const want = { recordsOfRemovedContainers: 0, names: [null, null, liveId] };
    const deadline = Date.now() + 15_000;
    let got = await stale();
    while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline) {
      await Bun.sleep(250);
      got = await stale();
    }
    expect(got).toEqual(want);
    expect(await redis.get(`${prefix}ctr:${liveId}`)).not.toBeNull();
    // The one still running is routed as before.
    expect((await ok(cli(1), f.dockerHost, ["exec", live, "echo", "here"])).stdout.trim()).toBe("here");
    await ok(cli(0), f.dockerHost, ["rm", "-f", live]);
    await stop(f);
  });
});

describe("restarting flocker with the memory store (Deno)", () => {
  test("routing is rebuilt from the hosts: no container becomes unreachable", async () => {
    const names = [nameFor("mem0"), nameFor("mem1"), nameFor("mem2")];
    let f = await start("deno");
    for (const n of names) await ok(cli(0), f.dockerHost, ["run", "-d", "--name", n, testEnv.image, "sleep", "300"]);
    const exec = await api(f, "POST", `/containers/${names[0]}/exec`, { Cmd: ["echo", "x"] });
    expect(exec.status).toBe(201);
    const ids = await Promise.all(names.map(async (n) => (await ok(cli(0), f.dockerHost, ["inspect", "-f", "{{.Id}}", n])).stdout.trim()));
    await stop(f);

    f = await start("deno");
    expect((await api(f, "GET", `/exec/${exec.json.Id}/json`)).status).toBe(200);
    for (const [i, n] of names.entries()) {
      const r = await ok(cli(1), f.dockerHost, ["exec", n, "echo", `ok ${i}`]);
      expect(r.stdout.trim()).toBe(`ok ${i}`);
      const short = await ok(cli(1), f.dockerHost, ["inspect", "-f", "{{.Name}}", ids[i].slice(0, 12)]);
      expect(short.stdout.trim()).toBe(`/${n}`);
    }
  });
});
