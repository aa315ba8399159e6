/**
 * The front's message framing (lib/adapter/http1.ts): it must find where each response or request
 * body ends, byte-exactly, however the bytes are split across reads, so that keep-alive
 * connections stay in step and nothing of the next message is swallowed.
 */
import { describe, expect, test } from "bun:test";
import { Framing, headEnd, mayStartRequest, withHost } from "../../lib/adapter/http1.ts";

const enc = (s: string) => Buffer.from(s, "latin1");

/** Feed `bytes` cut at `cuts`; returns the bytes taken and whether the message ended. */
function feedSplit(framing: Framing, bytes: Buffer, cuts: number[]) {
  let taken = 0;
  let at = 0;
  for (const end of [...cuts, bytes.length]) {
    if (framing.done) break;
    const piece = bytes.subarray(at, end);
    const ours = framing.feed(piece);
    taken += ours;
    if (ours < piece.length) break;
    at = end;
  }
  return { taken, done: framing.done };
}

const NEXT = "HTTP/1.1 200 OK\r\n"; // the start of the next message on the same connection

const responses: [string, string, boolean][] = [
  ["content-length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}", true],
  ["chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n", true],
  ["chunked, extensions and trailers", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;name=x\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n", true],
  ["chunk data holding CRLFs and zeros", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n0\r\n\r\n0\r\n\r\n0\r\n\r\n", true],
  ["no body (204)", "HTTP/1.1 204 No Content\r\nApi-Version: 1.41\r\n\r\n", true],
  ["empty length", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", true],
  ["interim 100 Continue, then the answer", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}", true],
];

describe("Framing of responses", () => {
  for (const [name, text] of responses) {
    test(`${name}: ends exactly, at every split point`, () => {
      const bytes = Buffer.concat([enc(text), enc(NEXT)]);
      for (let cut = 1; cut < bytes.length; cut++) {
        const f = new Framing(false);
        const { taken, done } = feedSplit(f, bytes, [cut]);
        expect(done).toBe(true);
        expect(taken).toBe(text.length);
        expect(f.keepAlive).toBe(true);
      }
      // and one byte at a time
      const f = new Framing(false);
      const { taken } = feedSplit(f, bytes, [...Array(bytes.length).keys()].slice(1));
      expect(taken).toBe(text.length);
    });
  }

  test("after an interim 100 Continue, the message and its status are the final answer's", () => {
    const f = new Framing(false);
    expect(f.feed(enc("HTTP/1.1 100 Continue\r\n\r\n"))).toBe(25);
    expect(f.done).toBe(false);
    const final = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    expect(f.feed(enc(final + NEXT))).toBe(final.length);
    expect(f.done).toBe(true);
    expect(f.status).toBe(201);
  });

  test("the status is read; HEAD responses have no body whatever their length says", () => {
    const f = new Framing(true);
    const text = "HTTP/1.1 404 Not Found\r\nContent-Length: 29\r\n\r\n";
    expect(f.feed(enc(text + NEXT))).toBe(text.length);
    expect(f.done).toBe(true);
    expect(f.status).toBe(404);
  });

  test("no length and no chunking: read until close, the connection is not reused", () => {
    const f = new Framing(false);
    const text = "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\n\r\nsome bytes";
    expect(f.feed(enc(text))).toBe(text.length);
    expect(f.done).toBe(false);
    expect(f.keepAlive).toBe(false);
  });

  test("broken chunk sizes end the message and the connection", () => {
    const f = new Framing(false);
    f.feed(enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"));
    expect(f.done).toBe(true);
    expect(f.keepAlive).toBe(false);
  });

  test("Connection: close is honoured", () => {
    const f = new Framing(false);
    f.feed(enc("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"));
    expect(f.done).toBe(true);
    expect(f.keepAlive).toBe(false);
  });
});

describe("Framing of request bodies", () => {
  test("chunked upload (docker cp in) ends before the next request", () => {
    const body = "8000\r\n" + "x".repeat(0x8000) + "\r\n4\r\nabcd\r\n0\r\n\r\n";
    const bytes = Buffer.concat([enc(body), enc("HEAD /_ping HTTP/1.1\r\n\r\n")]);
    for (const cut of [1, 5, 6, 0x8000, 0x8006, 0x8008, body.length - 2]) {
      const { taken, done } = feedSplit(Framing.body(true, 0), bytes, [cut]);
      expect(done).toBe(true);
      expect(taken).toBe(body.length);
    }
  });

  test("by length", () => {
    const f = Framing.body(false, 5);
    expect(f.feed(enc("hel"))).toBe(3);
    expect(f.feed(enc("loGET"))).toBe(2);
    expect(f.done).toBe(true);
    expect(Framing.body(false, 0).done).toBe(true);
  });
});

test("headEnd finds the blank line, also when it is cut short", () => {
  expect(headEnd(enc("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"))).toBe(23);
  expect(headEnd(enc("GET / HTTP/1.1\r\nHost: x\r\n\r"))).toBe(-1);
  expect(headEnd(enc("GET / HTTP/1.1\r\n\r\n"))).toBe(14);
  expect(headEnd(enc("\r\r\n\r\n"))).toBe(1);
});

describe("mayStartRequest", () => {
  test("a method's first character or a stray line break; not a TLS handshake or binary", () => {
    for (const c of "GPDHOgp0!~\r\n") expect(mayStartRequest(c.charCodeAt(0))).toBe(true);
    for (const b of [0x16, 0x00, 0x80, 0xff, 0x20, 0x3a, 0x7b]) expect(mayStartRequest(b)).toBe(false);
  });
});

describe("withHost", () => {
  const add = (head: string) => withHost(enc(head), head.indexOf("\r\n\r\n")).toString("latin1");
  test("an HTTP/1.0 head without Host gets one; any other head is left as it is", () => {
    expect(add("OPTIONS / HTTP/1.0\r\n\r\n")).toBe("OPTIONS / HTTP/1.0\r\nHost: localhost\r\n\r\n");
    expect(add("GET /_ping HTTP/1.0\r\nUser-Agent: x\r\n\r\n")).toBe("GET /_ping HTTP/1.0\r\nHost: localhost\r\nUser-Agent: x\r\n\r\n");
    for (const kept of ["GET / HTTP/1.0\r\nHOST: a\r\n\r\n", "GET / HTTP/1.0\r\nhost : a\r\n\r\n", "GET / HTTP/1.1\r\n\r\n", "GET /x-HTTP/1.0\r\n\r\n"]) {
      expect(add(kept)).toBe(kept);
    }
  });
});
