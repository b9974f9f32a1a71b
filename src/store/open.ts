/** Opens the configured database and brings its schema up to date. */
import type { Config } from "../config.ts";
import { type Db, openPglite, openPostgres } from "./db.ts";
import { loadMigrations, migrate } from "./migrate.ts";

export const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

export async function openDatabase(
  config: Pick<Config, "databaseUrl" | "databasePoolMax" | "databaseTimeoutMs" | "dataDir">,
  options: { onDrop?: (reason: unknown) => void } = {},
): Promise<{ db: Db; applied: number[] }> {
  const migrations = await loadMigrations(MIGRATIONS_DIR);
  if (!config.databaseUrl) {
    const db = await openPglite(`${config.dataDir}/pglite`);
    try {
      return { db, applied: await migrate(db, migrations) };
    } catch (e) {
      await db.close().catch(() => {});
      throw e;
    }
  }
  const connectTimeoutSeconds = Math.ceil(config.databaseTimeoutMs / 1000);
  // Migrations may legitimately wait (another instance's lock, a long DDL): their own connection,
  // without the serving pool's bound on each answer.
  const admin = openPostgres(config.databaseUrl, { max: 1, connectTimeoutSeconds });
  let applied: number[];
  try {
    applied = await migrate(admin, migrations);
  } finally {
    await admin.close();
  }
  const db = openPostgres(config.databaseUrl, {
    max: config.databasePoolMax,
    connectTimeoutSeconds,
    timeoutMs: config.databaseTimeoutMs,
    ...(options.onDrop ? { onDrop: options.onDrop } : {}),
  });
  return { db, applied };
}

/** Whether the database answers within `timeoutMs`. */
export async function pingDatabase(db: Db, timeoutMs = 2000): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      db.query("SELECT 1").then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), timeoutMs)),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
