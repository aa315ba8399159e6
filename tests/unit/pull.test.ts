// The pull dance in the core (lib/api/containers.ts create + lib/api/images.ts POST /images/create),
// against fake engines: what exactly each engine receives and what the client gets back.
// The same behaviour is proven against real engines and CLIs in tests/e2e/pull.test.ts.
import { afterEach, describe, expect, test } from "bun:test";
import { buildFlocker, type Flocker } from "../../lib/flocker.ts";
import type { HostAddress } from "../../lib/cluster/host.ts";
import type { Hooks, PullMode } from "../../lib/context.ts";
import { MemoryStore } from "../../lib/store/memory.ts";
import type { Store } from "../../lib/store/types.ts";

const IMAGE = "registry.test:5000/team/app:latest";
const enc = new TextEncoder();

interface PullCall {
  path: string;
  auth: string | null;
}

type PullBehaviour =
  | { kind: "ok" }
  | { kind: "refuse"; status: number; message: string }
  | { kind: "fail-after-200"; message: string }
  | { kind: "held" }; // sends its first line, then waits for release()

class FakeEngine {
  images = new Set<string>(["busybox"]);
  containers: { Id: string; Names: string[]; Image: string }[] = [];
  pulls: PullCall[] = [];
  creates: string[] = [];
  pull: PullBehaviour = { kind: "ok" };
  #release?: () => void;
  constructor(readonly name: string) {}

  release() {
    this.#release?.();
  }

  async handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname.replace(/^\/v[0-9.]+/, "");
    const json = (body: unknown, status = 200) =>
      new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
    if (path === "/version") return json({ ApiVersion: "1.41", Version: "20.10.0" });
    if (path === "/info") return json({ Containers: this.containers.length, Labels: [] });
    if (path === "/images/json") return json([...this.images].map((t, i) => ({ Id: `sha256:${i}`, RepoTags: [t] })));
    if (path === "/containers/json") return json(this.containers);
    if (path === "/containers/create" && req.method === "POST") {
      const body = await req.json() as { Image: string };
      this.creates.push(body.Image);
      if (!this.images.has(body.Image)) return json({ message: `No such image: ${body.Image}` }, 404);
      const Id = [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, "0")).join("");
      this.containers.push({ Id, Names: [`/${url.searchParams.get("name") ?? Id.slice(0, 12)}`], Image: body.Image });
      return json({ Id, Warnings: [] }, 201);
    }
    if (path === "/images/create" && req.method === "POST") {
      this.pulls.push({ path: url.pathname + url.search, auth: req.headers.get("x-registry-auth") });
      const b = this.pull;
      if (b.kind === "refuse") return json({ message: b.message }, b.status);
      const ref = `${url.searchParams.get("fromImage")}${url.searchParams.get("tag") ? ":" + url.searchParams.get("tag") : ""}`;
      const lines = [
        { status: "Pulling from team/app", id: "latest" },
        { status: "Pulling fs layer", progressDetail: {}, id: "aaaa1111" },
        { status: "Pull complete", progressDetail: {}, id: "aaaa1111" },
      ];
      const held = new Promise<void>((r) => (this.#release = r));
      const stream = new ReadableStream<Uint8Array>({
        start: async (controller) => {
          controller.enqueue(enc.encode(JSON.stringify(lines[0]) + "\r\n"));
          if (b.kind === "held") await held;
          for (const l of lines.slice(1)) controller.enqueue(enc.encode(JSON.stringify(l) + "\r\n"));
          if (b.kind === "fail-after-200") {
            controller.enqueue(enc.encode(JSON.stringify({ errorDetail: { message: b.message }, error: b.message }) + "\r\n"));
          } else {
            this.images.add(ref);
            controller.enqueue(enc.encode(JSON.stringify({ status: `Status: Downloaded newer image for ${ref}` }) + "\r\n"));
          }
          controller.close();
        },
      });
      return new Response(stream, { status: 200, headers: { "content-type": "application/json" } });
    }
    return json({ message: `fake engine: no route ${req.method} ${path}` }, 404);
  }
}

let running: Flocker[] = [];
afterEach(async () => {
  for (const f of running) await f.close();
  running = [];
});

