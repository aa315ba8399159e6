/** flocker's entry: read configuration, build the flock, serve it. Runs under Bun, Deno and Node. */
import process from "node:process";
import { readFileSync } from "node:fs";
import { ConfigError, isLoopback, loadConfig, policyOf } from "./lib/config.ts";
import { createFlocker, serve } from "./lib/mod.ts";
import { registryAuthFromFile } from "./lib/adapter/registry-auth.ts";

let config;
try {
  config = loadConfig(process.env, process.argv.slice(2));
} catch (err) {
  console.error(`flocker: ${err instanceof ConfigError ? err.message : err}`);
  process.exit(2);
}

const read = (path?: string) => (path ? readFileSync(path, "utf8") : undefined);
const tls = config.FLOCKER_TLS_CERT
  ? { cert: read(config.FLOCKER_TLS_CERT)!, key: read(config.FLOCKER_TLS_KEY)!, ca: read(config.FLOCKER_TLS_CA) }
  : undefined;
if (!tls && !isLoopback(config.FLOCKER_LISTEN)) {
  if (!config.FLOCKER_INSECURE) {
    console.error("flocker: refusing to listen on a non-loopback address without TLS (set FLOCKER_INSECURE=1 to allow)");
    process.exit(2);
  }
  console.warn("flocker: WARNING: listening without TLS on a non-loopback address: anyone who reaches it controls every engine");
}
const certDir = config.FLOCKER_HOST_CERT_PATH;
const engineTls = certDir
  ? { ca: read(`${certDir}/ca.pem`), cert: read(`${certDir}/cert.pem`), key: read(`${certDir}/key.pem`) }
  : undefined;

const flocker = createFlocker({
  hosts: config.FLOCKER_HOSTS,
  redis: config.FLOCKER_REDIS,
  redisHostsSet: config.FLOCKER_HOSTS_SET,
  redisPrefix: config.FLOCKER_REDIS_PREFIX,
  strategy: config.FLOCKER_STRATEGY,
  pull: config.FLOCKER_PULL,
  probeIntervalMs: config.FLOCKER_PROBE_INTERVAL,
  policy: policyOf(config),
  admin: config.FLOCKER_ADMIN,
  log: config.FLOCKER_LOG,
  engineTls,
  hooks: config.FLOCKER_REGISTRY_AUTH ? { registryAuth: registryAuthFromFile(config.FLOCKER_REGISTRY_AUTH) } : {},
});
await flocker.ready;
const listenAt = "path" in config.FLOCKER_LISTEN ? `unix://${config.FLOCKER_LISTEN.path}` : `${config.FLOCKER_LISTEN.host}:${config.FLOCKER_LISTEN.port}`;
let server;
try {
  server = await serve(flocker, { listen: config.FLOCKER_LISTEN, tls, engineTls, threads: config.FLOCKER_THREADS });
} catch (err) {
  console.error(`flocker: cannot listen on ${listenAt}: ${err instanceof Error ? err.message : err}`);
  await flocker.close();
  process.exit(1);
}
// Start-up: a readable block on a terminal, one JSON line (like every other log line) otherwise.
if (config.FLOCKER_LOG !== "silent") {
  const listen = `${tls ? "https" : "tcp"}://${server.address}`;
  const hosts = flocker.cluster.hosts;
  if (process.stdout.isTTY) {
    const table = [["HOST", "STATE", "ENGINE", "API", "CONTAINERS", ""], ...hosts.map((h) => {
      const s = h.status;
      return [h.name, s.state, s.version ?? "-", s.apiVersion ?? "-", String(s.containers), s.state !== "healthy" ? s.lastError ?? "" : ""];
    })];
    const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
    const lines = table.map((r) => `  ${r.map((cell, i) => cell.padEnd(widths[i])).join("  ")}`.trimEnd());
    console.log(`flocker listening on ${listen}: ${hosts.length} hosts, strategy ${config.FLOCKER_STRATEGY}, status page at /_flocker/\n${lines.join("\n")}`);
  } else {
    console.log(JSON.stringify({
      time: new Date().toISOString(),
      level: "info",
      msg: "listening",
      listen,
      strategy: config.FLOCKER_STRATEGY,
      hosts: hosts.map((h) => ({
        name: h.name,
        address: h.address,
        state: h.status.state,
        version: h.status.version ?? null,
        apiVersion: h.status.apiVersion ?? null,
        containers: h.status.containers,
        ...(h.status.lastError && h.status.state !== "healthy" && { error: h.status.lastError }),
      })),
    }));
  }
}
const stop = async () => {
  await server.close();
  await flocker.close();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
