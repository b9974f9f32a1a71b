/**
 * The database behind one small interface: PostgreSQL through postgres.js, or PGlite (PostgreSQL
 * compiled to WebAssembly, in process) when no `DATABASE_URL` is set. Both run the same SQL text
 * with `$n` parameters; values that PostgreSQL would type as `timestamptz` or `jsonb` are passed as
 * text and cast in SQL, so nothing goes through a JavaScript `Date` (millisecond precision).
 */
import type postgres from "postgres";
import { createPool, type Lease } from "./pg_pool.ts";

export type Row = Record<string, unknown>;

export interface Sql {
  /**
   * One statement with `$n` parameters. Statements issued without awaiting the previous one run in
   * the order issued (postgres.js pipelines them: one round trip for several statements). In a
   * transaction, a write whose answer is not needed need not be awaited at all: if it fails, the
   * transaction fails and nothing of it is committed.
   */
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
    // Not awaited: sent in the same round trip as fn's first query, which runs after it.
    const scoped = tx.query(
      "SELECT set_config('app.current_user_id', $1, true), set_config('role', $2, true)",
      [userId, USER_ROLE],
    );
    const [, result] = await Promise.all([scoped, fn(tx)]);
    return result;
  }, options);
}

export interface PostgresOptions {
  max: number;
  /** postgres.js `connect_timeout` (TCP, TLS, authentication), in seconds. Default 30. */
  connectTimeoutSeconds?: number;
  /**
   * Longest wait for the database, in milliseconds: for a connection and its first answer, and
   * for each later answer. Past it the call fails with a transient error (503) and the connection
   * is dropped (see pg_pool.ts). Unbounded when absent.
   */
  timeoutMs?: number;
  /** Called when PostgreSQL sends a notice; off by default. */
  onNotice?: (message: string) => void;
  /** Called when a connection is given up (it timed out or was lost), with why. */
  onDrop?: (reason: unknown) => void;
}

