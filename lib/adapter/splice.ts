/**
 * Runtime glue: two sockets joined (hijacked attach and exec streams, connections handed to the
 * node:http server), bytes copied both ways as they come, half-close kept.
 */
import { noteStreamed } from "./memory.ts";
import { DenoStream } from "./deno/socket.ts";
import { BunStream } from "./bun/socket.ts";
import type { StreamSocket } from "./front.ts";

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

/** Copy both ways, keeping half-close: the client's EOF reaches the engine, the rest of the output still comes back. */
export function splice(socket: Spliceable, upstream: Spliceable) {
  const forward = (from: Spliceable, to: Spliceable) => {
    lend(from, to); // no buffer per chunk left to the collector
    from.on("data", (chunk: Buffer) => {
      noteStreamed(chunk.length);
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => from.resume());
      }
    });
    from.on("end", () => to.end());
  };
  forward(socket, upstream);
  forward(upstream, socket);
  upstream.on("error", () => socket.destroy());
  socket.on("close", () => upstream.destroy());
  upstream.on("close", () => {
    if (!socket.writableEnded) socket.end();
  });
  socket.resume();
}