async function flock(n: number, opts: { pull?: PullMode; hooks?: Hooks; store?: Store } = {}) {
  const engines = Array.from({ length: n }, (_, i) => new FakeEngine(`h${i + 1}`));
  const byAddress = new Map(engines.map((e, i) => [`127.0.0.1:${40001 + i}`, e]));
  const flocker = buildFlocker({
    hosts: engines.map((e, i) => `${e.name}=127.0.0.1:${40001 + i}`),
    hostFetch: (address: HostAddress) => (req: Request) => byAddress.get(address.address)!.handle(req),
    store: opts.store ?? new MemoryStore(),
    pull: opts.pull,
    hooks: opts.hooks,
    probeIntervalMs: 60_000,
  });
  running.push(flocker);
  await flocker.ready;
  const call = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    flocker.fetch(
      new Request(`http://flocker${path}`, {
        method,
        headers: { ...(body !== undefined ? { "content-type": "application/json" } : {}), ...headers },
        body: body !== undefined ? JSON.stringify(body) : undefined,
      }),
    );
  return { flocker, engines, call };
}

const lines = (text: string) => text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
const AUTH = btoa(JSON.stringify({ username: "u", password: "p", serveraddress: "registry.test:5000" }));

describe("the pull dance (client mode)", () => {
  test("404 -> the pull goes to that host only, header and path intact -> the retry lands there -> want cleared", async () => {
    const { engines, call, flocker } = await flock(3);
    // No engine holds the image: wherever the create goes, it gets 404.
    const first = await call("POST", "/v1.41/containers/create?name=web", { Image: IMAGE });
    expect(first.status).toBe(404);
    const missing = engines.find((e) => e.creates.length === 1)!;
    expect((await first.json()).message).toContain("No such image");

    const pull = await call("POST", "/v1.41/images/create?fromImage=registry.test%3A5000%2Fteam%2Fapp&tag=latest", undefined, {
      "X-Registry-Auth": AUTH,
    });
    expect(pull.status).toBe(200);
    const progress = lines(await pull.text());
    expect(progress.some((l) => l.error)).toBe(false);
    for (const e of engines) expect(e.pulls.length).toBe(e === missing ? 1 : 0);
    expect(missing.pulls[0]).toEqual({
      path: "/v1.41/images/create?fromImage=registry.test%3A5000%2Fteam%2Fapp&tag=latest",
      auth: AUTH,
    });
    // one host: the engine's lines as they are
    expect(progress.map((l) => l.id).filter(Boolean)).toEqual(["latest", "aaaa1111", "aaaa1111"]);

    const again = await call("POST", "/v1.41/containers/create?name=web", { Image: IMAGE });
    expect(again.status).toBe(201);
    expect(missing.containers.length).toBe(1);
    expect(await flocker.store.get(`want:${IMAGE}:${missing.name}`)).toBeNull();
  });

  test("a create that got 404 reserves nothing: its name stays free", async () => {
    const { call, flocker } = await flock(2);
    expect((await call("POST", "/containers/create?name=free", { Image: IMAGE })).status).toBe(404);
    expect(await flocker.store.get("name:free")).toBeNull();
    const other = await call("POST", "/containers/create?name=free", { Image: "busybox" });
    expect(other.status).toBe(201);
  });

  test("two concurrent runs placed on different hosts: the pulls reach both, both retries succeed", async () => {
    const { engines, call, flocker } = await flock(3);
    engines[0].images.add(IMAGE); // h1 holds it, but is busy: h2 and h3 are chosen first
    engines[0].containers.push({ Id: "x1", Names: ["/x1"], Image: "busybox" }, { Id: "x2", Names: ["/x2"], Image: "busybox" });
    await flocker.cluster.probeAll();
    const creates = await Promise.all([
      call("POST", "/containers/create?name=ra", { Image: IMAGE }),
      call("POST", "/containers/create?name=rb", { Image: IMAGE }),
      call("POST", "/containers/create?name=rc", { Image: IMAGE }),
    ]);
    const failed = creates.filter((r) => r.status === 404).length;
    expect(failed).toBeGreaterThanOrEqual(2); // concurrent creates spread: h2 and h3 got one each
    const pulls = await Promise.all(
      Array.from({ length: failed }, () => call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`).then((r) => r.text())),
    );
    for (const p of pulls) expect(p).not.toContain('"error"');
    expect(engines[1].images.has(IMAGE) && engines[2].images.has(IMAGE)).toBe(true);
    expect(engines[0].pulls.length).toBe(0); // nobody waited on h1
    const names = ["ra", "rb", "rc"].filter((_, i) => creates[i].status === 404);
    const retries = await Promise.all(names.map((n) => call("POST", `/containers/create?name=${n}`, { Image: IMAGE })));
    expect(retries.map((r) => r.status)).toEqual(names.map(() => 201));
  });


  test("two runs that met on one host: the first retry to land there leaves the way for the second", async () => {
    const { engines, call, flocker } = await flock(3);
    // Both first creates reach h2 (as concurrent runs over few hosts can); the retries carry no
    // constraint, so only the dance's state can bring the second one back to h2.
    const onH2 = { Image: IMAGE, Env: ["constraint:node==h2"] };
    engines[1].containers.push({ Id: "x1", Names: ["/x1"], Image: "busybox" });
    await flocker.cluster.probeAll();
    expect((await call("POST", "/containers/create?name=ra", onH2)).status).toBe(404);
    expect((await call("POST", "/containers/create?name=rb", onH2)).status).toBe(404);
    for (let i = 0; i < 2; i++) await (await call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`)).text();
    expect(engines.map((e) => e.pulls.length)).toEqual([0, 2, 0]);
    const ra = await call("POST", "/containers/create?name=ra", { Image: IMAGE });
    expect(ra.status).toBe(201);
    expect(await flocker.store.get(`want:${IMAGE}:h2`)).toBe("pulled:1");
    // h2 now runs two containers more than h1 and h3: spread alone would place rb on one of those, without the image.
    const rb = await call("POST", "/containers/create?name=rb", { Image: IMAGE });
    expect(rb.status).toBe(201);
    expect(engines.map((e) => e.containers.length)).toEqual([0, 3, 0]);
    expect(await flocker.store.get(`want:${IMAGE}:h2`)).toBeNull();
  });
  test("a pull with no pending want goes to every host, layer ids kept distinct per host", async () => {
    const { engines, call } = await flock(3);
    const res = await call("POST", "/images/create?fromImage=registry.test%3A5000%2Fteam%2Fapp&tag=latest", undefined, {
      "X-Registry-Auth": AUTH,
    });
    expect(res.status).toBe(200);
    const progress = lines(await res.text());
    for (const e of engines) {
      expect(e.pulls.map((p) => p.auth)).toEqual([AUTH]);
      expect(progress.filter((l) => l.id === `${e.name}: aaaa1111`).length).toBe(2);
    }
    expect(new Set(progress.map((l) => l.id).filter(Boolean)).size).toBe(6);
  });

  test("progress is streamed live, not collected", async () => {
    const { engines, call } = await flock(2);
    for (const e of engines) e.pull = { kind: "held" };
    const res = await call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let seen = "";
    while (!(seen.includes("h1: latest") && seen.includes("h2: latest"))) {
      const { value, done } = await reader.read();
      expect(done).toBe(false); // the first lines came while both engines still hold their streams
      seen += dec.decode(value);
    }
    for (const e of engines) e.release();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += dec.decode(value);
    }
    expect(seen).toContain("h1: Status: Downloaded newer image");
    expect(seen).toContain("h2: Status: Downloaded newer image");
  });

  test("errors after the 200 went out are docker's {error, errorDetail} lines", async () => {
    const { engines, call } = await flock(3);
    engines[1].pull = { kind: "fail-after-200", message: "unexpected EOF" };
    engines[2].pull = { kind: "refuse", status: 500, message: "no space left on device" };
    const res = await call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`);
    expect(res.status).toBe(200);
    const errors = lines(await res.text()).filter((l) => l.error);
    expect(errors.length).toBe(2);
    for (const e of errors) {
      expect(typeof e.error).toBe("string");
      expect(typeof e.errorDetail?.message).toBe("string");
    }
    expect(errors.map((e) => e.error).sort()).toEqual(["h2: unexpected EOF", "h3: no space left on device"]);
  });

  test("when every host refuses (bad credentials), the registry's error reaches the client unchanged", async () => {
    const { engines, call } = await flock(2);
    const message = 'Head "http://registry.test:5000/v2/team/app/manifests/latest": no basic auth credentials';
    for (const e of engines) e.pull = { kind: "refuse", status: 500, message };
    const res = await call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`, undefined, { "X-Registry-Auth": "e30=" });
    expect(res.status).toBe(500);
    expect(await res.json()).toEqual({ message });
    for (const e of engines) expect(e.pulls[0].auth).toBe("e30=");
  });
});

