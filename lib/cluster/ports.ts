/**
 * Host ports a new container publishes (`-p 8080:80`). A host where a running container already
 * publishes one of them would refuse to start it ("port is already allocated"), so such hosts are
 * passed over while another can take it, as Swarm classic's port filter did: `docker run -d -p
 * 8080:80` three times over three hosts runs three containers. When no host has the port free,
 * the choice is left as it was and the engine answers in its own words, as one engine would.
 * The engines list the ports of running containers only, so the ports of a container created but
 * not yet started are claimed here (PortClaims) until its start is answered.
 */
import type { Host } from "./host.ts";
import { fanoutJson } from "../upstream/fanout.ts";

export interface WantedPort {
  /** The host address asked for ("" for all of them). */
  ip: string;
  port: number;
  proto: string;
}

type PortBindings = Record<string, { HostIp?: string; HostPort?: string }[] | null>;

/** A port of a listed container, as `/containers/json` gives it. */
type ListedPort = { IP?: string; PublicPort?: number; Type?: string };

/** The fixed host ports of a create's `HostConfig.PortBindings` (a range or none: the engine picks one). */
export function wantedPorts(hostConfig: unknown): WantedPort[] {
  const wanted: WantedPort[] = [];
  const bindings = (hostConfig as { PortBindings?: PortBindings } | null | undefined)?.PortBindings;
  if (!bindings || typeof bindings !== "object") return wanted;
  for (const [key, list] of Object.entries(bindings)) {
    const proto = key.split("/")[1] || "tcp";
    for (const b of Array.isArray(list) ? list : []) {
      const port = /^\d{1,5}$/.test(b?.HostPort ?? "") ? Number(b.HostPort) : 0;
      if (port > 0) wanted.push({ ip: b.HostIp ?? "", port, proto });
    }
  }
  return wanted;
}

const ANY_ADDRESS = new Set(["", "0.0.0.0", "::"]);

/** Whether a published port takes the wanted one: same port and protocol, on the same or every address. */
export function takes(published: ListedPort, wanted: WantedPort): boolean {
  if (published.PublicPort !== wanted.port || (published.Type ?? "tcp") !== wanted.proto) return false;
  const ip = published.IP ?? "";
  return ANY_ADDRESS.has(ip) || ANY_ADDRESS.has(wanted.ip) || ip === wanted.ip;
}

/** The hosts where no running container publishes a wanted port (a host that does not answer is kept). */
export async function hostsWithPortsFree(hosts: Host[], wanted: WantedPort[]): Promise<Host[]> {
  const publish = [...new Set(wanted.map((w) => `${w.port}/${w.proto}`))];
  const filters = encodeURIComponent(JSON.stringify({ publish }));
  const { answers } = await fanoutJson<{ Ports?: ListedPort[] | null }[]>(hosts, `/containers/json?filters=${filters}`);
  const taken = new Set(
    answers
      .filter(({ status, body }) =>
        status === 200 && Array.isArray(body) && body.some((c) => (c.Ports ?? []).some((p) => wanted.some((w) => takes(p, w))))
      )
      .map((a) => a.host),
  );
  return hosts.filter((h) => !taken.has(h));
}

/** How long a created container's ports stay claimed when it is neither started nor removed. */
const CLAIM_TTL_MS = 60_000;

/**
 * Ports promised to containers created through flocker but not started yet: without them, two
 * creates of `-p 8080:80` a moment apart (`docker create` twice, or two `docker run`s whose
 * starts have not come) would meet on one host and the second start would fail there. Kept in
 * this process (a flocker sharing the store with others does not see theirs).
 */
export class PortClaims {
  #claims = new Map<string, { host: Host; ports: WantedPort[]; until: number }>();

  claim(key: string, host: Host, ports: WantedPort[], now = Date.now()): void {
    this.#claims.set(key, { host, ports, until: now + CLAIM_TTL_MS });
  }

  /** The claim made under `from` (a create in flight) now belongs to the container `to`. */
  rename(from: string, to: string): void {
    const claim = this.#claims.get(from);
    this.#claims.delete(from);
    if (claim) this.#claims.set(to, claim);
  }

  release(key: string): void {
    this.#claims.delete(key);
  }

  /** Whether a live claim on this host takes one of the wanted ports. */
  taken(host: Host, wanted: WantedPort[], now = Date.now()): boolean {
    let hit = false;
    for (const [key, claim] of this.#claims) {
      if (claim.until <= now) this.#claims.delete(key);
      else if (!hit && claim.host === host) {
        hit = claim.ports.some((c) => wanted.some((w) => takes({ IP: c.ip, PublicPort: c.port, Type: c.proto }, w)));
      }
    }
    return hit;
  }
}
