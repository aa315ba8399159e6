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
  // BuildKit's control API (buildx's docker driver) is one long gRPC stream whose builds name their
  // session inside HTTP/2 frames: nothing to route it by. BuildKit sessions (/session) are routed
  // (./build.ts); the classic builder is advertised.
  app.all("/grpc", () => {
    throw new DockerError(501, "flocker: BuildKit's gRPC API (/grpc, used by docker buildx) is not supported; build with DOCKER_BUILDKIT=0");
  });
  app.get("/plugins", (c) => c.json([]));
  return app;
}
