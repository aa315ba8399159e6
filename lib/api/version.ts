/** API version prefixes: `/v1.41/containers/json` routes like `/containers/json`; the prefix is kept upstream. */
import { DockerError } from "../errors.ts";

// As docker's router: `/v` then digits and dots is a version; anything else (`/volumes`) is a path.
const PREFIX = /^\/v([0-9.]+)(?=\/)/;

export function stripApiVersion(pathname: string): string {
  return pathname.replace(PREFIX, "");
}

export function apiVersionOf(pathname: string): string | undefined {
  return PREFIX.exec(pathname)?.[1];
}

/** The `/vX.Y` a request came with ("" without one): fan-outs ask every engine in the client's version. */
export function apiPrefixOf(url: string): string {
  const path = new URL(url).pathname;
  const v = apiVersionOf(path);
  return v ? `/v${v}` : "";
}

/**
 * Docker refuses versions outside what it serves; flocker serves what every host does: up to the
 * oldest host's maximum, from the newest host's minimum.
 */
export function checkApiVersion(pathname: string, max: string | undefined, compare: (a: string, b: string) => number, min?: string) {
  const v = apiVersionOf(pathname);
  if (!v) return;
  if (max && compare(v, max) > 0) {
    throw new DockerError(400, `client version ${v} is too new. Maximum supported API version is ${max}`);
  }
  if (min && compare(v, min) < 0) {
    throw new DockerError(400, `client version ${v} is too old. Minimum supported API version is ${min}, please upgrade your client to a newer version`);
  }
}
