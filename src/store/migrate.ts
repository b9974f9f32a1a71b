/**
 * Numbered, forward-only migrations (`migrations/NNN_name.sql`), applied once each and recorded in
 * `schema_migrations`. All pending files run in one transaction under an advisory lock, so two
 * instances starting at the same moment apply each migration exactly once.
 */
import type { Db } from "./db.ts";

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Arbitrary, fixed: the advisory lock key that serializes migration runs. */
const LOCK_KEY = 7_364_501;

/** Reads `NNN_name.sql` files from `dir`; the numbers must run 1, 2, 3, … without gaps. */
export async function loadMigrations(dir: URL): Promise<Migration[]> {
  const migrations: Migration[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = /^(\d+)_(.+)\.sql$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    migrations.push({
      version: Number(m[1]),
      name: m[2]!,
      sql: await Deno.readTextFile(new URL(entry.name, dir)),
    });
  }
  migrations.sort((a, b) => a.version - b.version);
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      throw new Error(
        `Cannot load migrations: expected number ${i + 1}, found "${m.version}_${m.name}"`,
      );
    }
  });
  return migrations;
}

/** Applies the migrations not yet recorded; returns the versions it applied. */
export function migrate(db: Db, migrations: readonly Migration[]): Promise<number[]> {
  return db.transaction(async (tx) => {
    await tx.query("SELECT pg_advisory_xact_lock($1)", [LOCK_KEY]);
    await tx.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    integer     PRIMARY KEY,
      name       text        NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`);
    const rows = await tx.query<{ version: number }>("SELECT version FROM schema_migrations");
    const done = new Set(rows.map((r) => Number(r.version)));
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await tx.exec(m.sql);
      await tx.query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [
        m.version,
        m.name,
      ]);
      applied.push(m.version);
    }
    return applied;
  });
}
