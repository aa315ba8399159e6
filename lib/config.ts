/**
 * Configuration from FLOCKER_* variables and matching flags (`--hosts x` or `--hosts=x` sets
 * FLOCKER_HOSTS). Validated with zod; a bad value names its variable.
 */
import { z } from "zod";
import { parseHostAddress } from "./cluster/host.ts";
import { STRATEGIES } from "./cluster/scheduler.ts";
import { parseAllowList, type Policy } from "./api/policy.ts";

const bool = z.enum(["1", "0", "true", "false", "yes", "no", ""]).transform((v) => v === "1" || v === "true" || v === "yes");

const listenSchema = z.string().transform((value, ctx) => {
  if (value.startsWith("unix://")) return { path: value.slice(7) };
  const m = /^(?:tcp:\/\/)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):(\d{1,5})$/.exec(value);
  if (!m || Number(m[2]) > 65535) {
    ctx.addIssue({ code: "custom", message: "expected host:port, tcp://host:port or unix:///path" });
    return z.NEVER;
  }
  return { host: m[1].replace(/^\[|\]$/g, "") || "127.0.0.1", port: Number(m[2]) };
});

export const configSchema = z.object({
  FLOCKER_HOSTS: z.string().default("unix:///var/run/docker.sock").transform((value, ctx) => {
    const list = value.split(",").map((s) => s.trim()).filter(Boolean);
    if (!list.length) ctx.addIssue({ code: "custom", message: "at least one host is needed" });
    for (const entry of list) {
      try {
        parseHostAddress(entry);
      } catch (err) {
        ctx.addIssue({ code: "custom", message: (err as Error).message });
      }
    }
    return list;
  }),
  FLOCKER_LISTEN: z.string().default("127.0.0.1:2375").pipe(listenSchema),
  FLOCKER_STRATEGY: z.enum(STRATEGIES).default("spread"),
  FLOCKER_PULL: z.enum(["client", "auto"]).default("client"),
  FLOCKER_REDIS: z.string().regex(/^rediss?:\/\//, "expected redis://... or rediss://...").optional(),
  /** Namespace of flocker's keys in Redis (see lib/store/types.ts). */
  FLOCKER_REDIS_PREFIX: z.string().max(200).default("flocker:"),
  /** A Redis set of host addresses that join the inventory at run time (needs FLOCKER_REDIS). */
  FLOCKER_HOSTS_SET: z.string().min(1).max(200).optional(),
  FLOCKER_REGISTRY_AUTH: z.string().optional(),
  FLOCKER_PROBE_INTERVAL: z.coerce.number().int().min(100).max(600_000).default(5000),
  /**
   * Threads serving client connections (plain TCP listener): by default one per two CPUs (at
   * most 4) under Bun, one under Deno. The store, inventory and app stay on the main thread.
   */
  FLOCKER_THREADS: z.coerce.number().int().min(1).max(64).optional(),
  FLOCKER_LOG: z.enum(["debug", "info", "warn", "error", "silent"]).default("info"),
  FLOCKER_TLS_CERT: z.string().optional(),
  FLOCKER_TLS_KEY: z.string().optional(),
  FLOCKER_TLS_CA: z.string().optional(),
  FLOCKER_HOST_CERT_PATH: z.string().optional(),
  FLOCKER_INSECURE: bool.default(false),
  /** Allow the admin actions under /_flocker/ (drain, undrain a host). */
  FLOCKER_ADMIN: bool.default(false),
  FLOCKER_READ_ONLY: bool.default(false),
  FLOCKER_ALLOW: z.string().optional().superRefine((v, ctx) => {
    if (!v) return;
    try {
      parseAllowList(v);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
    }
  }),
  FLOCKER_DENY_PRIVILEGED: bool.default(false),
  FLOCKER_DENY_HOST_NAMESPACES: bool.default(false),
  FLOCKER_BIND_DIRS: z.string().optional(),
});

export type Config = z.output<typeof configSchema>;

export class ConfigError extends Error {}

/** Flags become variables: `--hosts a,b` -> FLOCKER_HOSTS=a,b; `--insecure` -> FLOCKER_INSECURE=1. */
export function flagsToEnv(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new ConfigError(`unexpected argument: ${arg}`);
    const eq = arg.indexOf("=");
    const name = "FLOCKER_" + arg.slice(2, eq < 0 ? undefined : eq).replace(/-/g, "_").toUpperCase();
    if (!(name in configSchema.shape)) throw new ConfigError(`unknown flag: ${arg.split("=")[0]}`);
    if (eq >= 0) out[name] = arg.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith("--")) out[name] = argv[++i];
    else out[name] = "1";
  }
  return out;
}

export function loadConfig(env: Record<string, string | undefined>, argv: string[] = []): Config {
  const merged: Record<string, string | undefined> = {};
  for (const key of Object.keys(configSchema.shape)) if (env[key] !== undefined) merged[key] = env[key];
  Object.assign(merged, flagsToEnv(argv));
  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n  ${lines.join("\n  ")}`);
  }
  const config = result.data;
  if ((config.FLOCKER_TLS_CERT === undefined) !== (config.FLOCKER_TLS_KEY === undefined)) {
    throw new ConfigError("invalid configuration:\n  FLOCKER_TLS_CERT and FLOCKER_TLS_KEY go together");
  }
  if (config.FLOCKER_HOSTS_SET && !config.FLOCKER_REDIS) {
    throw new ConfigError("invalid configuration:\n  FLOCKER_HOSTS_SET needs FLOCKER_REDIS");
  }
  return config;
}

export function isLoopback(listen: Config["FLOCKER_LISTEN"]): boolean {
  if ("path" in listen) return true;
  return /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(listen.host);
}

/** The access policy the configuration asks for. */
export function policyOf(config: Config): Policy {
  return {
    readOnly: config.FLOCKER_READ_ONLY,
    allow: config.FLOCKER_ALLOW ? parseAllowList(config.FLOCKER_ALLOW) : undefined,
    denyPrivileged: config.FLOCKER_DENY_PRIVILEGED,
    denyHostNamespaces: config.FLOCKER_DENY_HOST_NAMESPACES,
    allowedBindDirs: config.FLOCKER_BIND_DIRS ? config.FLOCKER_BIND_DIRS.split(",").map((s) => s.trim()).filter(Boolean) : undefined,
  };
}
