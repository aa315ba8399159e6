/**
 * Runtime glue: keep memory flat while bytes stream through. Every chunk read from a socket is a
 * fresh buffer whose memory lives outside the JavaScript heap; the collector only sees the small
 * wrapper objects, so at a gigabyte per ten seconds garbage piles up long before a collection runs
 * by itself (through node:net, Deno grew to 400 MB during a 1 GB `docker exec`). Bytes that only
 * pass through (hijacks, fast-path bodies) no longer leave such garbage: under Deno they reuse two
 * buffers (./deno/socket.ts), under Bun each chunk is released once written (./bun/socket.ts). What
 * remains (a chunk a slow reader queued, mTLS clients under Deno on node:tls, the app's own streams) is why this stays. The front
 * counts the bytes it carries; every few megabytes it looks at the resident size, and only past a
 * soft limit asks for a collection: one costs 5-30 ms, so collecting on a fixed
 * schedule would cost a tenth of the throughput or more (measured on `docker cp` in). Once
 * the streams have gone quiet for a second (Deno: half a minute, see SETTLE_MS), it collects once more.
 */
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";

/** Bytes streamed between two looks at the resident size (a look costs a few microseconds). */
const CHECK_EVERY = 4 * 1024 * 1024;
// deno-lint-ignore no-explicit-any
const runtime = globalThis as any;

/**
 * Resident size past which streamed garbage is collected. Bun collects its small heap in 5-13 ms
 * and hands the pages back; V8 (Deno) runs a full collection even when asked for a young one
 * (10-30 ms here, every 8 MB would halve `docker cp` in), so it is asked more rarely (REGROW).
 */
const SOFT_LIMIT = (runtime.Bun ? 80 : 96) * 1024 * 1024;

function collector(): () => void {
  // Bun: a full collection, which also hands the freed pages back (its heap is small).
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

/** Growth past the size the last collection left that asks for another (no thrashing on pages that stay resident). */
const REGROW = (runtime.Bun ? 12 : 48) * 1024 * 1024;

/**
 * Bun: the size past which the next collection is not put off by REGROW. With two front threads
 * a collection sometimes leaves 87-95 MB resident (what is held is not known: the other thread's
 * heap, allocator pages not yet handed back), and REGROW on top of that let peaks reach 101-115
 * MB after `cp`/`exec -i` (measured). Above the cap, every CHECK_EVERY of growth collects.
 * V8 (Deno) reads into reused buffers and does not grow while streaming: no cap.
 */
const CAP = runtime.Bun ? 88 * 1024 * 1024 : Infinity;

let collect: (() => void) | undefined;
let streamed = 0;
let threshold = SOFT_LIMIT;

/** Something was streamed or asked of the app here since the last collection. */
let dirty = false;
/** Tells the other threads of the process that this one collected under pressure (see collectIfDirty). */
let tellOthers: (() => void) | undefined;

/**
 * The resident size that counts as pressure. Under V8 (Deno) the young generation's capacity is
 * left out: V8 grows it under a storm of requests (to ~26 MB, RSS 112 MB, measured) and shrinks it
 * itself once idle; counted, every storm crossed the soft limit and its collection (a reducing
 * one, see SETTLE_MS) left the storm itself paying ~2x the CPU per request.
 */
function pressure(): number {
  const rss = process.memoryUsage.rss();
  if (runtime.Bun) return rss;
  let young = 0;
  for (const space of v8.getHeapSpaceStatistics()) if (space.space_name.startsWith("new_")) young += space.physical_space_size;
  return rss - young;
}

function collectNow() {
  dirty = false;
  (collect ??= collector())();
  const left = pressure();
  threshold = Math.max(SOFT_LIMIT, Math.min(left + REGROW, Math.max(CAP, left + CHECK_EVERY)));
}

/**
 * Quiet time after a stream before what it left is collected (nothing is waiting then; under
 * Deno the cost comes later).
 * Under V8 (Deno) a script's gc() is a low-memory notification: reducing full collections that
 * shrink the young generation and empty the page pool, so the next burst of requests grows them
 * again, faulting every page back in: routed requests took ~2x the CPU (0.6 page faults each) for
 * seconds after each such collection (measured; a second after every burst, the benchmark's
 * rounds, whose variants take turns, all began there). Without it the idle size crept up (88 ->
 * 98 MB over the benchmark's nine 1 GB streams): so it comes after half a minute of quiet.
 */
const SETTLE_MS = runtime.Bun ? 1000 : 30_000;
let settle: ReturnType<typeof setTimeout> | undefined;
/** Answers passed on since the wait began (notePassed): the collection waits on while they come. */
let passed = 0;

/** Collect once nothing has gone through for SETTLE_MS (each call starts the wait again). */
function settleLater() {
  if (settle) clearTimeout(settle);
  passed = 0;
  settle = setTimeout(() => {
    settle = undefined;
    if (passed) settleLater();
    else collectNow();
  }, SETTLE_MS);
  (settle as { unref?: () => void }).unref?.();
}

/**
 * Note an answer passed on without leaving garbage (a routed request's, lent): not streamed bytes,
 * but activity: the quiet-time collection is put off while they come (a count, checked when the
 * wait is up: nothing per request but an increment).
 */
export function notePassed() {
  passed++;
}

/** Past the threshold: collect here, and ask the other threads to collect what they hold. */
function collectUnderPressure() {
  collectNow();
  tellOthers?.();
}

/**
 * Front threads share one resident size but each collects only its own heap: a thread streaming
 * past the threshold could not free what another left (a `ps` storm on one thread, then a stream
 * on another, peaked at 95-108 MiB). `tell` passes the word on; the others call collectIfDirty().
 */
export function onCollectUnderPressure(tell: () => void) {
  tellOthers = tell;
}

/** Another thread collected under pressure: collect here too, unless nothing was done since the last time. */
export function collectIfDirty() {
  if (dirty) collectNow();
}

/** Note bytes that went through; past the soft limit, or once the streams go quiet, collect the garbage they left. */
export function noteStreamed(bytes: number) {
  dirty = true;
  streamed += bytes;
  if (streamed < CHECK_EVERY) return;
  streamed = 0;
  settleLater();
  if (pressure() >= threshold) collectUnderPressure();
}

/** App requests between two looks at the resident size while they keep coming. */
const CHECK_EVERY_REQUESTS = 64;
let requests = 0;

/**
 * Note a request for the app (ps, create, inspect, a route looked up...): parsed and merged JSON
 * is garbage too. Under a steady stream of them the runtimes' own collectors let it pile up (a
 * `ps` or unknown-id storm held 120-150 MB under Bun, 200-220 MB under Deno, measured), so the
 * resident size is looked at every CHECK_EVERY_REQUESTS of them, as for streamed bytes; and once
 * they stop, the process does not start its next stream from that higher level.
 */
export function noteAppRequest() {
  dirty = true;
  settleLater();
  if (++requests < CHECK_EVERY_REQUESTS) return;
  requests = 0;
  if (pressure() >= threshold) collectUnderPressure();
}
