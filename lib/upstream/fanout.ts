/** Ask several engines the same question in parallel; slow or dead hosts are dropped after a deadline. */
import type { Host } from "../cluster/host.ts";
import { requestJson } from "./forward.ts";
import { errorResponse } from "../errors.ts";

export interface HostAnswer<T> {
  host: Host;
  status: number;
  body: T;
}

export interface Fanout<T> {
  answers: HostAnswer<T>[];
  failures: { host: Host; error: string }[];
}

export const FANOUT_TIMEOUT_MS = 2000;

export async function fanoutJson<T = unknown>(
  hosts: Host[],
  path: string,
  init: { method?: string; body?: string; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Fanout<T>> {
  const timeoutMs = init.timeoutMs ?? FANOUT_TIMEOUT_MS;
  const settled = await Promise.allSettled(hosts.map((h) => requestJson<T>(h, path, { ...init, timeoutMs })));
  const out: Fanout<T> = { answers: [], failures: [] };
  settled.forEach((r, i) => {
    if (r.status === "fulfilled") out.answers.push({ host: hosts[i], status: r.value.status, body: r.value.body });
    else out.failures.push({ host: hosts[i], error: (r.reason as Error)?.message ?? String(r.reason) });
  });
  return out;
}

/**
 * When every host that answered refused the question (a malformed filter, an API version out of
 * range): that refusal, as one engine gives it. Undefined when any host answered.
 */
export function refusalOf(answers: HostAnswer<unknown>[]): Response | undefined {
  if (answers.some((a) => a.status < 300)) return undefined;
  const refused = answers.find((a) => a.status >= 400);
  if (!refused) return undefined;
  return typeof refused.body === "string"
    ? errorResponse(refused.status, refused.body.trim()) // a plain-text refusal, given docker's JSON shape
    : Response.json(refused.body, { status: refused.status });
}

/** Message of a docker error body. */
export function messageOf(body: unknown): string {
  if (body && typeof body === "object" && "message" in body) return String((body as { message: unknown }).message);
  return typeof body === "string" ? body : JSON.stringify(body);
}
