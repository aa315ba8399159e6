/**
 * Issue 7: front threads. With FLOCKER_THREADS=2 two threads listen on flocker's port and the
 * kernel spreads connections over them; the second asks the main thread for routes and app
 * answers. Every request here goes on a fresh connection, so both threads serve some, and each
 * must answer the same: routed reads (kept routes), app answers, /_ping, exec; and when a host is
 * cut off, the routes each thread kept must answer 503 naming it, then route again once it is back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { connect, createServer, type Server, type Socket } from "node:net";
import { readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLIS, docker, freePort, removeContainers, ROOT, RUNTIMES, type RunningFlocker, startFlocker, testEnv, uniq } from "./harness.ts";

const cli = CLIS[CLIS.length - 1].path;

interface Answer {
  status: number;
  body: string;
}

/** One request on a connection of its own (kept open until the answer is whole, as a client does). */
function oneShot(port: number, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(`GET ${path} HTTP/1.1\r\nHost: flocker\r\n\r\n`));
    let raw = Buffer.alloc(0);
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`no whole answer to ${path}: ${raw.toString()}`))), 10_000);
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      raw = Buffer.concat([raw, chunk]);
      const end = raw.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = raw.subarray(0, end).toString("latin1");
      let body = raw.subarray(end + 4);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (length && body.length < Number(length[1])) return;
      if (!length) {
        if (!/\r\ntransfer-encoding: *chunked/i.test(head) || !body.toString("latin1").endsWith("0\r\n\r\n")) return;
        const pieces: Buffer[] = [];
        for (let i = 0;;) {
          const eol = body.indexOf("\r\n", i);
          const size = parseInt(body.subarray(i, eol).toString(), 16);
          if (!size) break;
          pieces.push(body.subarray(eol + 2, eol + 2 + size));
          i = eol + 2 + size + 2;
        }
        body = Buffer.concat(pieces);
      }
      clearTimeout(timer);
      socket.destroy();
      resolve({ status: Number(head.slice(9, 12)), body: body.toString() });
    });
  });
}

const many = (n: number, port: number, path: string) => Promise.all(Array.from({ length: n }, () => oneShot(port, path)));

async function metrics(f: RunningFlocker): Promise<string> {
  const res = await fetch(`${f.url}/_flocker/metrics`);
  return res.text();
}

const sample = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}"/:.]/g, "\\$&")} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);

