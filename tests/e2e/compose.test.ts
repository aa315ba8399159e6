/**
 * Issue 9: docker compose through flocker, under Bun and Deno flocker, over the 3-engine test bed.
 * Drives Debian's docker-compose 1.29 (docker-py), and the `docker compose` plugin where installed.
 *
 * A project with a writer and a reader sharing a named volume and a user-defined network (and a
 * worker to scale) comes up on one host (flocker's placement rule for compose projects), its
 * services talk by service name, and `down -v` leaves nothing of it on any host. A second project
 * is placed on its own (spread: it goes to another, emptier host).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  type CliResult, docker, engine, removeContainers, removeDir, RUNTIMES, type RunningFlocker, startFlocker, tempDir, testEnv,
  uniq,
} from "./harness.ts";

const PROJECT_LABEL = "com.docker.compose.project";

/** The compose implementations on this machine: `docker-compose` 1.29 and the 28.x CLI plugin if present. */
const COMPOSES: { name: string; cmd: string[] }[] = [];
if (existsSync("/usr/bin/docker-compose")) COMPOSES.push({ name: "docker-compose-1.29", cmd: ["/usr/bin/docker-compose"] });
for (const plugin of ["/usr/local/lib/docker/cli-plugins/docker-compose", "/usr/libexec/docker/cli-plugins/docker-compose"]) {
  if (existsSync(plugin) && existsSync("/usr/local/bin/docker")) {
    COMPOSES.push({ name: "docker-compose-plugin", cmd: ["/usr/local/bin/docker", "compose"] });
    break;
  }
}
if (!COMPOSES.length) throw new Error("no docker-compose found: install docker-compose");

const composeFile = (image: string) => `version: "3.7"
services:
  writer:
    image: ${image}
    command: ["sh", "-c", "echo hello-from-writer > /data/msg; echo writer-started; exec httpd -f -p 8080 -h /data"]
    volumes: ["data:/data"]
    networks: ["backend"]
  reader:
    image: ${image}
    command: ["sh", "-c", "echo reader-started; exec sleep 3600"]
    volumes: ["data:/data"]
    networks: ["backend"]
  worker:
    image: ${image}
    command: ["sleep", "3600"]
    networks: ["backend"]
networks:
  backend: {}
volumes:
  data: {}
`;

interface Leftovers {
  containers: string[];
  networks: string[];
  volumes: string[];
}

/** Everything of a project on every engine, asked of the engines themselves. */
async function leftovers(project: string): Promise<Record<string, Leftovers>> {
  const filters = encodeURIComponent(JSON.stringify({ label: [`${PROJECT_LABEL}=${project}`] }));
  const out: Record<string, Leftovers> = {};
  for (const h of testEnv.hosts) {
    const ctrs = await engine<{ Names: string[] }[]>(h, `/containers/json?all=1&filters=${filters}`);
    const nets = await engine<{ Name: string }[]>(h, `/networks?filters=${filters}`);
    const vols = await engine<{ Volumes: { Name: string }[] | null }>(h, `/volumes?filters=${filters}`);
    out[h] = {
      containers: ctrs.body.map((c) => c.Names[0]),
      networks: nets.body.map((n) => n.Name),
      volumes: (vols.body.Volumes ?? []).map((v) => v.Name),
    };
  }
  return out;
}

/** Test cleanup straight on the engines (not through flocker). */
async function purge(project: string) {
  await removeContainers(project);
  for (const [h, left] of Object.entries(await leftovers(project))) {
    for (const n of left.networks) await engine(h, `/networks/${n}`, { method: "DELETE" });
    for (const v of left.volumes) await engine(h, `/volumes/${v}?force=1`, { method: "DELETE" });
  }
}

const lines = (s: string) => s.split("\n").map((l) => l.trim()).filter(Boolean);

