/** A Docker engine of the flock: where it is and how it is doing. */

export type HostState = "healthy" | "unhealthy" | "recovering";

export interface HostAddress {
  /** Name given with `name=address`, or the address itself. */
  name: string;
  /** The address as configured (`127.0.0.1:2375`, `unix:///var/run/docker.sock`, `https://h:2376`). */
  address: string;
  /** Base URL for HTTP requests (`http://127.0.0.1:2375`; `http://localhost` for unix sockets). */
  baseUrl: string;
  /** How to open a raw connection (hijacked streams). */
  dial: { path: string } | { host: string; port: number };
  tls: boolean;
}

export interface HostStatus {
  state: HostState;
  /** API version the engine speaks (from /version), e.g. "1.41". */
  apiVersion?: string;
  /** The oldest API version it still serves (MinAPIVersion), e.g. "1.12". */
  minApiVersion?: string;
  version?: string;
  /** Containers on the engine, all states; kept current between probes by our own creates/removes. */
  containers: number;
  labels: string[];
  lastError?: string;
  lastSeen?: number;
  failures: number;
  /** Not probed again before this time (ms since epoch): backoff while unhealthy. */
  nextProbe?: number;
  drained: boolean;
}

export interface Host extends HostAddress {
  status: HostStatus;
  /** fetch bound to this engine's transport (tcp, unix socket or TLS). */
  fetch: (request: Request) => Promise<Response>;
  /**
   * For questions whose answer is read whole (lists, inspects, probes): a quicker way than
   * `fetch` where the runtime glue has one (kept-alive raw connections). Never for streams.
   */
  ask?: (request: Request) => Promise<Response>;
}

/** Parse one entry of FLOCKER_HOSTS. Throws with a readable message on a bad entry. */
export function parseHostAddress(spec: string): HostAddress {
  const trimmed = spec.trim();
  if (!trimmed) throw new Error("empty host entry");
  let name: string | undefined;
  let address = trimmed;
  const eq = trimmed.indexOf("=");
  if (eq > 0 && !trimmed.slice(0, eq).includes("/")) {
    name = trimmed.slice(0, eq);
    address = trimmed.slice(eq + 1);
  }
  if (address.startsWith("unix://")) {
    const path = address.slice("unix://".length);
    if (!path.startsWith("/")) throw new Error(`unix socket path must be absolute: ${spec}`);
    return { name: name ?? address, address, baseUrl: "http://localhost", dial: { path }, tls: false };
  }
  let tls = false;
  let rest = address;
  if (address.startsWith("https://")) {
    tls = true;
    rest = address.slice(8);
  } else if (address.startsWith("tcp://")) rest = address.slice(6);
  else if (address.startsWith("http://")) rest = address.slice(7);
  rest = rest.replace(/\/+$/, "");
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(rest);
  if (!m) throw new Error(`not a host:port, tcp://, https:// or unix:// address: ${spec}`);
  const port = m[2] ? Number(m[2]) : tls ? 2376 : 2375;
  if (port < 1 || port > 65535) throw new Error(`port out of range: ${spec}`);
  const hostname = m[1];
  const canonical = `${hostname}:${port}`;
  return {
    name: name ?? canonical,
    address: tls ? `https://${canonical}` : canonical,
    baseUrl: `${tls ? "https" : "http"}://${canonical}`,
    dial: { host: hostname.replace(/^\[|\]$/g, ""), port },
    tls,
  };
}

export function newHostStatus(): HostStatus {
  return { state: "recovering", containers: 0, labels: [], failures: 0, drained: false };
}
