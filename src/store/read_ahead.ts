/**
 * Read-ahead for pulls. A client that gets a full page (`hasMore`) asks for the next one at once,
 * from the `syncedUntil` it was just given (protocol: clients follow `hasMore` until it is false).
 * So when a pull returns a full page, the next page is read right away, while the first one
 * travels to the client and is parsed there, and the client's next request takes it.
 *
 * A page read earlier is still a correct answer: stamps are unique and in commit order (see
 * sync_store.ts), so no change can appear later at or before a `syncedUntil` already handed out,
 * and a page that is served late only means the client comes back for what followed sooner than
 * it would have. A page read ahead is dropped after `maxAgeMs` (a pull then reads for itself), at
 * most `maxPages` are held at once (oldest dropped first), a read that failed is never served, and
 * nothing is read ahead while the database is busy.
 */
import type { Page, PullInput, SyncStore } from "./sync_store.ts";

export interface ReadAheadOptions {
  /** Pages kept at once, over all users (default 32). */
  maxPages?: number;
  /** Age after which a page read ahead is not served (default 5 s). */
  maxAgeMs?: number;
  /** True while the database has no room for speculative reads. */
  busy?: () => boolean;
}

export interface ReadAheadStats {
  /** Pulls answered by a page read ahead. */
  hits: number;
  /** Pages read ahead that nobody took (expired, dropped or failed). */
  wasted: number;
  /** Pages held now. */
  held: number;
}

interface Ahead {
  page: Promise<Page | undefined>;
  /** Drops the page once `maxAgeMs` has passed (an unreferenced timer: it never holds exit). */
  timer: ReturnType<typeof setTimeout>;
}

/** `store` with read-ahead on `pull`; `push` is unchanged. */
export function withReadAhead(
  store: SyncStore,
  options: ReadAheadOptions = {},
): SyncStore & { stats(): ReadAheadStats } {
  const { maxPages = 32, maxAgeMs = 5_000, busy = () => false } = options;
  const ahead = new Map<string, Ahead>();
  const stats = { hits: 0, wasted: 0 };
  const keyOf = (p: PullInput) =>
    JSON.stringify([p.userId, p.appId, p.clientId, p.table, p.since, p.pageSize]);

  /** Removes a page; `taken` when a pull has it, else it counts as wasted. */
  function remove(key: string, entry: Ahead, taken = false) {
    ahead.delete(key);
    clearTimeout(entry.timer);
    if (!taken) stats.wasted++;
  }

  function readAhead(next: PullInput) {
    if (maxPages <= 0 || busy()) return;
    const key = keyOf(next);
    if (ahead.has(key)) return;
    while (ahead.size >= maxPages) {
      const [oldest, entry] = ahead.entries().next().value!;
      remove(oldest, entry);
    }
    // A failed read is not served: the request that would have taken it reads for itself.
    const page = store.pull(next).catch(() => undefined);
    const timer = setTimeout(() => {
      if (ahead.get(key) === entry) remove(key, entry);
    }, maxAgeMs);
    Deno.unrefTimer(Number(timer)); // Deno's timers are numbers (the types are Node's here)
    const entry: Ahead = { page, timer };
    ahead.set(key, entry);
  }

  async function take(input: PullInput): Promise<Page | undefined> {
    const key = keyOf(input);
    const entry = ahead.get(key);
    if (entry === undefined) return undefined; // never read, taken, or dropped by its timer
    remove(key, entry, true);
    const page = await entry.page;
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
    stats: () => ({ ...stats, held: ahead.size }),
  };
}
