/** Volumes: on every host, pinned to one by the first container that mounts it (cluster/placement.ts). */
import type { FlockerContext } from "../context.ts";
import { namedResourceRoutes } from "./named-resources.ts";

export function volumeRoutes(ctx: FlockerContext) {
  return namedResourceRoutes(ctx, {
    kind: "vol",
    base: "/volumes",
    notFound: (ref) => `get ${ref}: no such volume`,
    unwrapList: (body) => ((body as { Volumes?: [] })?.Volumes ?? []),
    wrapList: (items, warnings) => ({ Volumes: items, Warnings: warnings.length ? warnings : null }),
    pruned: "VolumesDeleted",
  });
}
