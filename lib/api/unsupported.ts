/** Endpoints that make no sense for a flock of independent engines: a clear refusal, never a hang. */
import { Hono } from "hono";
import { DockerError } from "../errors.ts";

const SWARM = ["/swarm", "/services", "/nodes", "/tasks", "/secrets", "/configs"];

export function unsupportedRoutes() {
  const app = new Hono();
  for (const base of SWARM) {
    const refuse = () => {
      throw new DockerError(
        503,
        `flocker: ${base} is a swarm-mode endpoint; a flock of independent engines is not a swarm (this node is not a swarm manager)`,
      );
    };
    app.all(base, refuse);
    app.all(`${base}/*`, refuse);
  }
  // BuildKit's session and gRPC hijacks cannot be spread over a flock: the classic builder is advertised.
  app.all("/session", () => {
    throw new DockerError(501, "flocker: BuildKit sessions are not supported; use the classic builder (DOCKER_BUILDKIT=0)");
  });
  app.all("/grpc", () => {
    throw new DockerError(501, "flocker: BuildKit is not supported; use the classic builder (DOCKER_BUILDKIT=0)");
  });
  app.get("/plugins", (c) => c.json([]));
  return app;
}
