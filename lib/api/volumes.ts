/** Volumes: one host each (see cluster/placement.ts), listed once, removed where they exist. */
import type { FlockerContext } from "../context.ts";
import { namedResourceRoutes } from "./named-resources.ts";

export function volumeRoutes(ctx: FlockerContext) {
  return namedResourceRoutes(ctx, {
    kind: "vol",
    base: "/volumes",
    noun: "volume",
    unwrapList: (body) => ((body as { Volumes?: [] })?.Volumes ?? []),
    wrapList: (items, warnings) => ({ Volumes: items, Warnings: warnings.length ? warnings : null }),
    created: (answer) => ({ name: answer.Name }),
  });
}
