/**
 * Hijacked streams (attach, exec start): the core says which host a connection goes to; the server
 * glue moves the bytes, since web Request/Response cannot carry a raw two-way TCP stream.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { stripApiVersion } from "./version.ts";

const ATTACH = /^\/containers\/([^/]+)\/attach$/;
const EXEC_START = /^\/exec\/([^/]+)\/start$/;

/** Whether a path is one the engine hijacks. */
export function isHijackPath(pathname: string): boolean {
  const path = stripApiVersion(pathname);
  return ATTACH.test(path) || EXEC_START.test(path);
}

/** The host a hijacked request goes to; throws DockerError when there is none. */
export async function hijackHost(ctx: FlockerContext, pathname: string): Promise<Host | undefined> {
  const path = stripApiVersion(pathname);
  let m = ATTACH.exec(path);
  if (m) return (await ctx.locator.container(decodeURIComponent(m[1]))).host;
  m = EXEC_START.exec(path);
  if (m) return ctx.locator.exec(decodeURIComponent(m[1]));
  return undefined;
}