for (const runtime of RUNTIMES) {
  for (const compose of COMPOSES) {
    describe(`compose through flocker (${runtime}, ${compose.name})`, () => {
      let f: RunningFlocker;
      let dir: string;
      let file: string;
      const a = uniq(`cmpa${runtime}`);
      const b = uniq(`cmpb${runtime}`);
      let hostA: string;

      const run = (project: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
        docker(compose.cmd[0], f.dockerHost, [...compose.cmd.slice(1), "-f", file, "-p", project, ...args], { timeoutMs: 90_000, ...opts });
      const cli = (args: string[]) => docker("/usr/bin/docker", f.dockerHost, args);
      const ok = (r: CliResult) => expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
      /** Engine host of each container of a project (service -> hosts). */
      const placed = async (project: string) => {
        const r = await cli(["ps", "-a", "--filter", `label=${PROJECT_LABEL}=${project}`, "--format", '{{.Label "com.docker.compose.service"}} {{.Label "flocker.host"}}']);
        ok(r);
        return lines(r.stdout).map((l) => l.split(" ") as [string, string]);
      };

      beforeAll(async () => {
        f = await startFlocker(runtime);
        dir = tempDir("flk-compose-");
        file = join(dir, "docker-compose.yml");
        writeFileSync(file, composeFile(testEnv.image));
      });
      afterAll(async () => {
        for (const p of [a, b]) {
          if (f) await run(p, ["down", "-v", "--timeout", "1"]).catch(() => undefined);
          await purge(p);
        }
        await f?.stop();
        removeDir(dir);
      });

      test("up -d: the project comes up on one host; one network and one volume listed, made on every host", async () => {
        ok(await run(a, ["up", "-d"]));
        const where = await placed(a);
        expect(where.map(([s]) => s).sort()).toEqual(["reader", "worker", "writer"]);
        hostA = where[0][1];
        expect(testEnv.hosts).toContain(hostA);
        for (const [, h] of where) expect(h).toBe(hostA);

        // compose's ps lists by label filter (`/containers/json?filters=`).
        const ps = await run(a, ["ps", "-q"]);
        ok(ps);
        expect(lines(ps.stdout).length).toBe(3);
        const services = await run(a, ["ps", "--services", "--filter", "status=running"]);
        ok(services);
        expect(lines(services.stdout).sort()).toEqual(["reader", "worker", "writer"]);

        // Compose's own label filters, and one entry per network/volume (not one per host).
        const nets = await cli(["network", "ls", "--filter", `label=${PROJECT_LABEL}=${a}`, "--format", "{{.ID}} {{.Name}}"]);
        ok(nets);
        expect(lines(nets.stdout).map((l) => l.split(" ")[1])).toEqual([`${a}_backend`]);
        const all = await cli(["network", "ls", "--format", "{{.Name}}"]);
        expect(lines(all.stdout).filter((n) => n === `${a}_backend`).length).toBe(1);
        const vols = await cli(["volume", "ls", "--filter", `label=${PROJECT_LABEL}=${a}`, "--format", "{{.Name}}"]);
        ok(vols);
        expect(lines(vols.stdout)).toEqual([`${a}_data`]);
        // The id listed is the copy in use (on the project's host), and inspect by that id answers.
        const listedId = lines(nets.stdout)[0].split(" ")[0];
        const onHostA = await engine<{ Id: string }>(hostA, `/networks/${a}_backend`);
        expect(onHostA.body.Id.startsWith(listedId)).toBe(true);
        const insp = await cli(["network", "inspect", listedId, "--format", "{{.Name}} {{len .Containers}}"]);
        ok(insp);
        expect(insp.stdout.trim()).toBe(`${a}_backend 3`);
        // Materialized on every host (so anything placed anywhere could use them), listed once.
        for (const h of testEnv.hosts) {
          expect((await engine(h, `/networks/${a}_backend`)).status).toBe(200);
          expect((await engine(h, `/volumes/${a}_data`)).status).toBe(200);
        }
      });

      test("services talk: the reader sees what the writer wrote, pings and connects to it by service name", async () => {
        const script = [
          "for i in $(seq 50); do [ -f /data/msg ] && break; sleep 0.1; done; cat /data/msg",
          "ping -c1 -W2 writer >/dev/null && echo ping-ok",
          'for i in $(seq 30); do r=$(printf "GET /msg HTTP/1.0\\r\\n\\r\\n" | nc -w2 writer 8080) && [ -n "$r" ] && break; sleep 0.2; done; echo "tcp: $r" | tail -1',
        ].join("; ");
        const r = await run(a, ["exec", "-T", "reader", "sh", "-c", script]);
        ok(r);
        const out = lines(r.stdout);
        expect(out[0]).toBe("hello-from-writer");
        expect(out).toContain("ping-ok");
        expect(out[out.length - 1]).toBe("hello-from-writer");
      });

      test("logs shows both services; logs -f follows", async () => {
        const r = await run(a, ["logs", "--no-color"]);
        ok(r);
        expect(r.stdout).toContain("writer-started");
        expect(r.stdout).toContain("reader-started");

        const follow = Bun.spawn([...compose.cmd, "-f", file, "-p", a, "logs", "-f", "--no-color", "reader"], {
          env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? "/root", DOCKER_HOST: f.dockerHost },
          stdout: "pipe",
          stderr: "pipe",
        });
        let text = "";
        void (async () => {
          for await (const chunk of follow.stdout) text += new TextDecoder().decode(chunk);
        })();
        try {
          const deadline = Date.now() + 20_000;
          while (!text.includes("reader-started") && Date.now() < deadline) await Bun.sleep(100);
          expect(text).toContain("reader-started");
          // A line printed by the reader's main process after logs -f attached.
          ok(await run(a, ["exec", "-T", "reader", "sh", "-c", "echo poked-after-follow > /proc/1/fd/1"]));
          while (!text.includes("poked-after-follow") && Date.now() < deadline) await Bun.sleep(100);
          expect(text).toContain("poked-after-follow");
        } finally {
          follow.kill();
          await follow.exited;
        }
      });

      test("run --rm: a one-off container on the project's network and volume, removed after", async () => {
        const r = await run(a, ["run", "--rm", "-T", "reader", "sh", "-c", "cat /data/msg; ping -c1 -W2 writer >/dev/null && echo ping-ok"]);
        ok(r);
        expect(lines(r.stdout)).toEqual(["hello-from-writer", "ping-ok"]);
        if (compose.name === "docker-compose-1.29") {
          // Without the docker CLI: docker-py attaches over a hijacked connection itself. It attaches
          // only AFTER starting the container (dockerpty's sockets() is a lazy `map` under Python 3),
          // so output written before the attach is lost, against one engine too: the sleep lets the
          // attach come first.
          const r2 = await run(a, ["run", "--rm", "-T", "reader", "sh", "-c", "sleep 1; cat /data/msg"], { env: { COMPOSE_INTERACTIVE_NO_CLI: "1" } });
          ok(r2);
          expect(r2.stdout.trim()).toBe("hello-from-writer");
        }
        const left = await cli(["ps", "-a", "-q", "--filter", `label=${PROJECT_LABEL}=${a}`, "--filter", "label=com.docker.compose.oneoff=True"]);
        ok(left);
        expect(left.stdout.trim()).toBe("");
      });

      test("stop, start, restart", async () => {
        ok(await run(a, ["stop", "--timeout", "1"]));
        const stopped = await cli(["ps", "-q", "--filter", `label=${PROJECT_LABEL}=${a}`]);
        expect(stopped.stdout.trim()).toBe("");
        ok(await run(a, ["start"]));
        ok(await run(a, ["restart", "--timeout", "1", "writer"]));
        const running = await cli(["ps", "-q", "--filter", `label=${PROJECT_LABEL}=${a}`]);
        expect(lines(running.stdout).length).toBe(3);
        const r = await run(a, ["exec", "-T", "reader", "sh", "-c", "cat /data/msg; ping -c1 -W2 writer >/dev/null && echo ping-ok"]);
        ok(r);
        expect(lines(r.stdout)).toEqual(["hello-from-writer", "ping-ok"]);
      });

      test("scale worker=3: new workers join the project on its host and reach the writer", async () => {
        ok(await run(a, ["up", "-d", "--scale", "worker=3"]));
        const where = await placed(a);
        expect(where.filter(([s]) => s === "worker").length).toBe(3);
        for (const [, h] of where) expect(h).toBe(hostA);
        const r = await run(a, ["exec", "-T", "--index=3", "worker", "ping", "-c1", "-W2", "writer"]);
        ok(r);
      });

      test("a second project is placed on its own: it goes to another (emptier) host", async () => {
        ok(await run(b, ["up", "-d", "writer", "reader"]));
        const where = await placed(b);
        expect(where.length).toBe(2);
        const hostB = where[0][1];
        for (const [, h] of where) expect(h).toBe(hostB);
        // Project A holds 5 containers on its host, the others none of this test: spread avoids it.
        expect(hostB).not.toBe(hostA);
        const r = await run(b, ["exec", "-T", "reader", "sh", "-c", "for i in $(seq 50); do [ -f /data/msg ] && break; sleep 0.1; done; cat /data/msg"]);
        ok(r);
        expect(r.stdout.trim()).toBe("hello-from-writer");

        // down without -v: containers and network go everywhere, the named volume stays...
        ok(await run(b, ["down", "--timeout", "1"]));
        for (const [h, left] of Object.entries(await leftovers(b))) {
          expect({ h, ...left }).toEqual({ h, containers: [], networks: [], volumes: [`${b}_data`] });
        }
        // ...until `volume rm` through flocker removes it from every host.
        ok(await cli(["volume", "rm", `${b}_data`]));
        for (const [h, left] of Object.entries(await leftovers(b))) expect({ h, ...left }).toEqual({ h, containers: [], networks: [], volumes: [] });
      });

      test("an image on one host only (made there, never pushed): the project comes up there, as on one engine that holds it", async () => {
        // Compose inspects the image (flocker: it exists), pulls nothing, creates, and never pulls
        // on a 404. The holder is project A's host, the busiest: spread alone would avoid it.
        const c = uniq(`cmpc${runtime}`);
        const repo = `${c}-img`;
        expect((await engine(hostA, `/images/${testEnv.image}/tag?repo=${repo}&tag=1`, { method: "POST" })).status).toBe(201);
        const local = join(dir, "local.yml");
        const service = `    image: ${repo}:1\n    command: ["sleep", "3600"]\n`;
        writeFileSync(local, `version: "3.7"\nservices:\n  one:\n${service}  two:\n${service}`);
        const composeLocal = (args: string[]) => docker(compose.cmd[0], f.dockerHost, [...compose.cmd.slice(1), "-f", local, "-p", c, ...args], { timeoutMs: 90_000 });
        try {
          ok(await composeLocal(["up", "-d"]));
          const where = await placed(c);
          expect(where.length).toBe(2);
          for (const [, h] of where) expect(h).toBe(hostA);
        } finally {
          await composeLocal(["down", "--timeout", "1"]).catch(() => undefined);
          await purge(c);
          await engine(hostA, `/images/${repo}:1`, { method: "DELETE" });
        }
      });

      test("down -v leaves no container, network or volume of the project on any host", async () => {
        ok(await run(a, ["down", "-v", "--timeout", "1"]));
        for (const [h, left] of Object.entries(await leftovers(a))) expect({ h, ...left }).toEqual({ h, containers: [], networks: [], volumes: [] });
        const nets = await cli(["network", "ls", "--filter", `label=${PROJECT_LABEL}=${a}`, "-q"]);
        ok(nets);
        expect(nets.stdout.trim()).toBe("");
        const ps = await run(a, ["ps", "-q"]);
        ok(ps);
        expect(ps.stdout.trim()).toBe("");
      });
    });
  }
}
