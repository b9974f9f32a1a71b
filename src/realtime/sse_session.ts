/**
 * One Server-Sent Events stream: every change after `since` for the requested collections, page
 * after page until caught up, then live pages whenever the hub says another device pushed, and a
 * heartbeat while idle. Memory stays bounded: the hub only marks tables dirty, and a slow reader
 * only slows its own loop (each write waits for the previous one to be taken).
 */
import type { Page } from "../store/sync_store.ts";
import { withChanges } from "../sync/wire.ts";
import type { Hub } from "./hub.ts";

export interface SseStreamOptions {
  hub: Hub;
  userId: string;
  appId: string;
  /** The reader's own client id: its own pushes are neither streamed nor announced. */
  clientId?: string | undefined;
  collections: readonly string[];
  since: string;
  heartbeatMs: number;
  pull(table: string, since: string): Promise<Page>;
  /** Writes one event (`data`: one line of JSON); resolves when the stream has taken it. */
  write(event: "changes" | "heartbeat", data: string): Promise<void>;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
}

/** Runs the stream until the client leaves or the hub closes it (shutdown). */
export async function runSseStream(options: SseStreamOptions): Promise<void> {
  const { hub, collections, heartbeatMs } = options;
  const cursors = new Map(collections.map((table) => [table, options.since]));
  const dirty = new Set(collections);
  const closed = new AbortController();
  const signal = AbortSignal.any([options.signal, closed.signal]);
  let wake = () => {};
  signal.addEventListener("abort", () => wake());

  // Subscribe before catching up, so that a push during the catch-up is not missed.
  const unsubscribe = hub.add({
    userId: options.userId,
    appId: options.appId,
    clientId: options.clientId,
    deliver(event) {
      const tables = event.tables.length > 0
        ? event.tables.filter((t) => cursors.has(t))
        : collections;
      for (const table of tables) dirty.add(table);
      if (tables.length > 0) wake();
      return true;
    },
    close: () => closed.abort(),
  });

  try {
    while (!signal.aborted) {
      if (dirty.size === 0) {
        const woken = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), heartbeatMs);
          wake = () => {
            clearTimeout(timer);
            resolve(true);
          };
        });
        wake = () => {};
        if (signal.aborted) break;
        if (!woken) await options.write("heartbeat", "{}");
        continue;
      }
      for (const table of [...dirty]) {
        if (signal.aborted) break;
        dirty.delete(table);
        let page: Page;
        do {
          page = await options.pull(table, cursors.get(table)!);
          cursors.set(table, page.syncedUntil);
          if (page.serverChanges.length > 0) {
            const { serverChanges, syncedUntil, hasMore } = page;
            await options.write(
              "changes",
              withChanges("changes", serverChanges, { table, syncedUntil, hasMore }),
            );
          }
        } while (page.hasMore && !signal.aborted);
      }
    }
  } finally {
    unsubscribe();
  }
}
