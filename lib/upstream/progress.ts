/**
 * Docker progress streams (pull, push, build, load) are JSON lines. Several hosts' streams are
 * merged line by line as they arrive; with more than one host, layer ids are prefixed by the
 * host so the CLI draws one bar per host and layer.
 */
import type { Host } from "../cluster/host.ts";
import { progressErrorLine } from "../errors.ts";

export interface ProgressSource {
  host: Host;
  body: ReadableStream<Uint8Array> | null;
  /** Error to report instead of a body (host unreachable, refused). */
  error?: string;
}

export interface MergeOptions {
  /** Prefix ids with the host name (default: when there is more than one source). */
  tagIds?: boolean;
  /** Called per parsed line (e.g. to notice an error or a completed pull). */
  onLine?: (host: Host, line: Record<string, unknown>) => void;
  /** Called when a host's stream ends; a returned promise is awaited before the merged stream may close. */
  onDone?: (host: Host, failed: boolean) => void | Promise<void>;
}

export function mergeProgress(sources: ProgressSource[], options: MergeOptions = {}): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  const tagIds = options.tagIds ?? sources.length > 1;
  const readers: ReadableStreamDefaultReader<Uint8Array>[] = [];
  return new ReadableStream<Uint8Array>({
    start(controller) {
      let open = sources.length;
      const finish = () => {
        if (--open === 0) controller.close();
      };
      if (!open) controller.close();
      for (const source of sources) {
        const { host } = source;
        if (source.error || !source.body) {
          const message = source.error ?? "no response";
          controller.enqueue(encoder.encode(progressErrorLine(tagIds ? `${host.name}: ${message}` : message)));
          Promise.resolve(options.onDone?.(host, true)).catch(() => {});
          finish();
          continue;
        }
        const reader = source.body.getReader();
        readers.push(reader);
        const decoder = new TextDecoder();
        let pending = "";
        let failed = false;
        const emit = (text: string) => {
          if (!text.trim()) return;
          let line: Record<string, unknown> | undefined;
          try {
            line = JSON.parse(text);
          } catch { /* not JSON: pass through */ }
          if (line) {
            if (line.error) failed = true;
            options.onLine?.(host, line);
            if (tagIds) {
              if (typeof line.id === "string") line.id = `${host.name}: ${line.id}`;
              else if (typeof line.status === "string") line.status = `${host.name}: ${line.status}`;
              if (typeof line.error === "string") line.error = `${host.name}: ${line.error}`;
            }
            text = JSON.stringify(line);
          }
          controller.enqueue(encoder.encode(text + "\n"));
        };
        (async () => {
          try {
            for (;;) {
              const { done, value } = await reader.read();
              if (done) break;
              if (!tagIds && !options.onLine) {
                controller.enqueue(value); // one host and nobody listening: pass bytes through untouched
                continue;
              }
              pending += decoder.decode(value, { stream: true });
              let nl;
              while ((nl = pending.indexOf("\n")) >= 0) {
                emit(pending.slice(0, nl));
                pending = pending.slice(nl + 1);
              }
            }
            emit(pending);
          } catch (err) {
            failed = true;
            try {
              controller.enqueue(encoder.encode(progressErrorLine(`${host.name}: stream broken: ${(err as Error).message}`)));
            } catch { /* client gone */ }
          }
          try {
            await options.onDone?.(host, failed);
          } catch { /* bookkeeping only: the stream still ends */ }
          finish();
        })();
      }
    },
    cancel(reason) {
      for (const r of readers) r.cancel(reason).catch(() => {});
    },
  });
}
