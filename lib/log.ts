/**
 * Structured logs: one JSON object per line. Core code, no runtime imports: the line goes to
 * `console.log` (stdout) unless the embedder passes its own writer.
 *
 * Request lines carry the level their status earns (5xx `error`, 4xx `warn`, the rest `info`), so
 * `FLOCKER_LOG=warn` keeps only failed requests and `error` only the 5xx ones. Headers and bodies
 * are never logged (no X-Registry-Auth, no /auth credentials), nor query strings (build args).
 */

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export class Logger {
  readonly rank: number;
  /** The lowest response status a request line is written for (Infinity: none). */
  readonly minStatus: number;

  constructor(readonly level: LogLevel = "silent", private readonly write: (line: string) => void = (line) => console.log(line)) {
    this.rank = RANK[level] ?? RANK.info;
    this.minStatus = this.rank <= RANK.info ? 0 : this.rank === RANK.warn ? 400 : this.rank === RANK.error ? 500 : Infinity;
  }

  enabled(level: Exclude<LogLevel, "silent">): boolean {
    return RANK[level] >= this.rank;
  }

  log(level: Exclude<LogLevel, "silent">, msg: string, fields: Record<string, unknown> = {}) {
    if (!this.enabled(level)) return;
    this.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }));
  }
}

/** The level a request line is written at, by its response status. */
export function requestLevel(status: number): "info" | "warn" | "error" {
  return status >= 500 ? "error" : status >= 400 ? "warn" : "info";
}
