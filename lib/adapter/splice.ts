/**
 * Runtime glue: two sockets joined (hijacked attach and exec streams, connections handed to the
 * node:http server), bytes copied both ways as they come, half-close kept.
 */
import { noteStreamed } from "./memory.ts";
import { DenoStream } from "./deno/socket.ts";
import { BunStream } from "./bun/socket.ts";
import type { StreamSocket } from "./front.ts";
import type { HostAddress } from "../cluster/host.ts";
import { isContainerStream } from "../api/hijack.ts";

/** What splice needs: node:http's upgraded sockets (plain Duplex streams) qualify too. */
export type Spliceable = Omit<StreamSocket, "setNoDelay">;

/**
 * Our last word on a connection taken off the front (paused): FIN, then read on, so that the
 * client's FIN is seen and the socket closes (half-open sockets are ours to close; left paused,
 * each one kept its file descriptor for good). What the client still sends is dropped.
 */
export function endAndClose(socket: Spliceable) {
  socket.on("data", () => {});
  socket.end();
  socket.resume();
}

/**
 * A socket whose reads only pass on to another socket of the same runtime lends its chunks: under
 * Deno it reads into reused buffers (DenoStream.lend), under Bun each chunk is released as soon as
 * it is written (BunStream.lend). `to` undefined ends that. True when it lends.
 */
export function lend(from: Spliceable, to: Spliceable | undefined): boolean {
  if (from instanceof DenoStream) return (from.lend = to instanceof DenoStream);
  if (from instanceof BunStream) return (from.lend = to instanceof BunStream);
  return false;
}

/**
 * Whether a hijacked stream's output is gathered (splice's `gather`): a container's own stream
 * from a plain TCP or unix engine. Over TLS a read takes one record (16 KB under Deno), and
 * waiting after each capped an mTLS `exec -i` at ~11 MB/s.
 */
export function gathers(pathname: string, engine: HostAddress): boolean {
  return isContainerStream(pathname) && !engine.tls;
}

/** Chunks under this size that come back to back are a burst of small frames. */
const GATHER_BELOW = 64 * 1024;
/** Back to back: the last chunk came less than this long ago (ms). */
const BURST_MS = 2;
/** How long the next read of a burst waits (ms). */
const GATHER_MS = 1;

/**
 * Copy both ways, keeping half-close: the client's EOF reaches the engine, the rest of the output
 * still comes back. `gather` (attach and exec streams): a container's output comes in the engine's
 * small frames (4 KB writes of `head`, `cat`...), and passed on one by one each costs a wakeup, a
 * read and a write: ~7 ms of CPU per MB (measured; a `docker cp` takes ~1). Once small chunks come
 * back to back, the next read waits GATHER_MS for the kernel to gather more: a third of the CPU,
 * and the stream as fast as straight from the engine. Sparse output (a shell's echo) is never held.
 * Only over plain TCP or unix sockets, where a read takes all that came (see `gathers`).
 */
export function splice(socket: Spliceable, upstream: Spliceable, gather = false) {
  const forward = (from: Spliceable, to: Spliceable, gather: boolean) => {
    lend(from, to); // no buffer per chunk left to the collector
    let last = -Infinity;
    from.on("data", (chunk: Buffer) => {
      noteStreamed(chunk.length);
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      } else if (gather && chunk.length < GATHER_BELOW) {
        const now = performance.now();
        if (now - last < BURST_MS) {
          from.pause();
          setTimeout(() => from.resume(), GATHER_MS);
        }
        last = now;
      }
    });
    from.on("end", () => to.end());
  };
  forward(socket, upstream, false);
  forward(upstream, socket, gather);
  upstream.on("error", () => socket.destroy());
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => {
    if (!socket.writableEnded) socket.end();
  });
  socket.resume();
}
