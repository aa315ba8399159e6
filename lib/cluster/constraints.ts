/**
 * Swarm-style placement rules carried by the container itself, in its Env or Labels:
 * `constraint:node==NAME` (host name or address), `constraint:node!=NAME`,
 * `constraint:KEY==VALUE` against the engine's `--label`s, and `affinity:container==REF`.
 * Values may use `*` as a wildcard.
 */
import type { Host } from "./host.ts";

export interface Constraint {
  kind: "constraint" | "affinity";
  key: string;
  negate: boolean;
  value: string;
  /** As written, for error messages. */
  text: string;
}

const RULE = /^(constraint|affinity):([A-Za-z0-9_.\-/]+)(==|!=)(.+)$/;

export function parseConstraints(body: { Env?: string[] | null; Labels?: Record<string, string> | null }): Constraint[] {
  const found: Constraint[] = [];
  const add = (text: string) => {
    const m = RULE.exec(text.trim());
    if (m) found.push({ kind: m[1] as Constraint["kind"], key: m[2], negate: m[3] === "!=", value: m[4], text: text.trim() });
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
