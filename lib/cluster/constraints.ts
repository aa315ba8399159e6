/**
 * Swarm-style placement rules carried by the container itself, in its Env or Labels:
 * `constraint:node==NAME` (host name or address), `constraint:node!=NAME`,
 * `constraint:KEY==VALUE` against the engine's `--label`s, `affinity:container==REF` (the host of
 * that container; `!=`: not there) and `affinity:image==REF` (a host holding that image).
 * Values may use `*` as a wildcard or be a `/regular expression/`. A rule written `==~` or `!=~`
 * is soft, as in Swarm: followed when some host satisfies it, else let go.
 */
import type { FlockerContext } from "../context.ts";
import type { Host } from "./host.ts";
import { fanoutJson } from "../upstream/fanout.ts";
import { DockerError } from "../errors.ts";

export interface Constraint {
  kind: "constraint" | "affinity";
  key: string;
  negate: boolean;
  /** `==~` / `!=~`: a preference, dropped when no host satisfies it. */
  soft: boolean;
  value: string;
  /** As written, for error messages. */
  text: string;
}

const isRegExp = (pattern: string) => pattern.length > 2 && pattern.startsWith("/") && pattern.endsWith("/");

const RULE = /^(constraint|affinity):([A-Za-z0-9_.\-/]+)(==|!=)(~?)(.+)$/;

export function parseConstraints(body: { Env?: string[] | null; Labels?: Record<string, string> | null }): Constraint[] {
  const found: Constraint[] = [];
  const add = (text: string) => {
    const m = RULE.exec(text.trim());
    if (!m) return;
    const value = m[5];
    if (isRegExp(value)) {
      try {
        new RegExp(value.slice(1, -1));
      } catch (err) {
        // A typo in a rule is said, not taken for a rule no host satisfies (or one always met).
        throw new DockerError(400, `invalid regular expression in ${text.trim()}: ${(err as Error).message}`);
      }
    }
    found.push({ kind: m[1] as Constraint["kind"], key: m[2], negate: m[3] === "!=", soft: m[4] === "~", value, text: text.trim() });
  };
  for (const e of body.Env ?? []) add(e);
  for (const [k, v] of Object.entries(body.Labels ?? {})) {
    if (k === "com.docker.swarm.constraints" || k === "com.docker.swarm.affinities") {
      try {
        const prefix = k.endsWith("constraints") ? "constraint:" : "affinity:";
        for (const rule of JSON.parse(v) as string[]) add(prefix + rule);
      } catch { /* not a JSON list: ignored, as Swarm did */ }
    } else if (k.startsWith("constraint:") || k.startsWith("affinity:")) add(`${k}==${v}`);
  }
  return found;
}

function matches(pattern: string, value: string): boolean {
  if (isRegExp(pattern)) return new RegExp(pattern.slice(1, -1)).test(value); // checked by parseConstraints
  if (!pattern.includes("*")) return pattern === value;
  const re = new RegExp("^" + pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, "\\$&")).join(".*") + "$");
  return re.test(value);
}

/** Whether a host satisfies a `constraint:` rule (affinities are resolved by the caller). */
export function satisfies(host: Host, c: Constraint): boolean {
  let ok: boolean;
  if (c.key === "node") ok = matches(c.value, host.name) || matches(c.value, host.address);
  else {
    ok = host.status.labels.some((label) => {
      const eq = label.indexOf("=");
      return eq > 0 && label.slice(0, eq) === c.key && matches(c.value, label.slice(eq + 1));
    });
  }
  return c.negate ? !ok : ok;
}

/** A value that matches by `*` or as a `/regular expression/`, not exactly. */
const isPattern = (value: string) => value.includes("*") || isRegExp(value);

/** The hosts whose list at `path` has an entry with a name that the pattern matches. */
async function hostsListing<T>(ctx: FlockerContext, path: string, names: (entry: T) => string[], pattern: string): Promise<Set<Host>> {
  const { answers } = await fanoutJson<T[]>(ctx.cluster.healthy(), path);
  const named = (entry: T) => names(entry).some((name) => matches(pattern, name));
  return new Set(answers.filter((a) => a.status === 200 && Array.isArray(a.body) && a.body.some(named)).map((a) => a.host));
}

/** The hosts holding a container that a rule's value names (a name or id; a pattern matches names). */
function hostsWithContainer(ctx: FlockerContext, ref: string): Promise<Set<Host>> {
  if (isPattern(ref)) {
    return hostsListing<{ Names?: string[] | null }>(ctx, "/containers/json?all=1", (c) => (c.Names ?? []).map((n) => n.replace(/^\//, "")), ref);
  }
  return ctx.locator.container(ref).then((found) => new Set([found.host]), () => new Set<Host>());
}

/**
 * The hosts holding an image that a rule's value names, asked of the hosts themselves (the probe's
 * list may lag behind a pull or commit made a moment ago); a pattern matches tags.
 */
async function hostsWithImage(ctx: FlockerContext, ref: string): Promise<Set<Host>> {
  if (isPattern(ref)) return hostsListing<{ RepoTags?: string[] | null }>(ctx, "/images/json", (img) => img.RepoTags ?? [], ref);
  return new Set(await ctx.cluster.imageHolders(ref));
}

/**
 * A rule as a test of each host: a constraint against the host itself, an affinity against what
 * it holds (containers, images). An affinity of another kind is not Swarm's: it holds everywhere.
 */
export async function hostTest(ctx: FlockerContext, c: Constraint): Promise<(host: Host) => boolean> {
  if (c.kind === "constraint") return (host) => satisfies(host, c);
  const holders = c.key === "container" ? await hostsWithContainer(ctx, c.value) : c.key === "image" ? await hostsWithImage(ctx, c.value) : undefined;
  if (!holders) return () => true;
  return (host) => holders.has(host) !== c.negate;
}