for (const runtime of RUNTIMES) {
  describe(`front threads (${runtime}, FLOCKER_THREADS=2)`, () => {
    const prefix = uniq(`threads-${runtime}`);
    // The flock's one host is engine 1 behind a TCP relay the test can cut (a network failure).
    let relay: Server;
    let relayPort: number;
    const relayed = new Set<Socket>();
    const startRelay = () =>
      new Promise<void>((resolve) => {
        const [host, port] = testEnv.hosts[0].split(":");
        // Half-open kept both ways, as the CLI's hijacked streams need (its stdin ends first).
        relay = createServer({ allowHalfOpen: true }, (client) => {
          const engine = connect({ port: Number(port), host, allowHalfOpen: true });
          relayed.add(client).add(engine);
          client.pipe(engine).pipe(client);
          const close = () => (client.destroy(), engine.destroy(), relayed.delete(client), relayed.delete(engine));
          client.on("error", close).on("close", close);
          engine.on("error", close).on("close", close);
        });
        relay.listen(relayPort, "127.0.0.1", resolve);
      });
    let f: RunningFlocker;
    let id: string;

    beforeAll(async () => {
      relayPort = await freePort();
      await startRelay();
      f = await startFlocker(runtime, { FLOCKER_HOSTS: `cut=127.0.0.1:${relayPort}`, FLOCKER_THREADS: "2", FLOCKER_PROBE_INTERVAL: "300" });
    });
    afterAll(async () => {
      await f?.stop();
      relay?.close();
      for (const s of relayed) s.destroy();
      await removeContainers(prefix);
    });

    test("both threads listen and serve: routed reads, app answers, _ping and exec answer the same on every connection", async () => {
      // The main thread answers as soon as it listens; the second thread joins once its module loaded.
      const listeners = () => spawnSync("ss", ["-Hltn", `sport = :${f.port}`], { encoding: "utf8" }).stdout.trim().split("\n").length;
      const deadline = Date.now() + 10_000;
      while (listeners() < 2 && Date.now() < deadline) await Bun.sleep(100);
      expect(listeners()).toBe(2);

      const run = await docker(cli, f.dockerHost, ["run", "-d", "--name", `${prefix}-c`, testEnv.image, "sleep", "300"]);
      expect(run.code, run.stderr).toBe(0);
      id = run.stdout.trim();
      expect(id).toMatch(/^[0-9a-f]{64}$/);

      const reads = await many(32, f.port, `/v1.41/containers/${id}/json`);
      for (const r of reads) {
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body).Id).toBe(id);
      }
      for (const r of await many(8, f.port, "/v1.41/containers/json")) {
        expect(r.status).toBe(200);
        expect(JSON.parse(r.body).map((c: { Id: string }) => c.Id)).toContain(id);
      }
      for (const r of await many(8, f.port, "/_ping")) expect(r).toEqual({ status: 200, body: "OK" });
      for (let i = 0; i < 4; i++) {
        const exec = await docker(cli, f.dockerHost, ["exec", `${prefix}-c`, "echo", `hi-${i}`]);
        expect(exec.code, exec.stderr).toBe(0);
        expect(exec.stdout.trim()).toBe(`hi-${i}`);
      }

      // Each thread's requests reach the metrics (the second reports in batches).
      await Bun.sleep(100);
      const text = await metrics(f);
      expect(sample(text, 'flocker_front_connections_total{thread="0"}')).toBeGreaterThan(0);
      expect(sample(text, 'flocker_front_connections_total{thread="1"}')).toBeGreaterThan(0);
      expect(sample(text, 'flocker_requests_total{method="GET",route="/containers/:id/json",status="200"}')).toBeGreaterThanOrEqual(32);
    });

    test("a second flocker on the same port fails with a clear message (SO_REUSEPORT would share it quietly) and leaves nothing behind", async () => {
      const privateDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith("flocker-")).sort();
      const before = privateDirs();
      const cmd = runtime === "bun" ? [join(ROOT, "node_modules/.bin/bun"), "run", "main.ts"] : [join(ROOT, "node_modules/.bin/deno"), "run", "-A", "main.ts"];
      const second = Bun.spawn(cmd, {
        cwd: ROOT,
        env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? "/root", FLOCKER_HOSTS: testEnv.hosts[0], FLOCKER_LISTEN: `127.0.0.1:${f.port}`, FLOCKER_THREADS: "2" },
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => second.kill(), 15_000);
      const code = await second.exited;
      clearTimeout(timer);
      expect(code).toBe(1);
      expect(await new Response(second.stderr).text()).toContain(`flocker: cannot listen on 127.0.0.1:${f.port}: `);
      expect(privateDirs()).toEqual(before); // its private socket directory went with it
    });

    test("a host cut off: the routes every thread kept answer 503 naming it; back, they route again", async () => {
      relay.close();
      for (const s of relayed) s.destroy();
      const deadline = Date.now() + 10_000;
      while (sample(await metrics(f), 'flocker_host_up{host="cut"}') !== 0 && Date.now() < deadline) await Bun.sleep(100);
      for (const r of await many(16, f.port, `/v1.41/containers/${id}/json`)) {
        expect(r.status).toBe(503);
        expect(JSON.parse(r.body).message).toContain("host cut (127.0.0.1:");
      }
      await startRelay();
      let answers: Answer[];
      const back = Date.now() + 15_000;
      do {
        await Bun.sleep(200);
        answers = await many(16, f.port, `/v1.41/containers/${id}/json`);
      } while (answers.some((r) => r.status !== 200) && Date.now() < back);
      for (const r of answers) expect(JSON.parse(r.body).Id).toBe(id);
    });
  });
}
