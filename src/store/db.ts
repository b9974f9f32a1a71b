/**
 * The database behind one small interface: PostgreSQL through postgres.js, or PGlite (PostgreSQL
 * compiled to WebAssembly, in process) when no `DATABASE_URL` is set. Both run the same SQL text
 * with `$n` parameters; values that PostgreSQL would type as `timestamptz` or `jsonb` are passed as
 * text and cast in SQL, so nothing goes through a JavaScript `Date` (millisecond precision).
 */
import postgres from "postgres";

export type Row = Record<string, unknown>;

export interface Sql {
  /** One statement with `$n` parameters. */
  query<T = Row>(text: string, params?: readonly unknown[]): Promise<T[]>;
  /** Several statements without parameters (migrations). */
  exec(text: string): Promise<void>;
  /**
   * The rows of one statement in batches of at most `batchSize`, read through a server-side
   * cursor, so a large result never sits in memory at once. Transactions only (`Db` has none):
   * the cursor lives as long as the transaction. Leaving the loop early closes it.
   */
  cursor<T = Row>(text: string, params: readonly unknown[], batchSize: number): AsyncIterable<T[]>;
}

export interface TransactionOptions {
  readOnly?: boolean;
}

export interface Db extends Omit<Sql, "cursor"> {
  readonly kind: "postgres" | "pglite";
  transaction<T>(fn: (tx: Sql) => Promise<T>, options?: TransactionOptions): Promise<T>;
  close(): Promise<void>;
}

/** The non-superuser role every user-scoped transaction switches to, so that RLS applies. */
export const USER_ROLE = "mana_sync_user";

/**
 * Runs `fn` in a transaction scoped to one user: `app.current_user_id` is set for the row-level
 * security policies and the role is switched to `mana_sync_user`, both for this transaction only.
 */
export function withUser<T>(
  db: Db,
  userId: string,
  fn: (tx: Sql) => Promise<T>,
  options?: TransactionOptions,
): Promise<T> {
  return db.transaction(async (tx) => {
    await tx.query(
      "SELECT set_config('app.current_user_id', $1, true), set_config('role', $2, true)",
      [userId, USER_ROLE],
    );
    return await fn(tx);
  }, options);
}

export interface PostgresOptions {
  max: number;
  /** Called when PostgreSQL sends a notice; off by default. */
  onNotice?: (message: string) => void;
}

export function openPostgres(url: string, options: PostgresOptions): Db {
  const sql = postgres(url, {
    max: options.max,
    onnotice: (n) => options.onNotice?.(String(n.message)),
    connection: { application_name: "mana-sync" },
    // Timestamps are formatted in SQL; keep postgres.js from turning any into a Date.
    types: {},
  });
  // deno-lint-ignore no-explicit-any
  const wrap = (s: postgres.Sql<any> | postgres.TransactionSql<any>): Sql => ({
    query: <T>(text: string, params: readonly unknown[] = []) =>
      s.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true }) as Promise<
        T[]
      >,
    exec: async (text: string) => {
      await s.unsafe(text);
    },
    cursor: <T>(text: string, params: readonly unknown[], batchSize: number) =>
      s.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })
        .cursor(checkBatchSize(batchSize)) as unknown as AsyncIterable<T[]>,
  });
  return {
    kind: "postgres",
    ...wrap(sql),
    transaction: <T>(fn: (tx: Sql) => Promise<T>, opts?: TransactionOptions) =>
      (opts?.readOnly
        ? sql.begin("read only", (tx) => fn(wrap(tx)))
        : sql.begin((tx) => fn(wrap(tx)))) as Promise<T>,
    close: () => sql.end({ timeout: 5 }),
  };
}

/**
 * An embedded database. `dataDir` persists it; without one it lives in memory. PGlite is loaded
 * only here, so a deployment with `DATABASE_URL` never touches its files.
 */
export async function openPglite(dataDir?: string): Promise<Db> {
  const { PGlite } = await import("@electric-sql/pglite");
  if (dataDir) await Deno.mkdir(dataDir, { recursive: true });
  const pg = await PGlite.create(dataDir ? { dataDir } : {});
  type Tx = Pick<typeof pg, "query" | "exec">;
  const wrap = (s: Tx): Sql => ({
    query: async <T>(text: string, params: readonly unknown[] = []) =>
      (await s.query<T>(text, params as unknown[])).rows,
    exec: async (text: string) => {
      await s.exec(text);
    },
    cursor: <T>(text: string, params: readonly unknown[], batchSize: number) =>
      pgliteCursor<T>(s, text, params, checkBatchSize(batchSize)),
  });
  return {
    kind: "pglite",
    ...wrap(pg),
    // PGlite is one connection: it queues transactions, so they never interleave.
    transaction: (fn) => pg.transaction((tx) => fn(wrap(tx))),
    close: () => pg.close(),
  };
}

function checkBatchSize(batchSize: number): number {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`Cursor batch size must be a positive integer, got ${batchSize}`);
  }
  return batchSize;
}

let cursorCount = 0;

/**
 * PGlite has no cursor API of its own, but it is PostgreSQL: `DECLARE … CURSOR` and `FETCH` inside
 * the transaction do the same as postgres.js's `.cursor(n)` does over the wire protocol.
 */
async function* pgliteCursor<T>(
  s: { query<R>(text: string, params?: unknown[]): Promise<{ rows: R[] }> },
  text: string,
  params: readonly unknown[],
  batchSize: number,
): AsyncGenerator<T[]> {
  const name = `mana_sync_cursor_${++cursorCount}`;
  await s.query(`DECLARE ${name} NO SCROLL CURSOR FOR ${text}`, params as unknown[]);
  try {
    for (;;) {
      const { rows } = await s.query<T>(`FETCH ${batchSize} FROM ${name}`);
      if (rows.length > 0) yield rows;
      if (rows.length < batchSize) return;
    }
  } finally {
    // After a failed statement the transaction is aborted and the cursor gone with it.
    await s.query(`CLOSE ${name}`).catch(() => {});
  }
}
