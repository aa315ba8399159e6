/** What every API module gets: the flock, the routing store and the user's decisions. */
import type { Cluster } from "./cluster/cluster.ts";
import type { HostAddress } from "./cluster/host.ts";
import type { Locator } from "./cluster/locator.ts";
import type { Strategy } from "./cluster/scheduler.ts";
import type { Wants } from "./cluster/wants.ts";
import type { Store } from "./store/types.ts";
import type { OpenWaits } from "./upstream/waits.ts";
import type { Policy } from "./api/policy.ts";

/** Credentials for a registry, as docker's X-Registry-Auth carries them. */
export interface RegistryCredentials {
  username?: string;
  password?: string;
  serveraddress?: string;
  identitytoken?: string;
  auth?: string;
}

export interface AllocateInfo {
  /** Container name from `?name=`, if any. */
  name?: string;
  /** The create body; changes made to it are what the engine receives. */
  container: Record<string, unknown>;
}

export interface Hooks {
  /** Choose the host for a new container: return its address or name; undefined = built-in strategy. */
  allocate?: (info: AllocateInfo) => Promise<string | undefined | void>;
  /** The current inventory of hosts (addresses, optionally `name=address`). */
  list?: () => Promise<string[]>;
  /** Credentials for a registry (auto-pull mode). */
  registryAuth?: (registry: string) => Promise<RegistryCredentials | undefined>;
}

export type PullMode = "client" | "auto";

export interface FlockerContext {
  policy: Policy;
  cluster: Cluster;
  store: Store;
  locator: Locator;
  /** Runs waiting for an image on a host (the `docker run` dance). */
  wants: Wants;
  hooks: Hooks;
  strategy: Strategy;
  pull: PullMode;
  /** Parses an address the user's hooks return. */
  parseAddress: (spec: string) => HostAddress;
  /** Waits the fast path is answering, so that a failed start is answered after them. */
  waits: OpenWaits;
}
