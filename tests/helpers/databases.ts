/**
 * The databases a store test runs on: always the embedded PGlite (in memory), and PostgreSQL too
 * when TEST_DATABASE_URL or DATABASE_URL is set. Tests isolate themselves by user id, so one
 * database serves a whole run.
 */
import { type Db, openPglite, openPostgres, withUser } from "../../src/store/db.ts";
import { loadMigrations, migrate } from "../../src/store/migrate.ts";
import { MIGRATIONS_DIR } from "../../src/store/open.ts";

export const POSTGRES_URL = Deno.env.get("TEST_DATABASE_URL") || Deno.env.get("DATABASE_URL") ||
  undefined;

export interface TestDatabase {
  name: "pglite" | "postgres";
  /** A migrated database; close it when done. */
  open(): Promise<Db>;
}

async function migrated(db: Db): Promise<Db> {
  await migrate(db, await loadMigrations(MIGRATIONS_DIR));
  return db;
}

export const testDatabases: TestDatabase[] = [
  { name: "pglite", open: () => openPglite().then(migrated) },
  ...(POSTGRES_URL
    ? [{ name: "postgres" as const, open: () => migrated(openPostgres(POSTGRES_URL, { max: 4 })) }]
    : []),
];

/**
 * A brand-new, empty PostgreSQL database next to the test one (for migration tests), dropped by
 * the returned `drop()`.
 */
export async function scratchPostgres(): Promise<{ url: string; drop: () => Promise<void> }> {
  if (!POSTGRES_URL) throw new Error("scratchPostgres() needs TEST_DATABASE_URL or DATABASE_URL");
  const name = `mana_sync_scratch_${crypto.randomUUID().replaceAll("-", "")}`;
  const admin = openPostgres(POSTGRES_URL, { max: 1 });
  await admin.exec(`CREATE DATABASE ${name}`);
  const url = new URL(POSTGRES_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.close();
    },
  };
}

/** Rows of `table` visible inside the user's RLS transaction (no user_id filter of its own). */
export async function countRows(db: Db, userId: string, table = "sync_changes"): Promise<number> {
  const [row] = await withUser(
    db,
    userId,
    (tx) => tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`),
  );
  return row!.n;
}
