/**
 * The backup's SQL. Export: the user's whole log in commit order through a cursor, in the user's
 * read-only RLS transaction. Import: archived changes replayed through `storeChanges`, the write
 * path of push, in one transaction.
 */
import type { LogRow } from "../sync/wire.ts";
import { type Db, withUser } from "./db.ts";
import { type ChangeEntry, LOG_COLUMNS, storeChanges } from "./sync_store.ts";

/** The user's log in commit order; `sync_changes_user_created (user_id, created_at)` serves it. */
const READ_LOG = `SELECT ${LOG_COLUMNS} FROM sync_changes WHERE user_id = $1 ORDER BY created_at`;

export interface ImportResult {
  /** Changes read from the input. */
  read: number;
  /** Changes stored; the others carried an eventId this user already had. */
  stored: number;
  /** The tables that received stored changes, per app (for notifications). */
  touched: Map<string, string[]>;
}

export interface BackupStore {
  /**
   * Calls `fn` with the user's whole log in commit order, read through a cursor inside the user's
   * read-only transaction, which stays open until `fn` settles. Rows are fetched as `fn` iterates.
   */
  readLog<T>(userId: string, fn: (rows: AsyncIterable<LogRow>) => Promise<T>): Promise<T>;
  /**
   * Stores `changes` (in order) for the user in one transaction, as pushes would, keeping each
   * change's eventId, app and client id: nothing is stored twice, and the LWW state follows.
   */
  importChanges(userId: string, changes: AsyncIterable<ChangeEntry>): Promise<ImportResult>;
}

export interface BackupStoreOptions {
  /** Rows per cursor fetch, and changes per `storeChanges` batch. */
  batchSize?: number;
}

async function* rowsOf<T>(batches: AsyncIterable<T[]>): AsyncGenerator<T> {
  for await (const batch of batches) yield* batch;
}

export function createBackupStore(db: Db, options: BackupStoreOptions = {}): BackupStore {
  const batchSize = options.batchSize ?? 1000;
  return {
    readLog: (userId, fn) =>
      withUser(db, userId, async (tx) => {
        const rows = rowsOf(tx.cursor<LogRow>(READ_LOG, [userId], batchSize));
        try {
          return await fn(rows);
        } finally {
          // Closes the cursor (after a fetch in flight) before the transaction ends.
          await rows.return(undefined);
        }
      }, { readOnly: true }),

    importChanges: (userId, changes) =>
      withUser(db, userId, async (tx) => {
        const touched = new Map<string, Set<string>>();
        let read = 0, stored = 0, batch: ChangeEntry[] = [];
        const flush = async () => {
          const result = await storeChanges(tx, userId, batch);
          batch = [];
          stored += result.stored.length;
          for (const { appId, change } of result.stored) {
            let tables = touched.get(appId);
            if (!tables) touched.set(appId, tables = new Set());
            tables.add(change.table);
          }
        };
        for await (const entry of changes) {
          read++;
          batch.push(entry);
          if (batch.length >= batchSize) await flush();
        }
        await flush();
        return {
          read,
          stored,
          touched: new Map([...touched].map(([appId, tables]) => [appId, [...tables]])),
        };
      }),
  };
}
