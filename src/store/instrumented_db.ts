/**
 * A `Db` that counts, for /metrics, what passes through it: transactions and statements in flight
 * (each holds a pool connection or waits for one) and the database errors they end with, transient
 * or not. It wraps the calls only; no SQL changes.
 */
import type { Db, Sql, TransactionOptions } from "./db.ts";
import { isTransientDbError } from "./errors.ts";

export type DbErrorKind = "transient" | "other";

export interface DbStats {
  /** The pool's configured size (1 for PGlite, one connection). */
  poolMax: number;
  /** Transactions and statements running or waiting for a connection now. */
  inFlight: number;
  /** Database errors they ended with, by kind. */
  errors: Record<DbErrorKind, number>;
}

/** A five-character SQLSTATE, as PostgreSQL (postgres.js and PGlite alike) reports errors. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * Whether an error came from the database, and which kind: `transient` (503, try again) or `other`
 * (a failed statement: a bug or a constraint). Anything else (a `SyncError` thrown inside a
 * transaction, an archive that fails its check) is not the database's and is `undefined`.
 */
export function dbErrorKind(error: unknown): DbErrorKind | undefined {
  if (isTransientDbError(error)) return "transient";
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" && SQLSTATE.test(code) ? "other" : undefined;
}

export function instrumentDb(db: Db, poolMax: number): { db: Db; stats: () => DbStats } {
  let inFlight = 0;
  const errors: Record<DbErrorKind, number> = { transient: 0, other: 0 };
  const track = async <T>(run: () => Promise<T>): Promise<T> => {
    inFlight++;
    try {
      return await run();
    } catch (error) {
      const kind = dbErrorKind(error);
      if (kind) errors[kind]++;
      throw error;
    } finally {
      inFlight--;
    }
  };
  return {
    db: {
      kind: db.kind,
      query: <T>(text: string, params?: readonly unknown[]) =>
        track(() => db.query<T>(text, params)),
      exec: (text) => track(() => db.exec(text)),
      transaction: <T>(fn: (tx: Sql) => Promise<T>, options?: TransactionOptions) =>
        track(() => db.transaction(fn, options)),
      close: () => db.close(),
    },
    stats: () => ({ poolMax, inFlight, errors: { ...errors } }),
  };
}
