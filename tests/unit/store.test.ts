// The routing store contract (lib/store/types.ts), run against every implementation:
// the in-memory default, Redis (the test bed's real redis-server, FLOCKER_TEST_REDIS) and the
// user's own get/set/delete hooks over a plain object. Run through scripts/test.sh.
import { afterAll, describe, expect, test } from "bun:test";
import Redis from "ioredis";
import { MemoryStore } from "../../lib/store/memory.ts";
import { DEFAULT_REDIS_PREFIX, RedisStore } from "../../lib/store/redis.ts";
import { HookStore, type StoreHooks } from "../../lib/store/hooks.ts";
import { StoreUnavailableError, type Store } from "../../lib/store/types.ts";
import { loadConfig } from "../../lib/config.ts";

function redisUrl(): string {
  const url = process.env.FLOCKER_TEST_REDIS;
  if (!url) {
    throw new Error(
      "FLOCKER_TEST_REDIS is not set: run the tests through `npm test` (scripts/test.sh), or `source $FLOCKER_TEST_DIR/env` after `scripts/cluster.sh up`",
    );
  }
  return url;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const uniq = (base: string) => `${base}-${Math.random().toString(36).slice(2, 10)}`;

/** A plain object behind the user's hooks; records what the hooks were given. */
function objectHooks() {
  const data: Record<string, string> = {};
  const ttls: Record<string, number | undefined> = {};
  const hooks: StoreHooks = {
    get: async (key) => data[key],
    set: async (key, value, ttlSeconds) => {
      data[key] = value;
      ttls[key] = ttlSeconds;
    },
    delete: async (key) => {
      delete data[key];
    },
  };
  return { data, ttls, hooks };
}

const opened: Store[] = [];
afterAll(async () => {
  for (const s of opened) await s.close?.();
});

const implementations: { name: string; make: () => Store }[] = [
  { name: "memory", make: () => new MemoryStore() },
  {
    name: "redis",
    make: () => {
      const s = new RedisStore(redisUrl(), { prefix: uniq("flocker-test") + ":" });
      opened.push(s);
      return s;
    },
  },
  { name: "hooks (plain object)", make: () => new HookStore(objectHooks().hooks) },
];

for (const { name, make } of implementations) {
  describe(`store contract: ${name}`, () => {
    test("get of a missing key is null", async () => {
      const s = make();
      expect(await s.get("ctr:nothing")).toBeNull();
    });

    test("set, get, overwrite, delete", async () => {
      const s = make();
      await s.set("ctr:abc", "host-1\tweb");
      expect(await s.get("ctr:abc")).toBe("host-1\tweb");
      await s.set("ctr:abc", "host-2\tweb");
      expect(await s.get("ctr:abc")).toBe("host-2\tweb");
      await s.delete("ctr:abc");
      expect(await s.get("ctr:abc")).toBeNull();
      await s.delete("ctr:abc"); // deleting a missing key is fine
    });

    test("keys and values of any shape survive (colons, slashes, tabs, pipes, unicode)", async () => {
      const s = make();
      const key = "want:127.0.0.1:5000/flocker/busybox:latest:127.0.0.1:2401";
      const value = "a|b\tc:d/é ☃ 1700000000|x";
      await s.set(key, value);
      expect(await s.get(key)).toBe(value);
      expect(await s.get("want:127.0.0.1:5000/flocker/busybox:latest")).toBeNull();
    });

    test("an entry set with a TTL disappears after it", async () => {
      const s = make();
      await s.set("want:x:h1", "pending", 1);
      await s.set("ctr:keep", "h1\t");
      expect(await s.get("want:x:h1")).toBe("pending");
      await sleep(1600);
      expect(await s.get("want:x:h1")).toBeNull();
      expect(await s.get("ctr:keep")).toBe("h1\t"); // no TTL: stays
    });

    test("set without TTL replaces an entry that had one (it no longer expires)", async () => {
      const s = make();
      await s.set("name:web", "pending:1", 1);
      await s.set("name:web", "abc");
      await sleep(1600);
      expect(await s.get("name:web")).toBe("abc");
    });

    test("setIfAbsent sets only when absent, and never overwrites", async () => {
      const s = make();
      expect(await s.setIfAbsent("name:db", "pending:a", 60)).toBe(true);
      expect(await s.setIfAbsent("name:db", "pending:b", 60)).toBe(false);
      expect(await s.get("name:db")).toBe("pending:a");
      await s.delete("name:db");
      expect(await s.setIfAbsent("name:db", "pending:c")).toBe(true);
      expect(await s.get("name:db")).toBe("pending:c");
    });

    test("setIfAbsent succeeds again once the holder's TTL ran out", async () => {
      const s = make();
      expect(await s.setIfAbsent("name:t", "pending:a", 1)).toBe(true);
      expect(await s.setIfAbsent("name:t", "pending:b", 1)).toBe(false);
      await sleep(1600);
      expect(await s.setIfAbsent("name:t", "pending:c", 60)).toBe(true);
      expect(await s.get("name:t")).toBe("pending:c");
    });

    test("setIfAbsent is atomic: of 50 concurrent callers exactly one wins", async () => {
      const s = make();
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => s.setIfAbsent("name:race", `pending:${i}`, 60)),
      );
      const winners = results.flatMap((ok, i) => (ok ? [i] : []));
      expect(winners.length).toBe(1);
      expect(await s.get("name:race")).toBe(`pending:${winners[0]}`);
    });
  });
}

