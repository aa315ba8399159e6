/**
 * The Bun sockets under the front (lib/adapter/bun/socket.ts): a chunk that only passes from one
 * BunStream to another is released as soon as it is written, and one the kernel could not take at
 * once (queued behind a slow reader) is kept until it has gone out.
 */
import { expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { type BunStream, connectBun, listenBun } from "../../lib/adapter/bun/socket.ts";
import { splice } from "../../lib/adapter/front.ts";

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
