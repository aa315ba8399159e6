/**
 * Issue 5: the library APIs. The seed example (node:http + handle) under Bun and Deno, a Hono app
 * with its own route plus mounted flocker, and Swarm-style constraints.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Hono } from "hono";
import { createFlocker } from "../../lib/mod.ts";
import {
  CLIS, docker, freePort, hostOf, removeContainers, ROOT, RUNTIMES, type RunningFlocker, startFlocker, testEnv, uniq,
} from "./harness.ts";

const cli = CLIS[CLIS.length - 1].path;

for (const runtime of RUNTIMES) {
  test(`seed example (${runtime}): allocate forces host 3 and adds an env var; list; set/get/delete; handle()`, async () => {
    const port = await freePort();
    const bin = join(ROOT, "node_modules/.bin", runtime);
    const args = runtime === "bun" ? ["run"] : ["run", "-A"];
    const proc = Bun.spawn([bin, ...args, "tests/fixtures/seed-example.ts"], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH!,
        PORT: String(port),
        FLOCKER_EXAMPLE_HOSTS: testEnv.hosts.join(","),
        FLOCKER_EXAMPLE_TARGET: testEnv.hosts[2],
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const prefix = uniq(`seed-${runtime}`);
    try {
      const host = `tcp://127.0.0.1:${port}`;
      const deadline = Date.now() + 20_000;
      while ((await fetch(`http://127.0.0.1:${port}/_ping`).catch(() => null))?.status !== 200) {
        if (Date.now() > deadline) throw new Error("seed example did not start");
        await Bun.sleep(100);
      }
      const run = await docker(cli, host, ["run", "--name", `${prefix}-a`, testEnv.image, "sh", "-c", "echo $ALLOCATED_BY"]);
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout.trim()).toBe("seed-example");
      expect(await hostOf(`${prefix}-a`)).toBe(testEnv.hosts[2]);
      // Hijacked streams through handle(): stdin piped in, output back.
      const piped = await docker(cli, host, ["run", "--rm", "-i", testEnv.image, "cat"], { input: "through-handle\n" });
      expect(piped.stdout).toBe("through-handle\n");
      // Routing state lives in the user's object store: name lookups work.
      expect((await docker(cli, host, ["rm", `${prefix}-a`])).code).toBe(0);
    } finally {
      proc.kill();
      await proc.exited;
      await removeContainers(prefix);
    }
  });
}

describe("createFlocker mounted in a Hono app", () => {
  let server: ReturnType<typeof Bun.serve>;
  const flocker = createFlocker({ hosts: testEnv.hosts });
  beforeAll(() => {
    const app = new Hono();
    app.get("/hello", (c) => c.text("hello from the app"));
    app.mount("/", flocker.fetch);
    server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
  });
  afterAll(async () => {
    server.stop(true);
    await flocker.close();
  });

  test("answers its own /hello and docker ps", async () => {
    expect(await (await fetch(`http://127.0.0.1:${server.port}/hello`)).text()).toBe("hello from the app");
    const ps = await docker(cli, `tcp://127.0.0.1:${server.port}`, ["ps", "-a", "--format", "{{.ID}}"]);
    expect(ps.code, ps.stderr).toBe(0);
    const info = await docker(cli, `tcp://127.0.0.1:${server.port}`, ["info", "--format", "{{.Name}}"]);
    expect(info.stdout.trim()).toBe("flocker");
  });
});

describe("constraints and strategies through flocker", () => {
  let f: RunningFlocker;
  const prefix = uniq("constraint");
  beforeAll(async () => {
    f = await startFlocker("bun", { FLOCKER_HOSTS: `one=${testEnv.hosts[0]},two=${testEnv.hosts[1]},three=${testEnv.hosts[2]}` });
  });
  afterAll(async () => {
    await removeContainers(prefix);
    await f.stop();
  });
  const run = (args: string[]) => docker(cli, f.dockerHost, args);

  test("constraint:node==ADDRESS and ==NAME land on that host; != avoids it", async () => {
    for (let i = 0; i < 3; i++) {
      const name = `${prefix}-addr${i}`;
      const r = await run(["run", "-d", "--name", name, "-e", `constraint:node==${testEnv.hosts[1]}`, testEnv.image, "true"]);
      expect(r.code, r.stderr).toBe(0);
      expect(await hostOf(name)).toBe(testEnv.hosts[1]);
    }
    const byName = `${prefix}-name`;
    expect((await run(["run", "-d", "--name", byName, "-e", "constraint:node==three", testEnv.image, "true"])).code).toBe(0);
    expect(await hostOf(byName)).toBe(testEnv.hosts[2]);
    for (let i = 0; i < 4; i++) {
      const name = `${prefix}-not${i}`;
      expect((await run(["run", "-d", "--name", name, "-e", "constraint:node!=one", testEnv.image, "true"])).code).toBe(0);
      expect(await hostOf(name)).not.toBe(testEnv.hosts[0]);
    }
  });

  test("engine labels and container affinity; an impossible constraint is refused by name", async () => {
    const ssd = `${prefix}-ssd`;
    expect((await run(["run", "-d", "--name", ssd, "-e", "constraint:storage==ssd", testEnv.image, "true"])).code).toBe(0);
    expect(await hostOf(ssd)).toBe(testEnv.hosts[0]);
    const buddy = `${prefix}-buddy`;
    expect((await run(["run", "-d", "--name", buddy, "-e", `affinity:container==${prefix}-name`, testEnv.image, "true"])).code).toBe(0);
    expect(await hostOf(buddy)).toBe(testEnv.hosts[2]);
    const none = await run(["run", "--name", `${prefix}-none`, "-e", "constraint:node==nowhere", testEnv.image, "true"]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain("constraint:node==nowhere");
  });

  test("Swarm's other rules: affinity:container!= (a name or a pattern), affinity:image== (a name or a pattern), soft ==~", async () => {
    // `${prefix}-name` is on host three, `${prefix}-addr*` on host two (the first test).
    for (let i = 0; i < 3; i++) {
      const name = `${prefix}-anti${i}`;
      const r = await run(["run", "-d", "--name", name, "-e", `affinity:container!=${prefix}-name`, "-e", `affinity:container!=${prefix}-addr*`, testEnv.image, "true"]);
      expect(r.code, r.stderr).toBe(0);
      expect(await hostOf(name)).toBe(testEnv.hosts[0]);
    }
    // Only engine 1 holds the private image.
    const withImage = `${prefix}-img`;
    expect((await run(["create", "--name", withImage, "-e", `affinity:image==${testEnv.privateImage}`, testEnv.image, "true"])).code).toBe(0);
    expect(await hostOf(withImage)).toBe(testEnv.hosts[0]);
    // An image made a moment ago on host two behind flocker's back (asked of the hosts, not taken
    // from the last probe), by name and by pattern.
    const two = `tcp://${testEnv.hosts[1]}`;
    const fresh = `${prefix}-fresh:1`;
    expect((await docker(cli, two, ["create", "--name", `${prefix}-freshsrc`, testEnv.image, "true"])).code).toBe(0);
    expect((await docker(cli, two, ["commit", `${prefix}-freshsrc`, fresh])).code).toBe(0);
    try {
      for (const [i, rule] of [`affinity:image==${fresh}`, `affinity:image==${prefix}-fre*`].entries()) {
        const name = `${prefix}-onfresh${i}`;
        const r = await run(["create", "--name", name, "-e", rule, testEnv.image, "true"]);
        expect(r.code, r.stderr).toBe(0);
        expect(await hostOf(name)).toBe(testEnv.hosts[1]);
      }
    } finally {
      await removeContainers(`${prefix}-onfresh`);
      await removeContainers(`${prefix}-freshsrc`);
      await docker(cli, two, ["rmi", fresh]);
    }
    // Soft: followed where it can be, let go where no host satisfies it (hard, it is refused).
    const preferred = `${prefix}-soft`;
    expect((await run(["create", "--name", preferred, "-e", "constraint:node==~two", testEnv.image, "true"])).code).toBe(0);
    expect(await hostOf(preferred)).toBe(testEnv.hosts[1]);
    const anywhere = await run(["create", "--name", `${prefix}-softnone`, "-e", "constraint:node==~nowhere", testEnv.image, "true"]);
    expect(anywhere.code, anywhere.stderr).toBe(0);
    const missing = await run(["create", "--name", `${prefix}-nobuddy`, "-e", `affinity:container==${prefix}-nosuch`, testEnv.image, "true"]);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain(`affinity:container==${prefix}-nosuch`);
  });
  test("-p PORT: a container created but not started keeps the port's host from the next create until it starts or goes", async () => {
    const port = await freePort();
    // Host one is preferred (soft), so only the port can send a create elsewhere.
    const create = async (name: string) => {
      const r = await run(["create", "--name", `${prefix}-${name}`, "-p", `${port}:80`, "-e", "constraint:node==~one", testEnv.image, "sleep", "30"]);
      expect(r.code, r.stderr).toBe(0);
      return hostOf(`${prefix}-${name}`);
    };
    const one = testEnv.hosts[0];
    try {
      expect(await create("portA")).toBe(one);
      // Nothing runs yet (the engines list no published port), but portA will take it on one.
      expect(await create("portB")).not.toBe(one);
      // Removed: its claim goes with it.
      expect((await run(["rm", `${prefix}-portA`])).code).toBe(0);
      expect(await create("portC")).toBe(one);
      // Started (on the default network nothing is published): the claim is done.
      expect((await run(["start", `${prefix}-portC`])).code).toBe(0);
      expect(await create("portD")).toBe(one);
    } finally {
      await removeContainers(`${prefix}-port`);
    }
  });
});

describe("inventory from a Redis set", () => {
  test("hosts added to and removed from the set join and leave without a restart", async () => {
    const { default: Redis } = await import("ioredis");
    const prefix = `${uniq("inv")}:`;
    const redis = new Redis(testEnv.redis, { keyPrefix: prefix });
    const f = await startFlocker("bun", {
      FLOCKER_HOSTS: testEnv.hosts[0],
      FLOCKER_REDIS: testEnv.redis,
      FLOCKER_REDIS_PREFIX: prefix,
      FLOCKER_HOSTS_SET: "hosts",
    });
    const names = uniq("inv");
    const hostsIn = async () => (await docker(cli, f.dockerHost, ["info", "--format", "{{json .Labels}}"])).stdout.match(/flocker\.host\./g)?.length ?? 0;
    const waitFor = async (n: number) => {
      const deadline = Date.now() + 10_000;
      while ((await hostsIn()) !== n && Date.now() < deadline) await Bun.sleep(300);
      return hostsIn();
    };
    try {
      expect(await hostsIn()).toBe(1);
      await redis.sadd("hosts", testEnv.hosts[1]);
      expect(await waitFor(2)).toBe(2);
      const r = await docker(cli, f.dockerHost, ["run", "--rm", "--name", names, "-e", `constraint:node==${testEnv.hosts[1]}`, testEnv.image, "echo", "joined"]);
      expect(r.stdout.trim(), r.stderr).toBe("joined");
      await redis.srem("hosts", testEnv.hosts[1]);
      expect(await waitFor(1)).toBe(1);
    } finally {
      await redis.del("hosts");
      redis.disconnect();
      await f.stop();
    }
  });
});
