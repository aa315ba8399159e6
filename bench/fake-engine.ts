/**
 * A minimal fake Docker engine for the benchmark: ONE Bun process listening on N ports (default
 * 100, all on 127.0.0.1, ports chosen by the kernel), each answering like a tiny engine:
 *
 *   /_ping, /version (ApiVersion 1.41), /info, /images/json ([]), /containers/json (a few each)
 *
 * with or without a `/v1.xx` prefix; anything else is a docker-style 404. Once every port listens it
 * prints one line of JSON to stdout, `{"ports":[...]}`, and then serves until SIGTERM / SIGINT.
 *
 *   bun run bench/fake-engine.ts [ENGINES] [CONTAINERS_PER_ENGINE]
 *   (or FAKE_ENGINES / FAKE_CONTAINERS in the environment)
 */
import process from "node:process";

const engines = Number(process.argv[2] ?? process.env.FAKE_ENGINES ?? 100);
const perEngine = Number(process.argv[3] ?? process.env.FAKE_CONTAINERS ?? 5);
if (!Number.isInteger(engines) || engines < 1 || !Number.isInteger(perEngine) || perEngine < 0) {
  console.error("usage: fake-engine.ts [ENGINES >= 1] [CONTAINERS_PER_ENGINE >= 0]");
  process.exit(2);
}

const API = "1.41";
const hex = (n: number, width: number) => n.toString(16).padStart(width, "0");
const json = (body: unknown) => JSON.stringify(body);

function engineBodies(index: number) {
  const name = `fake-${index}`;
  const created = 1_700_000_000 + index * 100;
  const containers = Array.from({ length: perEngine }, (_, k) => {
    const id = hex(index, 8) + hex(k, 8) + "f".repeat(48);
    return {
      Id: id,
      Names: [`/fake-${index}-${k}`],
      Image: "flocker-busybox:latest",
      ImageID: "sha256:" + "a".repeat(64),
      Command: "sleep 999999",
      Created: created + k,
      Ports: [],
      Labels: { "com.example.fake": "1" },
      State: "running",
      Status: "Up 2 hours",
      HostConfig: { NetworkMode: "default" },
      NetworkSettings: { Networks: {} },
      Mounts: [],
    };
  });
  const version = {
    Platform: { Name: "fake engine" },
    Version: "20.10.24",
    ApiVersion: API,
    MinAPIVersion: "1.12",
    GitCommit: "fake",
    GoVersion: "go1.19",
    Os: "linux",
    Arch: "amd64",
    KernelVersion: "6.1.0",
    BuildTime: "2024-01-01T00:00:00.000000000+00:00",
  };
  const info = {
    ID: `FAKE:${hex(index, 4)}`,
    Name: name,
    Containers: perEngine,
    ContainersRunning: perEngine,
    ContainersPaused: 0,
    ContainersStopped: 0,
    Images: 0,
    Driver: "vfs",
    ServerVersion: "20.10.24",
    OperatingSystem: "Fake Linux",
    OSType: "linux",
    Architecture: "x86_64",
    NCPU: 1,
    MemTotal: 1 << 30,
    Labels: [`fake.index=${index}`],
    Swarm: { LocalNodeState: "inactive" },
  };
  return { version: json(version), info: json(info), containers: json(containers) };
}

const headers = (type: string) => ({
  "Content-Type": type,
  "Api-Version": API,
  "Docker-Experimental": "false",
  "Ostype": "linux",
  "Server": "Docker/20.10.24 (linux)",
});
const JSON_HEADERS = headers("application/json");
const TEXT_HEADERS = { ...headers("text/plain; charset=utf-8"), "Cache-Control": "no-cache, no-store, must-revalidate" };
const NOT_FOUND = json({ message: "page not found" });

const servers = Array.from({ length: engines }, (_, i) => {
  const bodies = engineBodies(i + 1);
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const url = new URL(req.url);
      const path = url.pathname.replace(/^\/v1\.\d+(?=\/)/, "");
      if (req.method === "GET" || req.method === "HEAD") {
        switch (path) {
          case "/_ping":
            return new Response("OK", { headers: TEXT_HEADERS });
          case "/version":
            return new Response(bodies.version, { headers: JSON_HEADERS });
          case "/info":
            return new Response(bodies.info, { headers: JSON_HEADERS });
          case "/images/json":
            return new Response("[]", { headers: JSON_HEADERS });
          case "/containers/json":
            return new Response(bodies.containers, { headers: JSON_HEADERS });
        }
      }
      return new Response(NOT_FOUND, { status: 404, headers: JSON_HEADERS });
    },
  });
});

console.log(JSON.stringify({ ports: servers.map((s) => s.port) }));

const stop = () => {
  for (const s of servers) s.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
