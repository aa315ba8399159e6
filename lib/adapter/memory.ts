/**
 * Runtime glue: keep memory flat while bytes stream through. Every chunk read from a socket is a
 * fresh buffer whose memory lives outside the JavaScript heap; the collector only sees the tiny
 * wrapper objects, so at a gigabyte per ten seconds garbage piles up long before a collection
 * runs by itself (Deno grew to 400 MB in a 1 GB `docker exec`). The front counts the bytes it
 * carries (hijacked streams, fast-path bodies) and ask for a young-generation collection every few megabytes: it takes well under a
 * millisecond and frees the buffers already written. (Bun: a full collection, which also hands
 * freed pages back; its heap is small, so it is as cheap.)
 */
import v8 from "node:v8";
import vm from "node:vm";

/** Bytes streamed between two collections. */
const COLLECT_EVERY = 16 * 1024 * 1024;

// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

function youngCollector(): () => void {
  if (runtime.Bun?.gc) return () => runtime.Bun.gc(true);
  try {
    // V8 (Deno, Node): the collector is reachable once --expose-gc is set, from a fresh context.
    v8.setFlagsFromString("--expose-gc");
    const gc = vm.runInNewContext("gc") as (options?: { type: "minor" | "major" }) => void;
    return () => gc({ type: "minor" });
  } catch {
    return () => {};
  }
}

let collect: (() => void) | undefined;
let streamed = 0;

/** Note bytes that went through; collects garbage every COLLECT_EVERY bytes. */
export function noteStreamed(bytes: number) {
  streamed += bytes;
  if (streamed < COLLECT_EVERY) return;
  streamed = 0;
  (collect ??= youngCollector())();
}
