/**
 * Access policy, checked before anything is routed: read-only mode, per-method path allow-lists,
 * and what a new container may ask for. Paths are checked decoded and normalized, so encoding
 * tricks (`%2F`, `..`, `//`) cannot slip past a rule.
 */
import { DockerError } from "../errors.ts";
import { stripApiVersion } from "./version.ts";

export interface Policy {
  /** Only GET and HEAD (and nothing that writes). */
  readOnly?: boolean;
  /** When given, only requests matching one of these pass: method (or `*`) and a path regex. */
  allow?: { method: string; path: RegExp }[];
  /** Refuse containers and execs that ask for `Privileged`. */
  denyPrivileged?: boolean;
  /** Refuse the host's network, pid, ipc, uts or userns namespaces. */
  denyHostNamespaces?: boolean;
  /** When given, bind mounts must lie under one of these directories. */
  allowedBindDirs?: string[];
}

/** Parse `FLOCKER_ALLOW`: comma list of `METHOD:regex`, e.g. `GET:^/containers,POST:^/containers/[^/]+/start$`. */
export function parseAllowList(text: string): { method: string; path: RegExp }[] {
  return text.split(",").map((s) => s.trim()).filter(Boolean).map((rule) => {
    const colon = rule.indexOf(":");
    if (colon <= 0) throw new Error(`expected METHOD:regex, got ${rule}`);
    return { method: rule.slice(0, colon).toUpperCase(), path: new RegExp(rule.slice(colon + 1)) };
  });
}

/** `/v1.41/containers/%2e%2e//x` -> `/containers/../x` resolved -> `/x`. Rejects NUL and bad escapes. */
export function normalizePath(pathname: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    throw new DockerError(400, "malformed path encoding");
  }
  if (decoded.includes("\0")) throw new DockerError(400, "NUL byte in path");
  const out: string[] = [];
  for (const part of decoded.split("/")) {
    if (!part || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return stripApiVersion("/" + out.join("/"));
}

export function checkRequest(policy: Policy, method: string, pathname: string) {
  if (!policy.readOnly && !policy.allow) {
    if (pathname.includes("%")) normalizePath(pathname); // still refuse NUL bytes and broken escapes
    return;
  }
  const path = normalizePath(pathname);
  if (policy.readOnly && method !== "GET" && method !== "HEAD" && method !== "OPTIONS") {
    throw new DockerError(403, `flocker: read-only mode: ${method} ${path} is refused`);
  }
  if (policy.allow && !policy.allow.some((r) => (r.method === "*" || r.method === method) && r.path.test(path))) {
    throw new DockerError(403, `flocker: ${method} ${path} is not in the allow-list`);
  }
}

interface CreateShape {
  HostConfig?: {
    Privileged?: boolean;
    NetworkMode?: string | null;
    PidMode?: string | null;
    IpcMode?: string | null;
    UTSMode?: string | null;
    UsernsMode?: string | null;
    Binds?: string[] | null;
    Mounts?: { Type?: string | null; Source?: string | null }[] | null;
  } | null;
  Privileged?: boolean;
}

/** What a container create (or exec create) may ask for; a refusal says what and why. */
export function checkContainer(policy: Policy, body: CreateShape) {
  const hc = body.HostConfig ?? {};
  if (policy.denyPrivileged && (hc.Privileged || body.Privileged)) {
    throw new DockerError(403, "flocker: policy refuses privileged containers and execs (Privileged: true)");
  }
  if (policy.denyHostNamespaces) {
    for (const [field, value] of [["network", hc.NetworkMode], ["pid", hc.PidMode], ["ipc", hc.IpcMode], ["uts", hc.UTSMode], ["userns", hc.UsernsMode]]) {
      if (value === "host") throw new DockerError(403, `flocker: policy refuses the host's ${field} namespace (--${field}=host)`);
    }
  }
  if (policy.allowedBindDirs) {
    const sources = [
      ...(hc.Binds ?? []).map((b) => b.split(":")[0]).filter((s) => s.startsWith("/")),
      ...(hc.Mounts ?? []).filter((m) => m.Type === "bind" && m.Source).map((m) => m.Source!),
    ];
    for (const source of sources) {
      const path = normalizePath(source);
      const inside = policy.allowedBindDirs.some((dir) => {
        const d = normalizePath(dir);
        return path === d || path.startsWith(d === "/" ? "/" : d + "/");
      });
      if (!inside) {
        throw new DockerError(403, `flocker: policy refuses the bind mount of ${source}: only ${policy.allowedBindDirs.join(", ")} may be mounted`);
      }
    }
  }
}
