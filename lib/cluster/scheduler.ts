/** Choosing a host for a new container: strategies, with image affinity as a soft preference. */
import type { Host } from "./host.ts";

export type Strategy = "spread" | "binpack" | "random" | "round-robin";
export const STRATEGIES: Strategy[] = ["spread", "binpack", "random", "round-robin"];

export interface PlacementContext {
  /** Whether the host already holds the container's image (affinity: avoids needless pulls). */
  holdsImage: (host: Host) => boolean;
}

let roundRobinNext = 0;

/**
 * Order candidate hosts best-first. Spread and binpack count containers; a host holding the image
 * counts as one container lighter, so it wins among (nearly) equal hosts but never beats a clearly
 * emptier one.
 */
export function rankHosts(hosts: Host[], strategy: Strategy, ctx: PlacementContext): Host[] {
  if (hosts.length <= 1) return [...hosts];
  switch (strategy) {
    case "random":
      return shuffle([...hosts]);
    case "round-robin": {
      const start = roundRobinNext++ % hosts.length;
      return [...hosts.slice(start), ...hosts.slice(0, start)];
    }
    case "binpack":
    case "spread": {
      const sign = strategy === "spread" ? 1 : -1;
      const scored = shuffle([...hosts]).map((h) => ({
        h,
        score: sign * h.status.containers - (ctx.holdsImage(h) ? 1 : 0),
        holds: ctx.holdsImage(h),
      }));
      scored.sort((a, b) => a.score - b.score || Number(b.holds) - Number(a.holds));
      return scored.map((s) => s.h);
    }
  }
}

function shuffle<T>(list: T[]): T[] {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [list[i], list[j]] = [list[j], list[i]];
  }
  return list;
}