describe("redis store specifics", () => {
  test(`keys live under the prefix, "${DEFAULT_REDIS_PREFIX}" by default`, async () => {
    const raw = new Redis(redisUrl());
    const key = uniq("ctr:default-prefix");
    const s = new RedisStore(redisUrl());
    opened.push(s);
    try {
      expect(s.prefix).toBe("flocker:");
      await s.set(key, "h1\tweb");
      expect(await raw.get(`flocker:${key}`)).toBe("h1\tweb");
      expect(await raw.get(key)).toBeNull();
      await s.set(`${key}:ttl`, "pending", 30);
      const ttl = await raw.ttl(`flocker:${key}:ttl`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(30);
      await s.delete(key);
      await s.delete(`${key}:ttl`);
      expect(await raw.exists(`flocker:${key}`)).toBe(0);
    } finally {
      raw.disconnect();
    }
  });

  test("a custom prefix namespaces the keys; two stores with one prefix share them", async () => {
    const raw = new Redis(redisUrl());
    const p1 = uniq("fa") + ":";
    const p2 = uniq("fb") + ":";
    const a = new RedisStore(redisUrl(), { prefix: p1 });
    const a2 = new RedisStore(redisUrl(), { prefix: p1 }); // a second flocker process, same Redis
    const b = new RedisStore(redisUrl(), { prefix: p2 });
    opened.push(a, a2, b);
    try {
      await a.set("ctr:1", "h1\t");
      expect(await raw.get(`${p1}ctr:1`)).toBe("h1\t");
      expect(await a2.get("ctr:1")).toBe("h1\t");
      expect(await b.get("ctr:1")).toBeNull();
      // A reservation made through one process is seen, and refused, by the other.
      expect(await a2.setIfAbsent("name:web", "pending:x", 60)).toBe(true);
      expect(await a.setIfAbsent("name:web", "pending:y", 60)).toBe(false);
      expect(await b.setIfAbsent("name:web", "pending:z", 60)).toBe(true);
      await raw.del(`${p1}ctr:1`, `${p1}name:web`, `${p2}name:web`);
    } finally {
      raw.disconnect();
    }
  });

  test("concurrent setIfAbsent from two connections: exactly one wins", async () => {
    const prefix = uniq("fc") + ":";
    const a = new RedisStore(redisUrl(), { prefix });
    const b = new RedisStore(redisUrl(), { prefix });
    opened.push(a, b);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).setIfAbsent("name:shared", `pending:${i}`, 60)),
    );
    expect(results.filter(Boolean).length).toBe(1);
    await a.delete("name:shared");
  });

  test("calls made right after construction wait for the connection (the routing rebuild at start)", async () => {
    const s = new RedisStore(redisUrl(), { prefix: uniq("fd") + ":" });
    opened.push(s);
    expect((await s.redis).status).not.toBe("ready");
    const results = await Promise.all([s.set("ctr:a", "h1\t"), s.setIfAbsent("name:a", "x"), s.get("ctr:none")]);
    expect(results.slice(1)).toEqual([true, null]);
    expect(await s.get("ctr:a")).toBe("h1\t");
    await s.delete("ctr:a");
    await s.delete("name:a");
  });

  test("an unreachable Redis fails fast with StoreUnavailableError (answered as 503)", async () => {
    const s = new RedisStore("redis://127.0.0.1:1");
    opened.push(s);
    const started = Date.now();
    const err = await s.get("ctr:x").catch((e) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(String(err.message)).toContain("redis");
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe("hook store specifics", () => {
  test("TTLs are passed to the hooks and enforced even by a plain object that cannot expire", async () => {
    const { data, ttls, hooks } = objectHooks();
    const s = new HookStore(hooks);
    await s.set("want:img:h1", "pending", 1);
    await s.set("ctr:1", "h1\t");
    expect(ttls["want:img:h1"]).toBe(1);
    expect(ttls["ctr:1"]).toBeUndefined();
    expect(Object.keys(data).sort()).toEqual(["ctr:1", "want:img:h1"]); // keys reach the hooks bare
    await sleep(1200);
    expect(await s.get("want:img:h1")).toBeNull();
    expect("want:img:h1" in data).toBe(false); // the expired entry was deleted through the hook
    expect(await s.get("ctr:1")).toBe("h1\t");
  });
});

describe("configuration", () => {
  test("FLOCKER_REDIS takes redis:// and rediss://; FLOCKER_REDIS_PREFIX defaults to flocker:", () => {
    expect(loadConfig({ FLOCKER_REDIS: "redis://127.0.0.1:6379" }).FLOCKER_REDIS_PREFIX).toBe("flocker:");
    const tls = loadConfig({ FLOCKER_REDIS: "rediss://user:pw@redis.example:6380/2", FLOCKER_REDIS_PREFIX: "team-a:" });
    expect(tls.FLOCKER_REDIS).toBe("rediss://user:pw@redis.example:6380/2");
    expect(tls.FLOCKER_REDIS_PREFIX).toBe("team-a:");
    expect(() => loadConfig({ FLOCKER_REDIS: "http://127.0.0.1:6379" })).toThrow(/FLOCKER_REDIS/);
    expect(loadConfig({}, ["--redis-prefix", "x:"]).FLOCKER_REDIS_PREFIX).toBe("x:");
  });
});
