/** Networks: a user-defined network lives on one host and its containers are placed there. */
import type { FlockerContext } from "../context.ts";
import { namedResourceRoutes } from "./named-resources.ts";

export function networkRoutes(ctx: FlockerContext) {
  return namedResourceRoutes(ctx, {
    kind: "net",
    base: "/networks",
    noun: "network",
    unwrapList: (body) => (Array.isArray(body) ? body : []),
    wrapList: (items) => items,
    created: (answer, body) => ({ id: answer.Id, name: body.Name }),
  });
}
