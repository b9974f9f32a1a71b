/** Opens the configured database and brings its schema up to date. */
import type { Config } from "../config.ts";
import { type Db, openPglite, openPostgres } from "./db.ts";
import { loadMigrations, migrate } from "./migrate.ts";

export const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

export async function openDatabase(
  config: Pick<Config, "databaseUrl" | "databasePoolMax" | "dataDir">,
): Promise<{ db: Db; applied: number[] }> {
  const db = config.databaseUrl
    ? openPostgres(config.databaseUrl, { max: config.databasePoolMax })
    : await openPglite(`${config.dataDir}/pglite`);
  try {
    const applied = await migrate(db, await loadMigrations(MIGRATIONS_DIR));
    return { db, applied };
  } catch (e) {
    await db.close().catch(() => {});
    throw e;
  }
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
