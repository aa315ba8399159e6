/** Forward one request to one engine, streaming both bodies. The only path every route shares. */
import { proxy } from "hono/proxy";
import type { Host } from "../cluster/host.ts";
import { errorResponse } from "../errors.ts";

export interface ForwardOptions {
  /** Path and query to send (default: the incoming request's, API version prefix kept). */
  path?: string;
  /** Replacement body (e.g. a create body changed by the allocate hook). */
  body?: BodyInit | null;
  headers?: Record<string, string | undefined>;
  method?: string;
}

export function pathAndQuery(request: Request): string {
  const url = request.url;
  const start = url.indexOf("/", url.indexOf("//") + 2);
  return start < 0 ? "/" : url.slice(start);
}

/** The engine each client request was forwarded to (null: to several), for its log line. */
export const upstreamHost = new WeakMap<Request, Host | null>();

export async function forward(host: Host, request: Request, options: ForwardOptions = {}): Promise<Response> {
  const seen = upstreamHost.get(request);
  upstreamHost.set(request, seen === undefined || seen === host ? host : null);
  // A host the probes found dead fails fast and says so, instead of hanging the client.
  if (host.status.state === "unhealthy") return hostDown(host);
  const target = host.baseUrl + (options.path ?? pathAndQuery(request));
  const init: Parameters<typeof proxy>[1] = { raw: request, customFetch: host.fetch };
  // Some runtimes give every POST a (possibly empty) body stream; engines refuse a body where none
  // is allowed (`start`), so send one only when the client did.
  if (options.body === undefined && request.body && !hasBody(request)) options = { ...options, body: null };
  if (options.body !== undefined || options.headers) {
    // hono/proxy strips hop-by-hop headers only from `raw`; a replaced set is stripped the same way here.
    const headers: Record<string, string | undefined> = { connection: undefined, upgrade: undefined, ...options.headers };
    if (options.body !== undefined) {
      init.body = options.body;
      (init as { duplex?: string }).duplex = undefined;
      headers["content-length"] = undefined;
    }
    init.headers = { ...Object.fromEntries(request.headers), ...headers };
  }
  if (options.method) init.method = options.method;
  try {
    return await proxy(target, init);
  } catch (err) {
    if (request.signal?.aborted) return errorResponse(499, "client closed request");
    return unreachable(host, err);
  }
}

/**
 * To whichever healthy engine comes first: calls any engine answers alike (/auth, registry
 * metadata), and refusals of what no host has, in an engine's own words for that call.
 */
export function forwardToAnyHealthy(hosts: Host[], request: Request): Promise<Response> {
  if (!hosts.length) return Promise.resolve(errorResponse(503, "flocker: no Docker host is reachable"));
  return forward(hosts[0], request);
}

export function hasBody(request: Request): boolean {
  const length = request.headers.get("content-length");
  return length ? length !== "0" : request.headers.has("transfer-encoding");
}

export function hostDown(host: Host): Response {
  return errorResponse(503, `flocker: host ${host.name} (${host.address}) is unhealthy: ${host.status.lastError ?? "not answering"}`);
}

export function unreachable(host: Host, err: unknown): Response {
  const reason = err instanceof Error ? err.message : String(err);
  return errorResponse(502, `flocker: host ${host.name} (${host.address}) is unreachable: ${reason}`);
}

/** Send a small request to an engine and read its JSON, with a deadline for the whole exchange. */
export async function requestJson<T = unknown>(
  host: Host,
  path: string,
  init: { method?: string; body?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ status: number; body: T; headers: Headers }> {
  const signal = init.timeoutMs ? AbortSignal.timeout(init.timeoutMs) : undefined;
  const headers: Record<string, string> = { ...init.headers };
  if (init.body !== undefined) headers["content-type"] ??= "application/json";
  const res = await (host.ask ?? host.fetch)(
    new Request(host.baseUrl + path, { method: init.method ?? "GET", body: init.body, headers, signal }),
  );
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch { /* a non-JSON body (e.g. "OK") is returned as text */ }
  return { status: res.status, body: body as T, headers: res.headers };
}
