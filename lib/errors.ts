/** Docker-style errors: the CLI prints `message` from a JSON body, so every refusal uses this shape. */
import type { ContentfulStatusCode } from "hono/utils/http-status";

export class DockerError extends Error {
  constructor(readonly status: ContentfulStatusCode, message: string) {
    super(message);
  }
}

export function errorResponse(status: number, message: string): Response {
  return new Response(JSON.stringify({ message }) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** A container no host has (every healthy host was asked). */
export class NoSuchContainer extends DockerError {
  constructor(readonly ref: string) {
    super(404, `No such container: ${ref}`);
  }
}

export const noSuchContainer = (ref: string) => new NoSuchContainer(ref);
export const noSuchExec = (ref: string) => new DockerError(404, `No such exec instance: ${ref}`);

/** A JSON line as docker streams it after a 200 has gone out. */
export function progressErrorLine(message: string): string {
  return JSON.stringify({ errorDetail: { message }, error: message }) + "\n";
}
