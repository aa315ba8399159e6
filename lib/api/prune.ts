/** Prune answers from several hosts, merged: deleted lists concatenated, space reclaimed summed. */
import type { Host } from "../cluster/host.ts";
import { fanoutJson, type HostAnswer } from "../upstream/fanout.ts";

export function mergePrune(answers: HostAnswer<unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = { SpaceReclaimed: 0 };
  for (const { status, body } of answers) {
    if (status !== 200 || !body || typeof body !== "object") continue;
    for (const [key, value] of Object.entries(body as Record<string, unknown>)) {
      if (key === "SpaceReclaimed") out.SpaceReclaimed = (out.SpaceReclaimed as number) + (Number(value) || 0);
      else if (Array.isArray(value)) out[key] = [...((out[key] as unknown[]) ?? []), ...value];
      else if (value !== null) out[key] ??= value;
      else out[key] ??= null;
    }
  }
  return out;
}

/**
 * What the hosts still hold after a prune (each host prunes only its own copies: what one of them
 * still holds is not gone from the flock): every key `keysOf` finds in each host's list at `path`.
 */
export async function stillHeld(hosts: Host[], path: string, keysOf: (list: unknown) => string[]): Promise<Set<string>> {
  const { answers } = await fanoutJson(hosts, path);
  return new Set(answers.flatMap(({ status, body }) => (status === 200 ? keysOf(body) : [])));
}
