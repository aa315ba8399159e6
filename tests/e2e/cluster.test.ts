// Smoke test for the real-engine test bed started by scripts/cluster.sh.
// Run through `npm test` / scripts/test.sh, which export the FLOCKER_TEST_* env.
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { connect } from "node:net";

const HOW = "run the tests through `npm test` (scripts/test.sh), or `source $FLOCKER_TEST_DIR/env` after `scripts/cluster.sh up`";

function requireEnv(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`environment variable ${name} is not set: ${HOW}`);
  return v;
}

const DOCKER = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function docker(host: string, ...args: string[]): Run {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !k.startsWith("DOCKER_")) env[k] = v;
  }
  const dir = process.env.FLOCKER_TEST_DIR;
  if (dir && existsSync(`${dir}/dcfg`)) env.DOCKER_CONFIG = `${dir}/dcfg`;
  const p = Bun.spawnSync([DOCKER, "-H", `tcp://${host}`, ...args], { env, stdout: "pipe", stderr: "pipe" });
  return { code: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

function hosts(): string[] {
  const list = requireEnv("FLOCKER_TEST_HOSTS")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.length < 2) throw new Error(`FLOCKER_TEST_HOSTS must list at least 2 engines, got ${JSON.stringify(list)}`);
  return list;
}

function imageIds(host: string, ref: string): Run {
  return docker(host, "image", "inspect", "--format", "{{.Id}}", ref);
}

describe("test cluster", () => {
  test("environment is configured", () => {
    for (const name of [
      "FLOCKER_TEST_HOSTS",
      "FLOCKER_TEST_SOCKETS",
      "FLOCKER_TEST_REGISTRY",
      "FLOCKER_TEST_REGISTRY_USER",
      "FLOCKER_TEST_REGISTRY_PASS",
      "FLOCKER_TEST_REDIS",
      "FLOCKER_TEST_IMAGE",
      "FLOCKER_TEST_PRIVATE_IMAGE",
      "FLOCKER_TEST_DIR",
    ]) {
      requireEnv(name);
    }
    expect(requireEnv("FLOCKER_TEST_SOCKETS").split(",").length).toBe(hosts().length);
  });

  test("every engine answers `docker version` and holds the test image", () => {
    const image = requireEnv("FLOCKER_TEST_IMAGE");
    const ids = new Set<string>();
    const engineIds = new Set<string>();
    for (const host of hosts()) {
      const v = docker(host, "version", "--format", "{{.Server.Version}}");
      expect(v.code, `docker version on ${host}: ${v.stderr}`).toBe(0);
      expect(v.stdout.trim()).not.toBe("");

      const info = docker(host, "info", "--format", "{{.ID}}");
      expect(info.code, `docker info on ${host}: ${info.stderr}`).toBe(0);
      engineIds.add(info.stdout.trim());

      const img = imageIds(host, image);
      expect(img.code, `${image} missing on ${host}: ${img.stderr}`).toBe(0);
      ids.add(img.stdout.trim());
    }
    // engines are distinct engines...
    expect(engineIds.size).toBe(hosts().length);
    // ...holding the very same image
    expect(ids.size).toBe(1);
  });

  test("only engine 1 holds the private registry image", () => {
    const priv = requireEnv("FLOCKER_TEST_PRIVATE_IMAGE");
    const [first, ...rest] = hosts();
    const r1 = imageIds(first!, priv);
    expect(r1.code, `${priv} should be on ${first}: ${r1.stderr}`).toBe(0);
    for (const host of rest) {
      const r = imageIds(host, priv);
      expect(r.code, `${priv} must NOT be on ${host}`).not.toBe(0);
    }
  });

  test("docker run works on engine 2", () => {
    const image = requireEnv("FLOCKER_TEST_IMAGE");
    const host = hosts()[1]!;
    const r = docker(host, "run", "--rm", image, "echo", "hi");
    expect(r.code, `docker run on ${host}: ${r.stderr}`).toBe(0);
    expect(r.stdout.trim()).toBe("hi");
  });

  test("redis answers PING", async () => {
    const url = new URL(requireEnv("FLOCKER_TEST_REDIS"));
    const port = Number(url.port || 6379);
    const reply = await new Promise<string>((resolve, reject) => {
      const sock = connect({ host: url.hostname, port });
      let buf = "";
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no PING reply from ${url.host} within 5s (got ${JSON.stringify(buf)})`));
      }, 5000);
      sock.on("connect", () => sock.write("PING\r\n"));
      sock.on("data", (d) => {
        buf += d.toString();
        if (buf.includes("\r\n")) {
          clearTimeout(timer);
          sock.end();
          resolve(buf);
        }
      });
      sock.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    expect(reply).toBe("+PONG\r\n");
  });
});