export function openPostgres(url: string, options: PostgresOptions): Db {
  const pool = createPool(url, {
    max: options.max,
    connectTimeoutSeconds: options.connectTimeoutSeconds ?? 30,
    timeoutMs: options.timeoutMs,
    onDrop: options.onDrop,
    client: {
      onnotice: (n) => options.onNotice?.(String(n.message)),
      connection: {
        application_name: "mana-sync",
        // Statements are prepared; after five runs PostgreSQL may switch one to a generic plan,
        // which does not know the user: measured, it scanned all of a user's records (state read)
        // and the whole log (page read), 0.3 to 0.9 s at a million changes. Plan every run.
        plan_cache_mode: "force_custom_plan",
      },
      // Timestamps are formatted in SQL; keep postgres.js from turning any into a Date.
      types: {},
    },
  });
  // A write transaction left behind by a lost client would keep its row locks (the user's clock)
  // until the server noticed, which may take hours: the server ends it once idle this long.
  const begin = options.timeoutMs === undefined
    ? "BEGIN"
    : `BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${2 * options.timeoutMs}`;
  /** A transaction's statements: refused once it ended, each one watched for a failure. */
  interface Tracker {
    check(): void;
    issued(answer: Promise<unknown>): void;
    /** Once every statement issued so far has been answered. */
    settled(): Promise<unknown>;
  }
  const statements = (c: Lease, tx?: Tracker): Sql => {
    const run = <T>(start: () => Promise<T>): Promise<T> => {
      try {
        tx?.check();
      } catch (error) {
        return Promise.reject(error);
      }
      const bounded = c.bounded(start());
      tx?.issued(bounded);
      return bounded;
    };
    return {
      query: <T>(text: string, params: readonly unknown[] = []) =>
        run(() =>
          c.sql.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })
        ) as Promise<T[]>,
      exec: async (text: string) => {
        await run(() => c.sql.unsafe(text));
      },
      cursor: <T>(text: string, params: readonly unknown[], batchSize: number) => {
        tx?.check();
        checkBatchSize(batchSize);
        // A postgres.js cursor does not share its connection with statements still unanswered
        // (their answers would wait for the cursor's end): it opens once they are settled.
        return boundedCursor(
          c,
          tx?.settled() ?? Promise.resolve(),
          () =>
            c.sql.unsafe(text, params as postgres.ParameterOrJSON<never>[], { prepare: true })
              .cursor(batchSize) as unknown as AsyncIterable<T[]>,
          () => tx?.check(),
        );
      },
    };
  };
  /** After a failure: a connection whose socket is gone is given up, never reused. */
  const lost = (c: Lease, error: unknown) => {
    if (!c.alive) c.drop(error);
    return error;
  };
  return {
    kind: "postgres",
    query: <T>(text: string, params?: readonly unknown[]) =>
      pool.use((c) =>
        statements(c).query<T>(text, params).catch((e) => Promise.reject(lost(c, e)))
      ),
    exec: (text: string) =>
      pool.use((c) => statements(c).exec(text).catch((e) => Promise.reject(lost(c, e)))),
    transaction: <T>(fn: (tx: Sql) => Promise<T>, opts?: TransactionOptions) =>
      pool.use(async (c) => {
        const beginning = opts?.readOnly ? "BEGIN READ ONLY" : begin;
        // On a live session BEGIN goes out with the first statements (one round trip less); a
        // connection that still has to connect waits for it, so the pin below never refuses
        // the session its own BEGIN opens.
        const pipelined = c.alive;
        if (!pipelined) {
          try {
            await c.bounded(c.sql.unsafe(beginning));
          } catch (error) {
            throw lost(c, error);
          }
        }
        // Every statement of this transaction runs on this session, or fails.
        c.pin();
        const pending: Promise<unknown>[] = [];
        let failed: { error: unknown } | undefined;
        let open = true;
        const tx = statements(c, {
          check: () => {
            if (!open) throw new Error("Cannot run a statement after its transaction ended");
          },
          issued: (answer) => {
            pending.push(answer);
            answer.catch((error) => failed ??= { error });
          },
          settled: () => Promise.allSettled(pending),
        });
        let commit: Promise<{ command?: string }> | undefined;
        try {
          if (pipelined) tx.exec(beginning).catch(() => {}); // a failure is in `failed`
          const result = await fn(tx);
          // COMMIT does not wait for the answers of fn's last statements (a write fn did not
          // await included): it goes out behind them, in the same round trip.
          open = false;
          commit = c.bounded(c.sql.unsafe("COMMIT"));
          commit.catch(() => {}); // awaited below, unless a statement failed first
          // As postgres.js's sql.begin: a failed statement fails the transaction, caught or not.
          // PostgreSQL has then turned the COMMIT into a ROLLBACK: nothing of it was written.
          await Promise.allSettled(pending);
          if (failed) throw failed.error;
          if ((await commit).command !== "COMMIT") {
            throw new Error("The transaction was rolled back instead of committed");
          }
          return result;
        } catch (error) {
          open = false;
          if (c.alive) {
            await Promise.allSettled([...pending, commit]);
            await c.bounded(c.sql.unsafe("ROLLBACK")).catch((e) => c.drop(e));
          }
          throw lost(c, error);
        }
      }),
    close: () => pool.end(5),
  };
}

/** A cursor whose every fetch is bounded like any other answer. */
async function* boundedCursor<T>(
  c: Lease,
  ready: Promise<unknown>,
  open: () => AsyncIterable<T[]>,
  check: () => void,
): AsyncGenerator<T[]> {
  await c.bounded(ready);
  check();
  const it = open()[Symbol.asyncIterator]();
  try {
    for (;;) {
      check();
      const next = await c.bounded(Promise.resolve(it.next()));
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await it.return?.();
  }
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
  const wrap = (s: Tx): Sql & { settled(): Promise<unknown> } => {
    // PGlite does not promise to run overlapping queries in order; this chain does.
    let last: Promise<unknown> = Promise.resolve();
    const inOrder = <T>(run: () => Promise<T>): Promise<T> => {
      const next = last.then(run, run);
      last = next.catch(() => {});
      return next;
    };
    return {
      query: <T>(text: string, params: readonly unknown[] = []) =>
        inOrder(async () => (await s.query<T>(text, params as unknown[])).rows),
      exec: (text: string) => inOrder(async () => void await s.exec(text)),
      cursor: <T>(text: string, params: readonly unknown[], batchSize: number) =>
        pgliteCursor<T>(s, text, params, checkBatchSize(batchSize)),
      /** Once every statement issued so far has run. */
      settled: () => last,
    };
  };
  const { settled: _, ...sql } = wrap(pg);
  return {
    kind: "pglite",
    ...sql,
    // PGlite is one connection: it queues transactions, so they never interleave. COMMIT waits
    // for the statements fn did not await; if one failed, PGlite reports the COMMIT's ROLLBACK.
    transaction: (fn) =>
      pg.transaction(async (tx) => {
        const scoped = wrap(tx);
        const result = await fn(scoped);
        await scoped.settled();
        return result;
      }),
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
