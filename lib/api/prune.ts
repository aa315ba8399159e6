/** Prune answers from several hosts, merged: deleted lists concatenated, space reclaimed summed. */
import type { HostAnswer } from "../upstream/fanout.ts";

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
