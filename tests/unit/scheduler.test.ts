import { describe, expect, test } from "bun:test";
import { rankHosts } from "../../lib/cluster/scheduler.ts";
import { newHostStatus, parseHostAddress, type Host } from "../../lib/cluster/host.ts";
import { parseConstraints, satisfies } from "../../lib/cluster/constraints.ts";

const host = (address: string, containers: number, labels: string[] = []): Host => ({
  ...parseHostAddress(address),
  status: { ...newHostStatus(), state: "healthy", containers, labels },
  fetch: () => Promise.reject(new Error("no network in unit tests")),
});
const none = { holdsImage: () => false };

describe("strategies", () => {
  const hosts = [host("h1:1", 5), host("h2:1", 1), host("h3:1", 3)];

  test("spread picks the emptiest host", () => {
    expect(rankHosts(hosts, "spread", none)[0].name).toBe("h2:1");
  });
  test("binpack picks the fullest host", () => {
    expect(rankHosts(hosts, "binpack", none)[0].name).toBe("h1:1");
  });
  test("round-robin cycles through every host", () => {
    const firsts = new Set(Array.from({ length: 3 }, () => rankHosts(hosts, "round-robin", none)[0].name));
    expect(firsts.size).toBe(3);
  });
  test("random reaches every host", () => {
    const firsts = new Set(Array.from({ length: 200 }, () => rankHosts(hosts, "random", none)[0].name));
    expect(firsts.size).toBe(3);
  });
  test("image affinity wins among equals but not against a clearly emptier host", () => {
    const equal = [host("a:1", 2), host("b:1", 2)];
    const holdsB = { holdsImage: (h: Host) => h.name === "b:1" };
    for (let i = 0; i < 20; i++) expect(rankHosts(equal, "spread", holdsB)[0].name).toBe("b:1");
    const uneven = [host("a:1", 0), host("b:1", 5)];
    expect(rankHosts(uneven, "spread", holdsB)[0].name).toBe("a:1");
  });
});

describe("constraints", () => {
  test("parse from Env and swarm labels", () => {
    const rules = parseConstraints({
      Env: ["constraint:node==h1:1", "PATH=/bin", "affinity:container==web"],
      Labels: { "com.docker.swarm.constraints": '["storage!=hdd"]' },
    });
    expect(rules.map((r) => r.text)).toEqual(["constraint:node==h1:1", "affinity:container==web", "constraint:storage!=hdd"]);
  });
  test("node name, address, labels, globs, negation", () => {
    const h = { ...host("fast=h1:1", 0, ["storage=ssd", "zone=eu-west-1"]) };
    const [byName, byAddr, label, glob, not] = parseConstraints({
      Env: ["constraint:node==fast", "constraint:node==h1:1", "constraint:storage==ssd", "constraint:zone==eu-*", "constraint:node!=fast"],
    });
    expect([byName, byAddr, label, glob].every((c) => satisfies(h, c))).toBe(true);
    expect(satisfies(h, not)).toBe(false);
  });
  test("soft rules (==~, !=~) and /regular expressions/", () => {
    const h = { ...host("fast=h1:1", 0, ["zone=eu-west-1"]) };
    const [soft, softNot, re, reNot] = parseConstraints({
      Env: ["constraint:zone==~us-*", "affinity:container!=~web", "constraint:node==/^fa.t$/", "constraint:zone!=/^eu-/"],
    });
    expect([soft.soft, softNot.soft, re.soft]).toEqual([true, true, false]);
    expect([soft.value, softNot.value, softNot.negate]).toEqual(["us-*", "web", true]);
    expect(satisfies(h, soft)).toBe(false);
    expect(satisfies(h, re)).toBe(true);
    expect(satisfies(h, reNot)).toBe(false);
    // Not a regular expression: said (a 400), not taken for a rule no host satisfies.
    expect(() => parseConstraints({ Env: ["constraint:node==~/(/"] })).toThrow("invalid regular expression in constraint:node==~/(/");
  });
});
