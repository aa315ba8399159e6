/** Which host ports a create asks for, and which published ports take them (lib/cluster/ports.ts). */
import { describe, expect, test } from "bun:test";
import { PortClaims, takes, wantedPorts } from "../../lib/cluster/ports.ts";
import type { Host } from "../../lib/cluster/host.ts";

describe("wantedPorts", () => {
  test("fixed host ports of PortBindings, with address and protocol", () => {
    expect(wantedPorts({
      PortBindings: {
        "80/tcp": [{ HostIp: "", HostPort: "8080" }, { HostIp: "127.0.0.2", HostPort: "8081" }],
        "53/udp": [{ HostPort: "5353" }],
      },
    })).toEqual([
      { ip: "", port: 8080, proto: "tcp" },
      { ip: "127.0.0.2", port: 8081, proto: "tcp" },
      { ip: "", port: 5353, proto: "udp" },
    ]);
  });
  test("a range, no host port (the engine picks one), or nothing usable: none", () => {
    expect(wantedPorts({ PortBindings: { "80/tcp": [{ HostPort: "8000-8010" }, { HostPort: "" }, { HostPort: "0" }] } })).toEqual([]);
    expect(wantedPorts({ PortBindings: { "80/tcp": null } })).toEqual([]);
    expect(wantedPorts(null)).toEqual([]);
    expect(wantedPorts("bogus")).toEqual([]);
    expect(wantedPorts({ PortBindings: "bogus" })).toEqual([]);
  });
});

describe("takes", () => {
  const wanted = { ip: "", port: 8080, proto: "tcp" };
  test("same port and protocol on any address", () => {
    expect(takes({ IP: "0.0.0.0", PublicPort: 8080, Type: "tcp" }, wanted)).toBe(true);
    expect(takes({ IP: "127.0.0.2", PublicPort: 8080, Type: "tcp" }, wanted)).toBe(true);
    expect(takes({ IP: "0.0.0.0", PublicPort: 8080, Type: "udp" }, wanted)).toBe(false);
    expect(takes({ IP: "0.0.0.0", PublicPort: 8081, Type: "tcp" }, wanted)).toBe(false);
  });
  test("two different addresses do not clash", () => {
    const on = { ip: "127.0.0.3", port: 8080, proto: "tcp" };
    expect(takes({ IP: "127.0.0.2", PublicPort: 8080, Type: "tcp" }, on)).toBe(false);
    expect(takes({ IP: "127.0.0.3", PublicPort: 8080, Type: "tcp" }, on)).toBe(true);
    expect(takes({ IP: "::", PublicPort: 8080, Type: "tcp" }, on)).toBe(true);
  });
});

describe("PortClaims", () => {
  const [one, two] = [{ name: "one" }, { name: "two" }] as unknown as Host[];
  const p8080 = [{ ip: "", port: 8080, proto: "tcp" }];
  test("a claim takes its port on its host only, until released, renamed away or expired", () => {
    const claims = new PortClaims();
    claims.claim("pending:1", one, [{ ip: "127.0.0.2", port: 8080, proto: "tcp" }], 0);
    expect(claims.taken(one, p8080, 1)).toBe(true);
    expect(claims.taken(two, p8080, 1)).toBe(false);
    expect(claims.taken(one, [{ ip: "127.0.0.3", port: 8080, proto: "tcp" }], 1)).toBe(false);
    expect(claims.taken(one, [{ ip: "", port: 8080, proto: "udp" }], 1)).toBe(false);
    claims.rename("pending:1", "c1");
    claims.release("pending:1");
    expect(claims.taken(one, p8080, 1)).toBe(true);
    claims.release("c1");
    expect(claims.taken(one, p8080, 1)).toBe(false);
    claims.claim("c2", one, p8080, 0);
    expect(claims.taken(one, p8080, 59_999)).toBe(true);
    expect(claims.taken(one, p8080, 60_000)).toBe(false);
  });
});
