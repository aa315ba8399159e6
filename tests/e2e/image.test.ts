/**
 * Issue 8: the container image. scripts/image.sh builds the Dockerfile on engine 1 of the test bed
 * (classic builder, base images made from local files); a container of it, on the host network,
 * serves `docker ps` and `docker version` for the three engines. Container and images are removed.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { realpathSync, statSync } from "node:fs";
import { join } from "node:path";
import { CLIS, docker, freePort, removeDir, ROOT, tempDir, testEnv, uniq } from "./harness.ts";

const cli = CLIS[0].path;
const engineHost = () => `tcp://${testEnv.hosts[0]}`;
const tag = `${uniq("flocker-test")}:latest`;
const container = uniq("fkimage");
const dockerConfig = tempDir("flk-image-dcfg-");
const bunSize = statSync(realpathSync(join(ROOT, "node_modules/bun/bin/bun.exe"))).size;
let built = false;
let baseImages: string[] = [];

/** docker on engine 1 directly (not through flocker). */
async function engine1(args: string[], timeoutMs = 120_000) {
  return docker(cli, engineHost(), args, { config: dockerConfig, timeoutMs });
}

afterAll(async () => {
  await engine1(["rm", "-f", container]);
  if (built) await engine1(["rmi", tag]);
  // The build stage's image (untagged, labelled in the Dockerfile), then the local base images.
  await engine1(["image", "prune", "-f", "--filter", "label=flocker.stage=build"]);
  for (const ref of baseImages) await engine1(["rmi", ref]);
  removeDir(dockerConfig);
});

describe("container image", () => {
  test("scripts/image.sh builds it on the engine and prints the tag", async () => {
    const proc = Bun.spawn(["bash", "scripts/image.sh", tag], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/root",
        DOCKER_HOST: engineHost(),
        DOCKER_CONFIG: dockerConfig,
        DOCKER_CLI: cli,
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 540_000);
    const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(timer);
    baseImages = [...stderr.matchAll(/BUILDER=(\S+) BASE=(\S+)\)/g)].flatMap((m) => [m[1], m[2]]);
    expect(code, stderr).toBe(0);
    built = true;
    expect(stdout.trim()).toBe(tag);
  }, 600_000);

  test("holds only the runtime, the bundled server (two files) and CA certificates; runs as non-root", async () => {
    expect(built).toBe(true);
    const inspect = await engine1(["image", "inspect", "-f", "{{.Size}} {{.Config.User}} {{json .Config.Entrypoint}}", tag]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const [size, user, entrypoint] = inspect.stdout.trim().split(" ");
    console.log(`image ${tag}: ${(Number(size) / 1e6).toFixed(1)} MB (bun binary ${(bunSize / 1e6).toFixed(1)} MB)`);
    expect(Number(size)).toBeLessThanOrEqual(bunSize + 10e6);
    expect(user).toBe("65532:65532");
    expect(JSON.parse(entrypoint)).toEqual(["/usr/local/bin/bun", "--smol", "/app/flocker.js"]);

    // Every file in the image: bun, the bundle, CA certificates, the glibc files, passwd/group.
    const created = await engine1(["create", "--name", `${container}-files`, tag]);
    expect(created.code, created.stderr).toBe(0);
    try {
      const exported = Bun.spawn(["sh", "-c", `'${cli}' export '${container}-files' | tar -tvf -`], {
        env: { PATH: process.env.PATH!, DOCKER_HOST: engineHost(), DOCKER_CONFIG: dockerConfig },
        stdout: "pipe",
        stderr: "pipe",
      });
      const listing = await new Response(exported.stdout).text();
      expect(await exported.exited).toBe(0);
      const files = listing.split("\n").filter((l) => l.startsWith("-")).map((l) => l.split(/\s+/).pop()!);
      const allowed = [
        /^usr\/local\/bin\/bun$/,
        /^app\/(flocker|front-worker)\.js$/, // the server, and the module its front threads load
        /^etc\/ssl\/certs\/ca-certificates\.crt$/,
        /^(usr\/)?lib(64|\/x86_64-linux-gnu|\/aarch64-linux-gnu)?\/(ld-linux[^/]*|lib(c|m|dl|pthread|rt|gcc_s)\.so[.\d]*)$/,
        /^etc\/(passwd|group|hosts|hostname|resolv\.conf)$/,
        /^(\.dockerenv|dev\/console)$/, // made by the engine for each container
      ];
      const extra = files.filter((f) => !allowed.some((re) => re.test(f)));
      expect(extra).toEqual([]);
      expect(files).toContain("usr/local/bin/bun");
      expect(files).toContain("app/flocker.js");
    } finally {
      await engine1(["rm", "-f", `${container}-files`]);
    }
  }, 120_000);

  test("a container of it (--network host) serves docker ps and version for the flock", async () => {
    expect(built).toBe(true);
    const port = await freePort();
    const run = await engine1([
      "run", "-d", "--name", container, "--network", "host",
      "-e", `FLOCKER_HOSTS=${testEnv.hosts.join(",")}`,
      "-e", `FLOCKER_LISTEN=127.0.0.1:${port}`,
      "-e", "FLOCKER_PROBE_INTERVAL=1000",
      tag,
    ]);
    expect(run.code, run.stderr).toBe(0);
    const through = `tcp://127.0.0.1:${port}`;
    const deadline = Date.now() + 30_000;
    while ((await fetch(`http://127.0.0.1:${port}/_ping`).catch(() => null))?.status !== 200) {
      if (Date.now() > deadline) {
        const logs = await engine1(["logs", container]);
        throw new Error(`the flocker container did not answer /_ping within 30 s:\n${logs.stdout}${logs.stderr}`);
      }
      await Bun.sleep(200);
    }
    for (const c of CLIS) {
      const ps = await docker(c.path, through, ["ps", "-a"], { config: dockerConfig });
      expect(ps.code, ps.stderr).toBe(0);
      expect(ps.stdout).toContain("CONTAINER ID");
      expect(ps.stdout).toContain(container); // itself, on engine 1
      const version = await docker(c.path, through, ["version", "--format", "{{.Server.Platform.Name}} {{.Server.APIVersion}}"], {
        config: dockerConfig,
      });
      expect(version.code, version.stderr).toBe(0);
      expect(version.stdout.trim()).toMatch(/^flocker \(3 hosts\) 1\.\d+$/);
    }
    // Not a terminal: the start-up line and request lines are JSON.
    const logs = await engine1(["logs", container]);
    const first = JSON.parse(logs.stdout.split("\n")[0]) as { msg: string; hosts: { name: string }[] };
    expect(first.msg).toBe("listening");
    expect(first.hosts.map((h) => h.name)).toEqual(testEnv.hosts);
    expect(logs.stdout).toContain('"route":"/containers/json"');
    const stop = await engine1(["stop", "-t", "10", container]);
    expect(stop.code, stop.stderr).toBe(0);
    const exit = await engine1(["inspect", "-f", "{{.State.ExitCode}}", container]);
    expect(exit.stdout.trim()).toBe("0"); // SIGTERM: a clean stop
  }, 120_000);
});
