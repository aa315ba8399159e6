/** Placement of compose projects, volumes and networks (lib/cluster/placement.ts), without engines. */
import { describe, expect, test } from "bun:test";
import { claimFor, networkIdKey, pinKey, placementOf, projectKey } from "../../lib/cluster/placement.ts";
import { newHostStatus, parseHostAddress, type Host } from "../../lib/cluster/host.ts";
import { MemoryStore } from "../../lib/store/memory.ts";
import type { FlockerContext } from "../../lib/context.ts";

const host = (address: string): Host => ({
  ...parseHostAddress(address),
  status: { ...newHostStatus(), state: "healthy" },
  fetch: () => Promise.reject(new Error("no network in unit tests")),
});

function fakeCtx() {
  const hosts = [host("h1:1"), host("h2:1"), host("h3:1")];
  const store = new MemoryStore();
  const ctx = {
    store,
    cluster: { byName: (n: string) => hosts.find((h) => h.name === n) },
    locator: { container: () => Promise.reject(new Error("no containers")) },
  } as unknown as FlockerContext;
  return { ctx, hosts, store };
}

const service = (project: string, networks: string[], volumes: string[] = []) => ({
  Image: "busybox",
  Labels: { "com.docker.compose.project": project },
  HostConfig: { NetworkMode: networks[0], Binds: volumes.map((v) => `${v}:/data:rw`) },
  NetworkingConfig: { EndpointsConfig: Object.fromEntries(networks.map((n) => [n, {}])) },
});

describe("compose projects", () => {
  test("concurrent creates of one project, placed apart by the strategy, end on one host", async () => {
    const { ctx, hosts, store } = fakeCtx();
    // Two services on different networks, created in parallel (compose does), chosen h1 and h2.
    const a = service("p", ["p_front"]);
    const b = service("p", ["p_back"]);
    const [pa, pb] = await Promise.all([placementOf(ctx, a), placementOf(ctx, b)]);
    const [ha, hb] = await Promise.all([claimFor(ctx, pa, hosts[0]), claimFor(ctx, pb, hosts[1])]);
    expect(ha.name).toBe(hb.name);
    expect(await store.get(pinKey("net", "p_front"))).toBe(ha.name);
    expect(await store.get(pinKey("net", "p_back"))).toBe(ha.name);
    // A third service on both networks finds them together.
    const c = await placementOf(ctx, service("p", ["p_front", "p_back"]));
    expect(c.pinned?.host.name).toBe(ha.name);
  });

  test("a concrete resource's pin beats the project's; a project pin alone places its containers", async () => {
    const { ctx, store } = fakeCtx();
    await store.set(projectKey("p"), "h1:1");
    expect((await placementOf(ctx, service("p", ["p_default"]))).pinned?.host.name).toBe("h1:1");
    await store.set(pinKey("vol", "shared"), "h3:1");
    expect((await placementOf(ctx, service("p", ["p_default"], ["shared"]))).pinned?.host.name).toBe("h3:1");
  });

  test("different projects are placed independently", async () => {
    const { ctx, hosts } = fakeCtx();
    const h1 = await claimFor(ctx, await placementOf(ctx, service("one", ["one_default"])), hosts[0]);
    const p2 = await placementOf(ctx, service("two", ["two_default"]));
    expect(p2.pinned).toBeUndefined();
    expect((await claimFor(ctx, p2, hosts[2])).name).not.toBe(h1.name);
  });
});

test("a network given by one host's id is sent by name (each host's copy has its own id)", async () => {
  const { ctx, store } = fakeCtx();
  await store.set(networkIdKey("abc123"), "mynet");
  await store.set(pinKey("net", "mynet"), "h2:1");
  const body = service("", ["abc123"]);
  body.Labels = {} as typeof body.Labels;
  const p = await placementOf(ctx, body);
  expect(p.pinned?.host.name).toBe("h2:1");
  expect(body.HostConfig.NetworkMode).toBe("mynet");
  expect(Object.keys(body.NetworkingConfig.EndpointsConfig)).toEqual(["mynet"]);
});
