/**
 * `GET /events`: one live stream merged from every host. Each event is tagged with its host
 * (`Actor.Attributes["flocker.host"]`); `since`, `until` and `filters` go to every host (a
 * `label=flocker.host=NAME` filter instead chooses the hosts followed); past events come first,
 * in time order over all hosts; a host that joins or comes back is (re)attached from where it
 * left off. No idle timeout anywhere.
 */
import { Hono } from "hono";
import type { FlockerContext } from "../context.ts";
import type { Host } from "../cluster/host.ts";
import { HOST_LABEL, takeHostFilterOf } from "./host-filter.ts";

interface DockerEvent {
  time?: number;
  timeNano?: number;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  [key: string]: unknown;
}

/** An event's `"timeNano":` digits (a label value is a string, never bare digits). */
const TIME_NANO = /"timeNano":(\d+)/;

/** The `since` just after an event's timeNano, exactly: "seconds.nanoseconds". */
function secondsAfter(nano: string): string {
  const next = BigInt(nano) + 1n;
  return `${next / 1_000_000_000n}.${(next % 1_000_000_000n).toString().padStart(9, "0")}`;
}

/** Docker's `since`/`until`: unix seconds (with fraction) or an RFC 3339 date. */
function toSeconds(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : t / 1000;
}

/** An engine's event line tagged with its host; `nano` is its timeNano's digits. */
function tagged(line: string, host: Host): { nano?: string; out: string } {
  const event = JSON.parse(line) as DockerEvent;
  // timeNano is past 2^53: its digits are taken from the text, a number would round them.
  const nano = TIME_NANO.exec(line)?.[1];
  event.Actor = { ...event.Actor, Attributes: { ...event.Actor?.Attributes, [HOST_LABEL]: host.name } };
  const out = JSON.stringify(event);
  return { nano, out: nano ? out.replace(TIME_NANO, `"timeNano":${nano}`) : out };
}

/** Digit strings of timeNano in time order (a longer one is later). */
const byNano = (a: { nano?: string }, b: { nano?: string }) => {
  const x = a.nano ?? "", y = b.nano ?? "";
  return x.length - y.length || (x < y ? -1 : x > y ? 1 : 0);
};

/** "seconds.nanoseconds" of a time in ms, as `since`/`until` take it. */
const secondsOf = (ms: number) => `${Math.floor(ms / 1000)}.${String((ms % 1000) * 1e6).padStart(9, "0")}`;

/**
 * How long a host may take to give its past events. Longer than a list's deadline: in a bounded
 * query (`until` past) a host left out is events lost, where a list would only lack a host.
 */
const PAST_TIMEOUT_MS = 10_000;

/** One host's past events (a bounded query: the engine answers them and ends). */
async function pastEvents(host: Host, path: string): Promise<{ status: number; text: string; type: string | null }> {
  const res = await (host.ask ?? host.fetch)(new Request(host.baseUrl + path, { signal: AbortSignal.timeout(PAST_TIMEOUT_MS) }));
  return { status: res.status, text: await res.text(), type: res.headers.get("content-type") };
}

