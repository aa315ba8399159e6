/** API version prefixes: `/v1.41/containers/json` routes like `/containers/json`; the prefix is kept upstream. */
import { DockerError } from "../errors.ts";

const PREFIX = /^\/v(\d+\.\d+)(?=\/)/;

export function stripApiVersion(pathname: string): string {
  return pathname.replace(PREFIX, "");
}

export function apiVersionOf(pathname: string): string | undefined {
  return PREFIX.exec(pathname)?.[1];
}

/** Docker refuses versions past its maximum; flocker's maximum is the oldest host's. */
export function checkApiVersion(pathname: string, max: string | undefined, compare: (a: string, b: string) => number) {
  if (!/^\/v/.test(pathname)) return;
  const v = apiVersionOf(pathname);
  if (!v) {
    if (/^\/v[^/]*\//.test(pathname)) throw new DockerError(400, `invalid API version in path: ${pathname.split("/")[1]}`);
    return;
  }
  if (max && compare(v, max) > 0) {
    throw new DockerError(400, `client version ${v} is too new. Maximum supported API version is ${max}`);
  }
}
