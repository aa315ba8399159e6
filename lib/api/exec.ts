/** Exec instances route by the exec id recorded at `POST /containers/{id}/exec`. */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import { forward } from "../upstream/forward.ts";

export function execRoutes(ctx: FlockerContext) {
  const app = new Hono();
  app.all("/exec/:id/*", async (c) => forward(await ctx.locator.exec(c.req.param("id")), c.req.raw));
  return app;
}
