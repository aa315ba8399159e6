/**
 * The Bun sockets under the front (lib/adapter/bun/socket.ts): a chunk that only passes from one
 * BunStream to another is released as soon as it is written, and one the kernel could not take at
 * once (queued behind a slow reader) is kept until it has gone out. Engines over TLS are dialled on
 * them too: the engine's certificate is checked, a client certificate shown. A container stream's
 * run of small frames is gathered into fewer reads, its last bytes and end still passed on.
 */
import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BunStream, connectBun, listenBun } from "../../lib/adapter/bun/socket.ts";
import { splice } from "../../lib/adapter/splice.ts";

test("a spliced stream releases each chunk once written, and keeps the ones a slow reader queued", async () => {
  const payload = randomBytes(48 * 1024 * 1024);
  const want = createHash("sha256").update(payload).digest("hex");

  // The far end reads slowly: it pauses often, so the proxy's writes come back short and queue.
  let received = 0;
  const hash = createHash("sha256");
  const done = Promise.withResolvers<void>();
  const sink = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      data(socket, chunk) {
        hash.update(chunk);
        received += chunk.length;
        if (received >= payload.length) return done.resolve();
        socket.pause();
        setTimeout(() => socket.resume(), 1);
      },
    },
  });

  // The proxy: what the client sends goes to the sink through splice(), as a hijacked stream does.
  const seen: Buffer[] = [];
  const proxy = listenBun({ hostname: "127.0.0.1", port: 0 }, (client: BunStream) => {
    client.on("data", (chunk: Buffer) => seen.push(chunk)); // kept here only to look at afterwards
    splice(client, connectBun({ hostname: "127.0.0.1", port: sink.port }));
  });

  const client = await Bun.connect({
    hostname: "127.0.0.1",
    port: proxy.port!,
    socket: { data() {}, drain: (s) => pump(s) },
  });
  let sent = 0;
  const pump = (s: typeof client) => {
    while (sent < payload.length) {
      const n = s.write(payload.subarray(sent, Math.min(payload.length, sent + 1024 * 1024)));
      sent += n;
      if (n === 0) return;
    }
  };
  pump(client);

  await done.promise;
  client.end();
  proxy.stop();
  sink.stop(true);

  expect(received).toBe(payload.length);
  expect(hash.digest("hex")).toBe(want);
  const released = seen.filter((c) => c.length === 0).length;
  const keptWhole = seen.length - released;
  // Most chunks were released at once; the ones that queued behind the slow reader were not (their
  // bytes arrived intact above), so both kinds are there.
  expect(released).toBeGreaterThan(0);
  expect(keptWhole).toBeGreaterThan(0);
});

test("TLS to a server that wants a client certificate: round trip with the right CA; the wrong CA is an error, not a hang", async () => {
  const dir = mkdtempSync(join(tmpdir(), "flk-socktls-"));
  try {
    const sh = (cmd: string) => {
      const r = spawnSync("sh", ["-c", cmd], { cwd: dir });
      if (r.status !== 0) throw new Error(`${cmd}: ${r.stderr}`);
    };
    for (const ca of ["ca", "other"]) sh(`openssl req -x509 -newkey rsa:2048 -nodes -keyout ${ca}-key.pem -out ${ca}.pem -days 1 -subj /CN=${ca} 2>/dev/null`);
    writeFileSync(join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    writeFileSync(join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
    for (const who of ["server", "client"]) {
      sh(`openssl req -newkey rsa:2048 -nodes -keyout ${who}-key.pem -out ${who}.csr -subj /CN=${who} 2>/dev/null`);
      sh(`openssl x509 -req -in ${who}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out ${who}.pem -days 1 -extfile ${who}.ext 2>/dev/null`);
    }
    const pem = (f: string) => readFileSync(join(dir, f), "utf8");
    // An echo server that, like dockerd --tlsverify, refuses clients without a certificate it signed.
    const server = listenBun({ hostname: "127.0.0.1", port: 0 }, (s: BunStream) => {
      s.on("data", (chunk: Buffer) => s.write(Buffer.from(chunk)));
      s.on("end", () => s.end());
    }, false, { cert: pem("server.pem"), key: pem("server-key.pem"), ca: pem("ca.pem") });
    const address = { hostname: "127.0.0.1", port: server.port! };
    const talk = (tls: { ca?: string; cert?: string; key?: string }) =>
      new Promise<{ echoed: number; error?: Error }>((resolve) => {
        const payload = randomBytes(4 * 1024 * 1024);
        const s = connectBun(address, tls);
        let echoed = 0;
        let error: Error | undefined;
        s.on("data", (chunk: Buffer) => (echoed += chunk.length));
        s.on("error", (err: Error) => (error = err));
        s.on("end", () => s.end());
        s.on("close", () => resolve({ echoed, error }));
        s.write(payload); // before the handshake: queued until it is done
        s.end();
      });
    const good = await talk({ ca: pem("ca.pem"), cert: pem("client.pem"), key: pem("client-key.pem") });
    expect(good.error).toBeUndefined();
    expect(good.echoed).toBe(4 * 1024 * 1024);
    const wrongCa = await talk({ ca: pem("other.pem"), cert: pem("client.pem"), key: pem("client-key.pem") });
    expect(wrongCa.echoed).toBe(0);
    expect(String(wrongCa.error)).toMatch(/verify|certificate|UNABLE/i);
    server.stop();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a container stream's small frames are gathered into fewer reads; the last one, after a pause, still arrives, then the end", async () => {
  const FRAMES = 400;
  const frame = (i: number) => Buffer.alloc(4096, i % 251);
  const want = createHash("sha256");
  for (let i = 0; i < FRAMES; i++) want.update(frame(i));
  want.update("tail");
  // The engine: 4 KB frames one loop turn apart (each its own packet), then a pause, a last
  // small write and its end, as a container's output that stops.
  const engine = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        let i = 0;
        const next = () => {
          if (i < FRAMES) {
            socket.write(frame(i++));
            return void setImmediate(next);
          }
          setTimeout(() => {
            socket.write("tail");
            socket.end();
          }, 50);
        };
        next();
      },
      data() {},
    },
  });
  let reads = 0;
  const proxy = listenBun({ hostname: "127.0.0.1", port: 0 }, (client: BunStream) => {
    const upstream = connectBun({ hostname: "127.0.0.1", port: engine.port });
    upstream.on("data", () => reads++);
    splice(client, upstream, true);
  });
  const got = createHash("sha256");
  let received = 0;
  const ended = Promise.withResolvers<void>();
  await Bun.connect({
    hostname: "127.0.0.1",
    port: proxy.port!,
    socket: {
      data(_s, chunk) {
        got.update(chunk);
        received += chunk.length;
      },
      end: () => ended.resolve(),
      close: () => ended.resolve(),
    },
  });
  await ended.promise;
  proxy.stop();
  engine.stop(true);
  expect(received).toBe(FRAMES * 4096 + 4);
  expect(got.digest("hex")).toBe(want.digest("hex"));
  // Frame by frame this would be ~FRAMES reads.
  expect(reads).toBeLessThan(FRAMES / 2);
});
