/**
 * Hijacked streams (attach, exec start, BuildKit sessions): the core says which host a connection
 * goes to; the server glue moves the bytes, since web Request/Response cannot carry a raw two-way
 * TCP stream.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { stripApiVersion } from "./version.ts";
import { openSession } from "./build.ts";

const ATTACH = /^\/containers\/([^/]+)\/attach$/;
const EXEC_START = /^\/exec\/([^/]+)\/start$/;
const SESSION = "/session";

/** Whether a path is one the engine hijacks. */
export function isHijackPath(pathname: string): boolean {
  return isContainerStream(pathname) || stripApiVersion(pathname) === SESSION;
}

/** Attach and exec start: a container's own streams (not a BuildKit session's round trips). */
export function isContainerStream(pathname: string): boolean {
  const path = stripApiVersion(pathname);
  return ATTACH.test(path) || EXEC_START.test(path);
}

/** The session id a BuildKit session request carries (its builds name it). */
export const SESSION_HEADER = "x-docker-expose-session-uuid";

/**
 * The host a hijacked request goes to; throws DockerError when there is none. `session`: the
 * SESSION_HEADER of a BuildKit session request.
 */
export async function hijackHost(ctx: FlockerContext, pathname: string, session?: string): Promise<Host | undefined> {
  const path = stripApiVersion(pathname);
  if (path === SESSION) return openSession(ctx, session);
  let m = ATTACH.exec(path);
  if (m) return (await ctx.locator.container(decodeURIComponent(m[1]))).host;
  m = EXEC_START.exec(path);
  if (m) return ctx.locator.exec(decodeURIComponent(m[1]));
  return undefined;
}
