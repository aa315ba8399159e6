/** Networks: on every host, pinned to one by the first container that joins it (cluster/placement.ts). */
import type { FlockerContext } from "../context.ts";
import { namedResourceRoutes } from "./named-resources.ts";

export function networkRoutes(ctx: FlockerContext) {
  return namedResourceRoutes(ctx, {
    kind: "net",
    base: "/networks",
    notFound: (ref) => `network ${ref} not found`,
    unwrapList: (body) => (Array.isArray(body) ? body : []),
    wrapList: (items) => items,
    pruned: "NetworksDeleted",
  });
}
