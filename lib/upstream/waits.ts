/**
 * `docker run` opens `POST /containers/ID/wait` before it starts the container. When the start
 * fails (with --rm the engine removes the container first), the engine answers the wait before
 * the start, and the CLI relies on that order: hearing the start's error first, it cancels its
 * wait and prints "error waiting for container: context canceled". Through a proxy the two answers
 * travel separate paths, so a failed start is held until that container's open waits have been
 * answered (briefly: a wait that stays open, as for a start that failed without removal, is not
 * waited for past the limit).
 */
export class OpenWaits {
  readonly #open = new Map<string, { count: number; answered: (() => void)[] }>();

  begin(id: string) {
    const entry = this.#open.get(id) ?? { count: 0, answered: [] };
    entry.count++;
    this.#open.set(id, entry);
  }

  end(id: string) {
    const entry = this.#open.get(id);
    if (!entry) return;
    if (--entry.count > 0) return;
    this.#open.delete(id);
    for (const resolve of entry.answered) resolve();
  }

  /** Resolves when no wait on `id` is open any more, or after `limitMs`. */
  answered(id: string, limitMs: number): Promise<void> {
    const entry = this.#open.get(id);
    if (!entry) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, limitMs);
      entry.answered.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
