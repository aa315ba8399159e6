/**
 * Runtime glue: HTTP/1.1 on the wire, as the front reads it. Request heads are scanned for the few
 * headers that frame a message (no copy of the head, no header object), and `Framing` follows a
 * message's length or chunked framing to find where it ends, passing its bytes on untouched.
 */
import { STATUS_CODES } from "node:http";

export interface Head {
  method: string;
  target: string;
  contentLength?: string;
  transferEncoding?: string;
  upgrade: boolean;
  connectionClose: boolean;
  /**
   * A framing header sent twice, or a line break that is not CRLF: readers may disagree on where
   * the message ends (smuggling territory), so such a request never takes the fast path.
   */
  ambiguous: boolean;
  /** Bytes of the head, blank line included. */
  length: number;
}

export const EMPTY = Buffer.alloc(0);
// Heads are ASCII; windows-1252 (what "latin1" decodes as) keeps every byte one character.
const latin1 = new TextDecoder("latin1");

/** A web Request for a body-less request head, or undefined when it cannot be one (node:http answers it). */
export function requestOf(buf: Buffer, head: Head, signal: AbortSignal): Request | undefined {
  if (!head.target.startsWith("/")) return undefined;
  try {
    const headers = new Headers();
    for (const line of headerLines(buf, head)) {
      const colon = line.indexOf(":");
      if (colon <= 0) return undefined;
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    // A fixed origin: the Host header is the client's to send, and must not reshape the path
    // ("Host: x/containers/y" would) that the app routes and checks.
    return new Request(`http://localhost${head.target}`, { method: head.method, headers, signal });
  } catch {
    return undefined; // a header or target the Fetch API refuses
  }
}

/** The header lines of a request head, decoded (not for the hot path). */
function headerLines(buf: Buffer, head: Head): string[] {
  return latin1.decode(buf.subarray(0, head.length - 4)).split("\r\n").slice(1);
}

/** A header's value (the first one, trimmed) in a request head; `name` lower-case. */
export function headerValue(buf: Buffer, head: Head, name: string): string | undefined {
  for (const line of headerLines(buf, head)) {
    const colon = line.indexOf(":");
    if (colon > 0 && line.slice(0, colon).trim().toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

/** The status line of an answer flocker writes itself. */
export function statusLine(res: Response): string {
  return `HTTP/1.1 ${res.status} ${res.statusText || STATUS_CODES[res.status] || "Unknown"}`;
}

const BLANK_LINE = Buffer.from("\r\n\r\n");
/** Bun searches buffers natively in ~30 ns; Deno's node:buffer search is slower than a plain loop (measured). */
const NATIVE_SEARCH = "Bun" in globalThis;

const TOKEN_SYMBOLS = new Set([..."!#$%&'*+-.^_`|~"].map((c) => c.charCodeAt(0)));

/**
 * Whether a request may start with this byte: a method's first character, or the stray line break
 * a client may send before a request line. A TLS handshake sent to a plain port starts with 0x16.
 */
export function mayStartRequest(byte: number): boolean {
  const letter = byte | 32;
  return (letter >= 97 && letter <= 122) || (byte >= 48 && byte <= 57) || TOKEN_SYMBOLS.has(byte) || byte === 13 || byte === 10;
}

/** Where an HTTP head ends (the index of its "\r\n\r\n"), or -1. */
export function headEnd(buf: Buffer): number {
  if (NATIVE_SEARCH) return buf.indexOf(BLANK_LINE);
  const last = buf.length - 3;
  for (let i = 0; i < last; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** Bytes of a head as a string, a character each: short ones (header values) without a native call. */
function textOf(buf: Buffer, start: number, end: number): string {
  if (end - start > 32) return buf.toString("latin1", start, end);
  let text = "";
  for (let i = start; i < end; i++) text += String.fromCharCode(buf[i]);
  return text;
}

/** The headers that frame a message, values trimmed and lower-cased (all compare case-insensitively). */
interface FramingHeaders {
  "content-length"?: string;
  "transfer-encoding"?: string;
  upgrade?: string;
  connection?: string;
  /** One of them sent twice, or a bare CR or LF in the head (see Head.ambiguous). */
  ambiguous?: boolean;
}

const FRAMING_NAMES = ["content-length", "transfer-encoding", "upgrade", "connection"] as const;
const FRAMING_BYTES = FRAMING_NAMES.map((name) => Buffer.from(name));

/**
 * Read the framing headers from a head's bytes, from `from` (the start of the first header line)
 * to `end` (its blank line): a scan of the bytes, no copy of the head made.
 */
function framingHeaders(buf: Buffer, from: number, end: number): FramingHeaders {
  const found: FramingHeaders = {};
  for (let line = from; line < end;) {
    // To the line's CR (lines are short: a loop beats a native call each). A bare LF on the way,
    // or a CR without its LF, is a line break another reader may see (Go's does) where we do not.
    let eol = line;
    for (let byte; eol < end && (byte = buf[eol]) !== 13; eol++) if (byte === 10) found.ambiguous = true;
    if (eol < end && buf[eol + 1] !== 10) found.ambiguous = true;
    const first = buf[line] | 32; // lower-cased (every name here is letters and '-')
    if (first === 99 || first === 116 || first === 117) { // c, t, u
      for (let k = 0; k < FRAMING_BYTES.length; k++) {
        const name = FRAMING_BYTES[k];
        const colon = line + name.length;
        if (colon >= eol || buf[colon] !== 58) continue; // ':' right after the name
        let j = 1;
        while (j < name.length && (buf[line + j] | 32) === name[j]) j++;
        if (j < name.length || (buf[line] | 32) !== name[0]) continue;
        const key = FRAMING_NAMES[k];
        if (found[key] !== undefined) found.ambiguous = true;
        found[key] = textOf(buf, colon + 1, eol).trim().toLowerCase();
        break;
      }
    }
    line = eol + 2;
  }
  return found;
}

export function parseHead(buf: Buffer, end: number): Head | undefined {
  // The request line is the one string made; the headers are read from the bytes.
  let lineEnd = 0;
  while (lineEnd < end && buf[lineEnd] !== 13) lineEnd++;
  if (lineEnd < end && buf[lineEnd + 1] !== 10) return undefined; // a bare CR
  const requestLine = textOf(buf, 0, lineEnd);
  const sp1 = requestLine.indexOf(" ");
  const sp2 = requestLine.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || requestLine.slice(sp2 + 1) !== "HTTP/1.1") return undefined;
  const method = requestLine.slice(0, sp1);
  if (!/^[A-Z]+$/.test(method)) return undefined;
  const headers = framingHeaders(buf, lineEnd + 2, end);
  return {
    method,
    target: requestLine.slice(sp1 + 1, sp2),
    contentLength: headers["content-length"],
    transferEncoding: headers["transfer-encoding"],
    upgrade: headers.upgrade !== undefined,
    connectionClose: headers.connection?.includes("close") ?? false,
    ambiguous: headers.ambiguous ?? false,
    length: end + 4,
  };
}

const HOST_LINE = Buffer.from("Host: localhost\r\n");

/**
 * An HTTP/1.0 head without a Host header (HAProxy's `option httpchk` sends `OPTIONS / HTTP/1.0`
 * and nothing else), given one: HTTP/1.0 needs none and dockerd answers it, but the runtimes'
 * node:http refuse a head without it. Any other head is returned as it is.
 */
export function withHost(buf: Buffer, end: number): Buffer {
  const lineEnd = buf.indexOf(13);
  if (lineEnd < 9 || lineEnd > end || buf.toString("latin1", lineEnd - 9, lineEnd) !== " HTTP/1.0") return buf;
  if (/\r\nhost[ \t]*:/i.test(buf.toString("latin1", lineEnd, end + 2))) return buf;
  return Buffer.concat([buf.subarray(0, lineEnd + 2), HOST_LINE, buf.subarray(lineEnd + 2)]);
}

/** Where a chunked message is: in a size line, its extension, the data, the CRLF after it, the trailers. */
const Chunk = { Size: 0, Extension: 1, Data: 2, DataEnd: 3, Trailer: 4 } as const;

/** Where a message ends: by length, by chunked framing, or at close. Bytes pass through untouched. */
export class Framing {
  #headDone = false;
  #head: Buffer = EMPTY;
  #remaining = 0;
  #mode: "length" | "chunked" | "close" | "none" = "none";
  #chunk: number = Chunk.Size;
  /** Hex digits read of the current chunk size; characters on the current trailer line. */
  #digits = 0;
  #lineLength = 0;
  keepAlive = true;
  done = false;
  /** The response's status, once its head is read (0 before). */
  status = 0;

  constructor(private isHead: boolean) {}

  /** The message (a response without length or chunks) ends when its connection does. */
  get untilClose(): boolean {
    return this.#mode === "close";
  }

  /** A request body that follows a head already read. */
  static body(chunked: boolean, length: number): Framing {
    const f = new Framing(false);
    f.#headDone = true;
    f.#mode = chunked ? "chunked" : length > 0 ? "length" : "none";
    f.#remaining = length;
    f.done = f.#mode === "none";
    return f;
  }

  /** Feed bytes; returns how many of them belong to this message (the rest is not ours). */
  feed(chunk: Buffer): number {
    let i = 0;
    while (!this.#headDone) {
      const rest = i ? chunk.subarray(i) : chunk;
      const joined = this.#head.length ? Buffer.concat([this.#head, rest]) : rest;
      const end = headEnd(joined);
      if (end < 0) {
        this.#head = joined === rest ? Buffer.from(rest) : joined; // a copy: the chunk may be a lent buffer
        return chunk.length;
      }
      i += end + 4 - this.#head.length;
      this.#head = EMPTY;
      // An interim answer (100 Continue) passes through; the final head follows it.
      if (!this.#parseHead(joined, end)) continue;
      this.#headDone = true;
      if (this.#mode === "none") {
        this.done = true;
        return i;
      }
    }
    if (this.#mode === "close") return chunk.length;
    if (this.#mode === "length") {
      const take = Math.min(this.#remaining, chunk.length - i);
      this.#remaining -= take;
      if (this.#remaining === 0) this.done = true;
      return i + take;
    }
    return this.#chunked(chunk, i);
  }

  /** Walk chunked framing (sizes, extensions, trailers) without copying or decoding the data. */
  #chunked(chunk: Buffer, i: number): number {
    while (i < chunk.length && !this.done) {
      if (this.#chunk === Chunk.Data) {
        const take = Math.min(this.#remaining, chunk.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#chunk = Chunk.DataEnd;
        continue;
      }
      const byte = chunk[i++];
      switch (this.#chunk) {
        case Chunk.Size: {
          const digit = byte >= 48 && byte <= 57 ? byte - 48 : (byte | 32) >= 97 && (byte | 32) <= 102 ? (byte | 32) - 87 : -1;
          if (digit >= 0 && this.#digits < 12) {
            this.#remaining = this.#remaining * 16 + digit;
            this.#digits++;
          } else if (byte === 59 && this.#digits) this.#chunk = Chunk.Extension; // ';'
          else if ((byte === 13 || byte === 32 || byte === 9) && this.#digits) this.#chunk = Chunk.Extension; // LF follows
          else if (byte === 10 && this.#digits) {
            this.#chunk = Chunk.Extension; // a bare LF ends the size line too
            i--;
          }
          else this.#broken();
          break;
        }
        case Chunk.Extension:
          if (byte !== 10) break;
          this.#digits = 0;
          this.#chunk = this.#remaining === 0 ? Chunk.Trailer : Chunk.Data;
          this.#lineLength = 0;
          break;
        case Chunk.DataEnd: // the CRLF after a chunk's data
          if (byte === 10) this.#chunk = Chunk.Size;
          else if (byte !== 13) this.#broken();
          break;
        case Chunk.Trailer: // trailer lines, then an empty line
          if (byte === 10) {
            if (this.#lineLength === 0) this.done = true;
            this.#lineLength = 0;
          } else if (byte !== 13) this.#lineLength++;
          break;
      }
    }
    return i;
  }

  /** Framing we cannot follow: this message ends here, and so does its connection. */
  #broken() {
    this.keepAlive = false;
    this.done = true;
  }

  /** Read a response head; false for an interim (1xx other than 101) one, which a final head follows. */
  #parseHead(buf: Buffer, end: number): boolean {
    // "HTTP/1.1 200 OK": the status digits sit at fixed places.
    const status = (buf[9] - 48) * 100 + (buf[10] - 48) * 10 + (buf[11] - 48);
    this.status = Number.isInteger(status) && status >= 100 && status <= 999 ? status : 502;
    if (status >= 100 && status < 200 && status !== 101) return false;
    let from = 12; // past "HTTP/1.1 200", to the end of the status line
    while (from < end && buf[from] !== 10) from++;
    const headers = framingHeaders(buf, from + 1, end);
    const cl = headers["content-length"];
    const length = cl === undefined ? undefined : Number(cl);
    const chunked = headers["transfer-encoding"]?.includes("chunked") ?? false;
    if (headers.connection?.includes("close")) this.keepAlive = false;
    if (this.isHead || status === 204 || status === 304 || status === 101) this.#mode = "none";
    else if (chunked) this.#mode = "chunked";
    else if (length !== undefined && Number.isSafeInteger(length) && length >= 0) {
      this.#mode = length > 0 ? "length" : "none";
      this.#remaining = length;
    } else {
      this.#mode = "close";
      this.keepAlive = false;
    }
    return true;
  }
}
