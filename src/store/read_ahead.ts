/**
 * Read-ahead for pulls. A client that gets a full page (`hasMore`) asks for the next one at once,
 * from the `syncedUntil` it was just given (protocol: clients follow `hasMore` until it is false).
 * So when a pull returns a full page, the next page is read right away, while the first one
 * travels to the client and is parsed there, and the client's next request takes it.
 *
 * A page read earlier is still a correct answer: stamps are unique and in commit order (see
 * sync_store.ts), so no change can appear later at or before a `syncedUntil` already handed out,
 * and a page that is served late only means the client comes back for what followed sooner than
 * it would have. Pages read ahead are kept for at most `maxAgeMs` (older ones are read again) and
 * at most `maxPages` at once (oldest dropped); a read that failed is never served, and nothing is
 * read ahead while the database is busy.
 */
import type { Page, PullInput, SyncStore } from "./sync_store.ts";

export interface ReadAheadOptions {
  /** Pages kept at once, over all users (default 32). */
  maxPages?: number;
  /** Age after which a page read ahead is not served (default 5 s). */
  maxAgeMs?: number;
  /** True while the database has no room for speculative reads. */
  busy?: () => boolean;
  now?: () => number;
}

export interface ReadAheadStats {
  /** Pulls answered by a page read ahead. */
  hits: number;
  /** Pages read ahead that nobody took (expired, dropped or failed). */
  wasted: number;
}

interface Ahead {
  at: number;
  page: Promise<Page | undefined>;
}

/** `store` with read-ahead on `pull`; `push` is unchanged. */
export function withReadAhead(
  store: SyncStore,
  options: ReadAheadOptions = {},
): SyncStore & { stats(): ReadAheadStats } {
  const { maxPages = 32, maxAgeMs = 5_000, busy = () => false, now = Date.now } = options;
  const ahead = new Map<string, Ahead>();
  const stats: ReadAheadStats = { hits: 0, wasted: 0 };
  const keyOf = (p: PullInput) =>
    JSON.stringify([p.userId, p.appId, p.clientId, p.table, p.since, p.pageSize]);

  function readAhead(next: PullInput) {
    if (maxPages <= 0 || busy()) return;
    const key = keyOf(next);
    if (ahead.has(key)) return;
    while (ahead.size >= maxPages) {
      ahead.delete(ahead.keys().next().value!);
      stats.wasted++;
    }
    // A failed read is not served: the request that would have taken it reads for itself.
    const page = store.pull(next).catch(() => undefined);
    ahead.set(key, { at: now(), page });
  }

  async function take(input: PullInput): Promise<Page | undefined> {
    const key = keyOf(input);
    const entry = ahead.get(key);
    if (entry === undefined) return undefined;
    ahead.delete(key);
    const page = now() - entry.at <= maxAgeMs ? await entry.page : undefined;
    if (page === undefined) stats.wasted++;
    else stats.hits++;
    return page;
  }

  return {
    push: (input) => store.push(input),
    async pull(input) {
      const page = await take(input) ?? await store.pull(input);
      if (page.hasMore) readAhead({ ...input, since: page.syncedUntil });
      return page;
    },
    stats: () => ({ ...stats }),
  };
}