describe("auto pull mode", () => {
  test("create pulls on the allocated host with the hook's credentials; the client never sees the 404", async () => {
    const asked: string[] = [];
    const { engines, call } = await flock(2, {
      pull: "auto",
      hooks: {
        registryAuth: async (registry) => {
          asked.push(registry);
          return { username: "u", password: "p" };
        },
      },
    });
    const res = await call("POST", "/containers/create?name=auto1", { Image: IMAGE });
    expect(res.status).toBe(201);
    expect(asked).toEqual(["registry.test:5000"]);
    const puller = engines.find((e) => e.pulls.length)!;
    expect(puller.containers.length).toBe(1);
    const auth = JSON.parse(atob(puller.pulls[0].auth!.replace(/-/g, "+").replace(/_/g, "/")));
    expect(auth).toMatchObject({ username: "u", password: "p", serveraddress: "registry.test:5000" });
    expect(engines.filter((e) => e.pulls.length).length).toBe(1);
  });

  test("a failed pull answers a clear error naming image and host, and keeps no name", async () => {
    const { engines, call, flocker } = await flock(1, { pull: "auto" });
    engines[0].pull = { kind: "refuse", status: 500, message: "no basic auth credentials" };
    const res = await call("POST", "/containers/create?name=auto2", { Image: IMAGE });
    expect(res.status).toBe(500);
    const { message } = await res.json();
    expect(message).toContain(IMAGE);
    expect(message).toContain("h1");
    expect(message).toContain("no basic auth credentials");
    expect(await flocker.store.get("name:auto2")).toBeNull();
  });
});

