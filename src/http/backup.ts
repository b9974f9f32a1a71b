/**
 * Backup handlers: export streams the user's log as a `.mana` archive; import reads an uploaded one
 * (bounded), verifies it, replays it. Parse, call the store and the backup core, shape the reply.
 */
import type { Context } from "hono";
import { type ArchivedEvent, openBackup } from "../backup/reader.ts";
import { backupFileName } from "../backup/format.ts";
import { writeBackup } from "../backup/writer.ts";
import { errorFields, type Logger } from "../log.ts";
import type { SyncEvent } from "../realtime/hub.ts";
import type { BackupStore } from "../store/backup_store.ts";
import type { ChangeEntry } from "../store/sync_store.ts";
import { SyncError } from "../sync/errors.ts";
import type { Env } from "./env.ts";

export interface BackupHandlerOptions {
  store: BackupStore;
  /** Largest accepted upload (413 beyond). */
  maxImportBytes: number;
  /**
   * Exports running at once (503 beyond): each holds a database connection for as long as its
   * client takes to download, so a few slow downloads must not take the whole pool.
   */
  maxConcurrentExports: number;
  logger: Logger;
  /** Called after an import that stored something has committed, once per app. */
  onImported?: (event: SyncEvent) => void;
  now?: () => number;
}

/**
 * The upload's chunks, counted as they arrive: 413 as soon as they exceed `max` (or when the
 * declared length does), without reading the rest.
 */
async function readBounded(request: Request, max: number): Promise<Uint8Array[]> {
  const tooLarge = () =>
    new SyncError(
      413,
      "backup_too_large",
      `Archive is larger than ${max} bytes (MAX_IMPORT_BYTES)`,
    );
  if (Number(request.headers.get("content-length") ?? 0) > max) throw tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of request.body ?? []) {
    size += chunk.length;
    if (size > max) throw tooLarge(); // leaving the loop cancels the body
    chunks.push(chunk);
  }
  return chunks;
}

/**
 * The archive's events as the store's entries. The original commit time stands in for the time
 * the first server received a change (the LWW time of a hard delete or of an insert without a
 * time of its own), so the replay rebuilds the state the first server had.
 */
async function* entriesOf(events: AsyncIterable<ArchivedEvent>): AsyncGenerator<ChangeEntry> {
  for await (const { appId, clientId, createdAt, change } of events) {
    yield { appId, clientId, receivedAt: createdAt, change };
  }
}

/**
 * Reads the first row at once (which opens the transaction and the cursor), then hands out a
 * generator of that row and the rest.
 */
async function primed<T>(rows: AsyncIterable<T>): Promise<AsyncGenerator<T>> {
  const iterator = rows[Symbol.asyncIterator]();
  const first = await iterator.next();
  return (async function* () {
    try {
      for (let next = first; !next.done; next = await iterator.next()) yield next.value;
    } finally {
      await iterator.return?.();
    }
  })();
}

export function backupHandlers(options: BackupHandlerOptions) {
  const { store, logger, now = Date.now } = options;
  let exporting = 0;

  /**
   * Answers once the user's transaction is open and the first rows were read, so that a database
   * that is down is a 503, not a broken download. From then on the archive streams; a failure
   * aborts the response, and the partial file has no manifest.
   */
  async function exportBackup(c: Context<Env>) {
    const userId = c.get("userId");
    if (exporting >= options.maxConcurrentExports) {
      throw new SyncError(503, "export_busy", "Too many exports are running, try again shortly", {
        headers: { "Retry-After": "5" },
      });
    }
    const createdAt = new Date(now());
    const body = new TransformStream<Uint8Array, Uint8Array>();
    const started = Promise.withResolvers<void>();
    let streaming = false;
    exporting++;
    store.readLog(userId, async (rows) => {
      const source = await primed(rows);
      streaming = true;
      started.resolve();
      await writeBackup(source, { userId, createdAt }).pipeTo(body.writable);
    }).then(
      () => logger.info("backup exported", { userId, ms: now() - createdAt.getTime() }),
      (error) => {
        // Before the answer, the error becomes the answer (app.ts maps it); after, it is logged.
        if (!streaming) return started.reject(error);
        logger.warn("backup export ended early", { userId, ...errorFields(error) });
      },
    ).finally(() => exporting--);
    await started.promise;
    return c.body(body.readable, 200, {
      "Content-Type": "application/zip",
      "Content-Disposition": `attachment; filename="${backupFileName(userId, createdAt)}"`,
      "Cache-Control": "no-store",
    });
  }

  async function importBackup(c: Context<Env>) {
    const userId = c.get("userId");
    if (/^multipart\//i.test(c.req.header("content-type") ?? "")) {
      throw new SyncError(
        415,
        "unsupported_media_type",
        "Send the .mana file itself as the request body (application/zip), not a form",
      );
    }
    const backup = await openBackup(await readBounded(c.req.raw, options.maxImportBytes));
    if (backup.manifest.userId !== userId) {
      throw new SyncError(
        403,
        "backup_foreign_user",
        `The archive belongs to user "${backup.manifest.userId}", not to the caller`,
      );
    }
    const summary = await backup.verify();
    const result = await store.importChanges(userId, entriesOf(backup.events()));
    const clientId = c.req.header("x-client-id") ?? "";
    for (const [appId, tables] of result.touched) {
      options.onImported?.({ userId, appId, tables, clientId });
    }
    logger.info("backup imported", { userId, events: result.read, stored: result.stored });
    return c.json({
      eventCount: summary.eventCount,
      imported: result.stored,
      alreadyStored: result.read - result.stored,
      apps: summary.apps,
    });
  }

  return { exportBackup, importBackup };
}