export function eventRoutes(ctx: FlockerContext) {
  const app = new Hono();
  const { cluster } = ctx;

  app.get("/events", async (c) => {
    const url = new URL(c.req.url);
    const wanted = takeHostFilterOf(url);
    const until = toSeconds(url.searchParams.get("until") ?? undefined);
    const since = url.searchParams.get("since") ?? undefined;
    const encoder = new TextEncoder();
    const abort = new AbortController();
    const attached = new Map<string, Promise<void>>();
    let closed = false;
    let rescan: ReturnType<typeof setInterval> | undefined;
    const request = (host: Host, params: URLSearchParams) =>
      host.fetch(new Request(`${host.baseUrl}${url.pathname}?${params}`, { signal: abort.signal }));

    // The first answers come before ours: when every engine refuses the query (a bad `since`, a
    // malformed filter), that refusal is the answer, as from one engine, not an empty stream.
    const firsts = new Map<Host, Response>();
    const healthy = cluster.hosts.filter((h) => h.status.state === "healthy" && wanted(h));
    // Past events (`since`, `until`): every host's up to now, in time order as one engine gives
    // them (host after host, they would not be); each host's live events then follow on from its
    // last one, so none is lost or repeated whatever its clock says.
    const past: { nano?: string; out: string }[] = [];
    const resumeFrom = new Map<Host, string>();
    const nowMs = Date.now();
    if (until !== undefined || (since !== undefined && !((toSeconds(since) ?? 0) * 1000 > nowMs))) {
      const params = new URLSearchParams(url.searchParams);
      const ended = until !== undefined && until * 1000 <= nowMs;
      if (!ended) params.set("until", secondsOf(nowMs));
      const tried = await Promise.allSettled(healthy.map((h) => pastEvents(h, `${url.pathname}?${params}`)));
      const answers = tried.flatMap((t) => (t.status === "fulfilled" ? [t.value] : []));
      if (answers.length && answers.every((a) => a.status !== 200)) {
        const refusal = answers[0];
        return new Response(refusal.text, { status: refusal.status, headers: refusal.type ? { "content-type": refusal.type } : {} });
      }
      tried.forEach((t, i) => {
        if (t.status !== "fulfilled" || t.value.status !== 200) return;
        let last: string | undefined;
        for (const line of t.value.text.split("\n")) {
          if (!line.trim()) continue;
          const event = tagged(line, healthy[i]);
          past.push(event);
          last = event.nano ?? last;
        }
        if (last) resumeFrom.set(healthy[i], secondsAfter(last));
      });
      past.sort(byNano);
      if (ended) return new Response(past.map((e) => e.out + "\n").join(""), { headers: { "content-type": "application/json" } });
    } else {
      const tried = await Promise.allSettled(healthy.map((h) => request(h, new URLSearchParams(url.searchParams))));
      tried.forEach((t, i) => t.status === "fulfilled" && firsts.set(healthy[i], t.value));
      const answers = [...firsts.values()];
      if (answers.length && answers.every((r) => r.status !== 200)) {
        for (const r of answers.slice(1)) await r.body?.cancel();
        return new Response(answers[0].body, { status: answers[0].status, headers: answers[0].headers });
      }
    }

    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        const finish = () => {
          if (closed) return;
          closed = true;
          if (rescan) clearInterval(rescan);
          try {
            controller.close();
          } catch { /* already gone */ }
        };

        /** Follow one host's events; reconnect from the last event seen until `until` or the client leaves. */
        const follow = async (host: Host) => {
          let from = resumeFrom.get(host) ?? since;
          const decoder = new TextDecoder();
          while (!closed && cluster.hosts.includes(host)) {
            const params = new URLSearchParams(url.searchParams);
            if (from) params.set("since", from);
            let ended = false;
            try {
              const first = firsts.get(host);
              firsts.delete(host);
              const res = first ?? await request(host, params);
              if (res.status !== 200 || !res.body) {
                await res.body?.cancel();
                throw new Error(`status ${res.status}`);
              }
              let pending = "";
              for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
                pending += decoder.decode(chunk, { stream: true });
                let nl;
                while ((nl = pending.indexOf("\n")) >= 0) {
                  const line = pending.slice(0, nl);
                  pending = pending.slice(nl + 1);
                  if (!line.trim()) continue;
                  const { nano, out } = tagged(line, host);
                  if (nano) from = secondsAfter(nano);
                  if (!closed) controller.enqueue(encoder.encode(out + "\n"));
                }
              }
              ended = true;
            } catch {
              if (closed) return;
            }
            // A bounded query ends by itself; a live one broke: resume from the last event.
            if (until !== undefined && (ended || until * 1000 <= Date.now())) return;
            from ??= (Date.now() / 1000).toFixed(9);
            await new Promise((r) => setTimeout(r, 1000));
          }
        };

        const attachAll = () => {
          for (const host of cluster.hosts) {
            if (attached.has(host.address) || host.status.state !== "healthy" || !wanted(host)) continue;
            const done = follow(host).finally(() => {
              attached.delete(host.address);
              if (until !== undefined && attached.size === 0) finish();
            });
            attached.set(host.address, done);
          }
        };
        for (const event of past) controller.enqueue(encoder.encode(event.out + "\n"));
        attachAll();
        // A first answer whose host was not attached after all (its state changed meanwhile).
        for (const r of firsts.values()) void r.body?.cancel().catch(() => {});
        firsts.clear();
        if (attached.size === 0 && until !== undefined) finish();
        // Hosts that join or recover later are picked up while the stream lasts.
        if (until === undefined || until * 1000 > Date.now()) {
          rescan = setInterval(attachAll, cluster.probeIntervalMs);
        }
      },
      cancel() {
        closed = true;
        if (rescan) clearInterval(rescan);
        abort.abort();
      },
    });
    return new Response(stream, { headers: { "content-type": "application/json" } });
  });

  return app;
}
