/**
 * The app's questions to engines over kept-alive raw connections (lib/adapter/engine-ask.ts). Real
 * engines cover the usual answers end to end (probes, `ps`, inspects); this stub engine makes the
 * ones a real engine seldom gives: interim heads, answers that end with their connection, a kept
 * connection closed under a new question, an answer cut short, one that never comes.
 */
import { afterAll, expect, test } from "bun:test";
import net from "node:net";
import { runtimeHostAsk } from "../../lib/adapter/engine-ask.ts";
import { parseHostAddress } from "../../lib/cluster/host.ts";

/** What the stub does with each request it reads, by path. */
type Behaviour = (socket: net.Socket, head: string) => void;
const behaviours: Record<string, Behaviour> = {
  "/chunked": (s) =>
    s.write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5;ext=1\r\n[1,2,\r\n3\r\n3,4\r\n1\r\n]\r\n0\r\nX-Trailer: t\r\n\r\n"),
  "/untilclose": (s) => s.end("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"),
  "/cut": (s) => s.end("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"),
  "/never": () => {},
  "/head": (s) => s.write("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n"),
  "/echo": (s, head) => {
    const body = JSON.stringify(head.split("\r\n").slice(1).filter(Boolean));
    s.write(`HTTP/1.1 201 Created\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  },
};
/** Requests seen per connection (the connections the client opened). */
const connections: string[][] = [];
/** Close a kept connection instead of answering its next question, once. */
let dropNextReused = false;

const server = net.createServer((socket) => {
  const seen: string[] = [];
  connections.push(seen);
  let buf = "";
  socket.on("data", (chunk) => {
    buf += chunk.toString("latin1");
    for (let end; (end = buf.indexOf("\r\n\r\n")) >= 0;) {
      const head = buf.slice(0, end);
      const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      buf = buf.slice(end + 4 + length);
      const path = head.split(" ")[1];
      seen.push(path);
      if (dropNextReused && seen.length > 1) {
        dropNextReused = false;
        return void socket.destroy();
      }
      (behaviours[path] ?? ((s: net.Socket) => s.write("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")))(socket, head);
    }
  });
  socket.on("error", () => {});
});
await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
const port = (server.address() as net.AddressInfo).port;
const ask = runtimeHostAsk()(parseHostAddress(`127.0.0.1:${port}`));
const url = (path: string) => `http://127.0.0.1:${port}${path}`;

afterAll(() => void server.close());

test("a chunked answer after an interim head: de-chunked, and its connection kept for the next question", async () => {
  const before = connections.length;
  const res = await ask(new Request(url("/chunked")));
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("application/json");
  expect(res.headers.has("transfer-encoding")).toBe(false);
  expect(await res.json()).toEqual([1, 2, 3, 4]);
  const again = await ask(new Request(url("/chunked")));
  expect(await again.json()).toEqual([1, 2, 3, 4]);
  expect(connections.length).toBe(before + 1);
});

test("the request goes out with its headers and body, as fetch would send it", async () => {
  const res = await ask(new Request(url("/echo"), { method: "POST", body: '{"a":1}', headers: { "content-type": "application/json", "x-registry-auth": "abc" } }));
  expect(res.status).toBe(201);
  expect(res.statusText).toBe("Created");
  const headers = (await res.json()) as string[];
  expect(headers).toContain("content-type: application/json");
  expect(headers).toContain("x-registry-auth: abc");
  expect(headers).toContain("Content-Length: 7");
  expect(headers).toContain("Accept-Encoding: identity");
  expect(headers).toContain(`Host: 127.0.0.1:${port}`);
  // A POST without a body says so (engines wait for a body otherwise).
  const empty = (await (await ask(new Request(url("/echo"), { method: "POST" }))).json()) as string[];
  expect(empty).toContain("Content-Length: 0");
});

test("an answer without length ends with its connection", async () => {
  const res = await ask(new Request(url("/untilclose")));
  expect(await res.text()).toBe("all of it");
});

test("HEAD: the head only, though it names a length", async () => {
  const res = await ask(new Request(url("/head"), { method: "HEAD" }));
  expect(res.status).toBe(200);
  expect(res.headers.get("content-length")).toBe("42");
  expect(await res.text()).toBe("");
});

test("a kept connection the engine closed under a new question: asked again on a fresh one", async () => {
  await ask(new Request(url("/chunked"))); // a kept connection now exists
  dropNextReused = true;
  const before = connections.length;
  const res = await ask(new Request(url("/chunked")));
  expect(await res.json()).toEqual([1, 2, 3, 4]);
  expect(dropNextReused).toBe(false); // the kept one was closed under it...
  expect(connections.length).toBe(before + 1); // ...and the question went again on a new one
});

test("an answer cut short is an error, not a short body", async () => {
  await expect(ask(new Request(url("/cut")))).rejects.toThrow("connection closed before the whole answer");
});

test("an answer that never comes: the request's deadline ends it, and the next question still gets through", async () => {
  const err = await ask(new Request(url("/never"), { signal: AbortSignal.timeout(150) })).catch((e) => e);
  expect((err as Error).name).toBe("TimeoutError");
  const res = await ask(new Request(url("/chunked")));
  expect(await res.json()).toEqual([1, 2, 3, 4]);
});

test("an engine that is not there: a connection error", async () => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, "127.0.0.1", r));
  const deadPort = (closed.address() as net.AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const dead = runtimeHostAsk()(parseHostAddress(`127.0.0.1:${deadPort}`));
  await expect(dead(new Request(`http://127.0.0.1:${deadPort}/x`))).rejects.toThrow();
});
