// The dance's routing state (lib/cluster/wants.ts): runs waiting on a host are counted, and
// changes to one want never overwrite each other in one process, even over a slow store.
import { describe, expect, test } from "bun:test";
import { Wants } from "../../lib/cluster/wants.ts";
import type { Host } from "../../lib/cluster/host.ts";
import { MemoryStore } from "../../lib/store/memory.ts";

/** A store whose reads take a round trip (as Redis does): unserialized read-modify-writes would interleave. */
class SlowStore extends MemoryStore {
  override async get(key: string) {
    const value = await super.get(key);
    await new Promise((r) => setTimeout(r, 5)); // the answer is on its way back
    return value;
  }
}

const h1 = { name: "h1" } as Host;
const h2 = { name: "h2" } as Host;
const IMAGE = "busybox";
const KEY = "want:docker.io/library/busybox:latest:h1";

describe("wants", () => {
  test("concurrent 404s on one host are all counted; each create counts one off; the last deletes", async () => {
    const store = new SlowStore();
    const wants = new Wants(store);
    await Promise.all([wants.missing(IMAGE, h1), wants.missing(IMAGE, h1), wants.missing(IMAGE, h1)]);
    expect(await store.get(KEY)).toBe("pending:3");
    expect(await wants.wantedAmong(IMAGE, [h1, h2])).toEqual([h1]);
    expect(await wants.readyAmong(IMAGE, [h1, h2], () => false)).toEqual([]);
    await wants.pulled(IMAGE, h1);
    await wants.pulled(IMAGE, h2); // nobody waits on h2: nothing is written
    expect(await store.get("want:docker.io/library/busybox:latest:h2")).toBeNull();
    expect(await wants.readyAmong(IMAGE, [h1, h2], () => false)).toEqual([h1]);
    await Promise.all([wants.created(IMAGE, h1), wants.created(IMAGE, h1)]);
    expect(await store.get(KEY)).toBe("pulled:1");
    await wants.created(IMAGE, h1);
    expect(await store.get(KEY)).toBeNull();
  });

  test("a pending want where the image is known counts as ready; a bare value (older flocker) is one run", async () => {
    const store = new MemoryStore();
    const wants = new Wants(store);
    await store.set(KEY, "pending", 120);
    expect(await wants.readyAmong(IMAGE, [h1, h2], (h) => h === h1)).toEqual([h1]);
    await wants.created(IMAGE, h1);
    expect(await store.get(KEY)).toBeNull();
  });
  test("moved: a run waiting on a host that could not pull waits, pulled, on the holder instead", async () => {
    const store = new SlowStore();
    const wants = new Wants(store);
    await Promise.all([wants.missing(IMAGE, h1), wants.missing(IMAGE, h1)]);
    await wants.moved(IMAGE, h1, h2);
    expect(await store.get(KEY)).toBe("pending:1");
    expect(await store.get("want:docker.io/library/busybox:latest:h2")).toBe("pulled:1");
    await wants.moved(IMAGE, h1, h2);
    expect(await store.get(KEY)).toBeNull();
    expect(await wants.readyAmong(IMAGE, [h1, h2], () => false)).toEqual([h2]);
    // Already waiting on the holder: marked pulled, its count unchanged.
    await wants.moved(IMAGE, h2, h2);
    expect(await store.get("want:docker.io/library/busybox:latest:h2")).toBe("pulled:2");
  });
  test("shown: an image a client was told exists is kept a minute in the store, by its normalized name", async () => {
    const store = new MemoryStore();
    const wants = new Wants(store);
    await wants.shown("busybox");
    expect(await wants.wasShown("docker.io/library/busybox:latest")).toBe(true);
    expect(await wants.wasShown("busybox:1")).toBe(false);
    expect(await store.get("shown:docker.io/library/busybox:latest")).toBe("1");
  });
});
