/**
 * The label flocker puts on what it lists (`docker ps`) and streams (`docker events`): the host a
 * container or event comes from. No engine has it, so `--filter label=flocker.host=NAME` cannot go
 * to the engines: it chooses the hosts asked instead (ps, events, container and build prunes).
 */
import type { Host } from "../cluster/host.ts";
import { DockerError } from "../errors.ts";

export const HOST_LABEL = "flocker.host";

export type Filters = Record<string, unknown>;

/**
 * A request's `filters` parameter, parsed; undefined when absent or malformed (the engines answer a
 * malformed filter themselves, in their own words).
 */
export function filtersOf(query: URLSearchParams): Filters | undefined {
  try {
    const filters = JSON.parse(query.get("filters") ?? "null");
    return filters && typeof filters === "object" ? filters : undefined;
  } catch {
    return undefined;
  }
}

/** Filter values in either form the API takes: {"name": {"x": true}} or {"name": ["x"]}. */
export function valuesOf(kind: string, entry: unknown): string[] {
  if (Array.isArray(entry)) return entry.map(String);
  if (entry && typeof entry === "object") return Object.keys(entry);
  throw new DockerError(400, `invalid filter '${kind}': ${JSON.stringify(entry)}`);
}

/**
 * Takes the `flocker.host` label filters out of `filters` (changed in place) and returns which hosts
 * they leave: label filters all have to match, as on one engine. Undefined when none names it.
 */
export function takeHostFilter(filters: Filters): ((host: Host) => boolean) | undefined {
  if (!("label" in filters)) return undefined;
  const labels = valuesOf("label", filters.label);
  const ours = labels.filter((l) => l === HOST_LABEL || l.startsWith(`${HOST_LABEL}=`));
  if (!ours.length) return undefined;
  const rest = labels.filter((l) => !ours.includes(l));
  if (rest.length) filters.label = rest;
  else delete filters.label;
  const names = ours.filter((l) => l !== HOST_LABEL).map((l) => l.slice(HOST_LABEL.length + 1));
  return (host) => names.every((n) => n === host.name);
}

/**
 * The same for a request's `filters` query parameter: the hosts to ask (all when it names none),
 * with the URL's filters rewritten without it.
 */
export function takeHostFilterOf(url: URL): (host: Host) => boolean {
  const filters = filtersOf(url.searchParams);
  const wanted = filters && takeHostFilter(filters);
  if (!wanted) return () => true;
  url.searchParams.set("filters", JSON.stringify(filters));
  return wanted;
}
