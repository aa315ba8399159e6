/**
 * Runtime glue: how `fetch` reaches an engine. TCP is plain `fetch`; unix sockets and client
 * certificates need each runtime's own option (Bun: `unix`/`tls`; Deno: `Deno.createHttpClient`).
 */
import type { HostAddress } from "../cluster/host.ts";
import type { HostFetchFactory } from "../cluster/cluster.ts";

export interface EngineTls {
  ca?: string;
  cert?: string;
  key?: string;
}

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

/**
 * fetch would ask for gzip by itself, and engines do compress (archives, exports, saves): costly
 * on both ends and pointless on a LAN. Ask for the bytes as they are, as the docker CLI does.
 */
function identity(send: (request: Request) => Promise<Response>) {
  return (request: Request) => {
    if (!request.headers.has("accept-encoding")) request.headers.set("accept-encoding", "identity");
    return send(request);
  };
}

export function runtimeHostFetch(tls?: EngineTls): HostFetchFactory {
  return (address: HostAddress) => identity(hostFetch(address, tls));
}

function hostFetch(address: HostAddress, tls?: EngineTls): (request: Request) => Promise<Response> {
  const unixPath = "path" in address.dial ? address.dial.path : undefined;
  if (runtime.Deno && (unixPath || (address.tls && tls))) {
    const client = runtime.Deno.createHttpClient({
      ...(unixPath ? { proxy: { transport: "unix", path: unixPath } } : {}),
      ...(address.tls && tls ? { caCerts: tls.ca ? [tls.ca] : undefined, cert: tls.cert, key: tls.key } : {}),
    });
    return (request: Request) => fetch(request, { client } as RequestInit);
  }
  if (runtime.Bun && (unixPath || (address.tls && tls))) {
    const extra = {
      ...(unixPath ? { unix: unixPath } : {}),
      ...(address.tls && tls ? { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {}),
    };
    return (request: Request) => fetch(request, extra as RequestInit);
  }
  if (unixPath) throw new Error(`unix socket hosts need Bun or Deno (host ${address.address})`);
  return (request: Request) => fetch(request);
}