describe("allocation that knows images", () => {
  test("affinity is soft: six runs where only h1 holds the image spread, the others pull", async () => {
    const { engines, call } = await flock(3);
    engines[0].images.add(IMAGE);
    for (let i = 0; i < 6; i++) {
      let res = await call("POST", `/containers/create?name=r${i}`, { Image: IMAGE });
      if (res.status === 404) {
        await (await call("POST", `/images/create?fromImage=${encodeURIComponent(IMAGE)}`)).text();
        res = await call("POST", `/containers/create?name=r${i}`, { Image: IMAGE });
      }
      expect(res.status).toBe(201);
    }
    const used = engines.filter((e) => e.containers.length > 0);
    expect(used.length).toBeGreaterThanOrEqual(2);
    expect(engines[0].containers.length).toBeGreaterThanOrEqual(1); // the holder was preferred at first
    for (const e of used.slice(1)) expect(e.images.has(IMAGE)).toBe(true);
  });

  test("another flocker's pull (shared store) steers this one's retry to the pulled host", async () => {
    const store = new MemoryStore(); // stands for a Redis both processes share
    const a = await flock(3, { store });
    // Process B: same store, its own view of the same engines.
    const byAddress = new Map(a.engines.map((e, i) => [`127.0.0.1:${40001 + i}`, e]));
    const b = buildFlocker({
      hosts: a.engines.map((e, i) => `${e.name}=127.0.0.1:${40001 + i}`),
      hostFetch: (address: HostAddress) => (req: Request) => byAddress.get(address.address)!.handle(req),
      store,
      probeIntervalMs: 60_000,
    });
    running.push(b);
    await b.ready;
    a.engines[0].images.add(IMAGE);
    a.engines[0].containers.push(
      { Id: "x1", Names: ["/x1"], Image: "busybox" },
      { Id: "x2", Names: ["/x2"], Image: "busybox" },
      { Id: "x3", Names: ["/x3"], Image: "busybox" },
    );
    await a.flocker.cluster.probeAll();
    const first = await a.call("POST", "/containers/create?name=zz", { Image: IMAGE });
    expect(first.status).toBe(404);
    const target = a.engines.find((e) => e.creates.length)!;
    expect(target).not.toBe(a.engines[0]);
    const pull = await b.fetch(new Request(`http://flocker/images/create?fromImage=${encodeURIComponent(IMAGE)}`, { method: "POST" }));
    await pull.text();
    expect(a.engines.filter((e) => e.pulls.length)).toEqual([target]);
    // A has not probed since: only the shared want ("pulled") tells it where the image now is. Make
    // the third host look better to A (holds the image, as empty), so nothing else could explain it.
    const other = a.engines.find((e) => e !== target && e !== a.engines[0])!;
    other.images.add(IMAGE);
    a.flocker.cluster.noteImage(a.flocker.cluster.byName(other.name)!, IMAGE);
    const again = await a.call("POST", "/containers/create?name=zz", { Image: IMAGE });
    expect(again.status).toBe(201);
    expect(target.containers.length).toBe(1);
  });
});
