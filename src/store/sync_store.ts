/**
 * Push and pull, and `storeChanges` (the one write path, shared with the backup import): the only
 * SQL of the sync core. Every query runs inside the user's RLS transaction (`withUser`) and also
 * filters `user_id` explicitly.
 *
 * The cursor guarantee rests on three things done here:
 * - a push locks the user's clock row first (`INSERT … ON CONFLICT DO UPDATE`), so one user's pushes
 *   are serialized and commit in the order they stamp;
 * - under that lock it stamps its rows `greatest(clock_timestamp(), last + 1µs)`, +1µs per row;
 * - `syncedUntil` is the committed clock (or the last row of a full page), read in the same
 *   statement — the same snapshot — as the rows.
 */
import type { Change, PushRequest } from "../sync/change.ts";
import { type Conflict, mergeChange, type RecordState } from "../sync/merge.ts";
import { type LogRowText, toStored, wireJson } from "../sync/wire.ts";
import { type Db, type Sql, withUser } from "./db.ts";

export interface Page {
  /** Each change's wire JSON text (see `wireJson`; `withChanges` puts them in a body). */
  serverChanges: string[];
  syncedUntil: string;
  hasMore: boolean;
}

export interface PushResult extends Page {
  conflicts: Conflict[];
  /** Distinct tables the push touched, in first-seen order (for notifications). */
  tables: string[];
  /** How many changes were stored (changes with an already-stored eventId are not). */
  stored: number;
}

export interface PushInput {
  userId: string;
  appId: string;
  request: PushRequest;
  /** ISO time of receipt: the LWW time of hard deletes and of inserts that carry no time. */
  receivedAt: string;
  /** Most server changes returned with the push. */
  pageSize: number;
}

export interface PullInput {
  userId: string;
  appId: string;
  clientId: string;
  table: string;
  since: string;
  pageSize: number;
}

const CURSOR = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
const asCursor = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', ${CURSOR})`;

/** The columns of a `LogRow`, timestamps formatted as cursors in SQL. */
export const LOG_COLUMNS =
  `id::text AS "eventId", schema_version AS "schemaVersion", app_id AS "appId",
  table_name AS "table", record_id AS id, op, data, field_timestamps AS "fieldTimestamps",
  client_id AS "clientId", ${asCursor("created_at")} AS "createdAt"`;

/** The columns of a `LogRowText`: what a page sends, `data` as JSON text. */
const PAGE_COLUMNS =
  `id::text AS "eventId", schema_version AS "schemaVersion", table_name AS "table",
  record_id AS id, op, data::text AS data,
  CASE WHEN op = 'update' THEN field_timestamps::text END AS "fieldTimestamps",
  ${asCursor("created_at")} AS "createdAt"`;

/**
 * Stamps and stores a batch under the user's clock lock; returns the ids actually inserted. Each
 * element carries its own app (`a`) and client id (`c`): a push has one of each, an import many.
 */
const INSERT_BATCH = `
WITH clock AS (
  INSERT INTO sync_clock AS k (user_id, last_at)
  VALUES ($1, clock_timestamp() + ($2::int - 1) * interval '1 microsecond')
  ON CONFLICT (user_id) DO UPDATE
    SET last_at = greatest(clock_timestamp(), k.last_at + interval '1 microsecond')
                  + ($2::int - 1) * interval '1 microsecond'
  RETURNING last_at
)
INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data, field_timestamps,
                          client_id, created_at, schema_version)
SELECT coalesce((c->>'e')::uuid, gen_random_uuid()), c->>'a', c->>'t', c->>'i', $1, c->>'o',
       nullif(c->'d', 'null'::jsonb), c->'f', c->>'c',
       clock.last_at - ($2::int - n) * interval '1 microsecond', (c->>'v')::int
FROM clock, jsonb_array_elements($3::text::jsonb) WITH ORDINALITY AS e(c, n)
ON CONFLICT (id) DO NOTHING
RETURNING id::text AS "eventId"`;

/**
 * The keys arrive as text columns (`json_to_recordset`), not as `->>` expressions: row-level
 * security lets only leakproof operators into an index condition, and `->>` is not one. With them
 * PostgreSQL scanned all of the user's records for every push (0.3 to 0.9 s at a million).
 */
const LOAD_STATE = `
SELECT s.app_id AS "appId", s.table_name AS "table", s.record_id AS id, s.fields
FROM json_to_recordset($2::text::json) AS k(a text, t text, i text)
JOIN sync_records s
  ON s.user_id = $1 AND s.app_id = k.a AND s.table_name = k.t AND s.record_id = k.i`;

const SAVE_STATE = `
INSERT INTO sync_records (user_id, app_id, table_name, record_id, fields)
SELECT $1, r->>0, r->>1, r->>2, r->3 FROM jsonb_array_elements($2::text::jsonb) r
ON CONFLICT (user_id, app_id, table_name, record_id)
  DO UPDATE SET fields = EXCLUDED.fields, updated_at = now()`;

/**
 * A page of other clients' changes after a cursor, with the user's committed clock read in the
 * same statement (one snapshot). Always returns at least one row (the clock), with null change
 * columns when the page is empty.
 */
function pageQuery(byTable: boolean): string {
  return `
WITH k AS (SELECT max(last_at) AS last_at FROM sync_clock WHERE user_id = $1)
SELECT ${asCursor("k.last_at")} AS clock, p.* FROM k LEFT JOIN LATERAL (
  SELECT ${PAGE_COLUMNS} FROM sync_changes
  WHERE user_id = $1 AND app_id = $2 AND client_id <> $3
    AND created_at > $4::text::timestamptz ${byTable ? "AND table_name = $6" : ""}
  ORDER BY created_at LIMIT $5
) p ON true`;
}
const PAGE_ALL_TABLES = pageQuery(false);
const PAGE_ONE_TABLE = pageQuery(true);

/** The reads whose plans must stay index scans as an account grows (tests/store/plans_test.ts). */
export const READS = {
  loadState: LOAD_STATE,
  pageAllTables: PAGE_ALL_TABLES,
  pageOneTable: PAGE_ONE_TABLE,
};

type PageRow = Partial<LogRowText> & { clock: string | null; eventId: string | null };

async function readPage(
  tx: Sql,
  input: {
    userId: string;
    appId: string;
    clientId: string;
    since: string;
    pageSize: number;
    table?: string;
  },
): Promise<Page> {
  const params: unknown[] = [
    input.userId,
    input.appId,
    input.clientId,
    input.since,
    input.pageSize + 1,
  ];
  if (input.table !== undefined) params.push(input.table);
  const rows = await tx.query<PageRow>(
    input.table === undefined ? PAGE_ALL_TABLES : PAGE_ONE_TABLE,
    params,
  );
  const changes = rows.filter((r) => r.eventId !== null) as unknown as LogRowText[];
  const hasMore = changes.length > input.pageSize;
  if (hasMore) changes.length = input.pageSize;
  const clock = rows[0]?.clock ?? input.since;
  const syncedUntil = hasMore
    ? changes[changes.length - 1]!.createdAt
    : clock > input.since
    ? clock
    : input.since;
  return { serverChanges: changes.map(wireJson), syncedUntil, hasMore };
}

export interface SyncStore {
  push(input: PushInput): Promise<PushResult>;
  pull(input: PullInput): Promise<Page>;
}

export function createSyncStore(db: Db): SyncStore {
  return {
    push: (input) => withUser(db, input.userId, (tx) => push(tx, input)),
    pull: (input) => withUser(db, input.userId, (tx) => readPage(tx, input), { readOnly: true }),
  };
}

async function push(tx: Sql, input: PushInput): Promise<PushResult> {
  const { userId, appId, request, receivedAt } = input;
  const { clientId, changes } = request;
  // Both in one round trip: storeChanges sends its insert (which takes the clock lock) and its
  // state read before it first awaits, and the page read follows them on the same connection, so
  // the page sees this push's stamps and `syncedUntil` covers them.
  const [{ stored, conflicts }, page] = await Promise.all([
    storeChanges(tx, userId, changes.map((change) => ({ appId, clientId, receivedAt, change }))),
    readPage(tx, { userId, appId, clientId, since: request.since, pageSize: input.pageSize }),
  ]);
  return {
    ...page,
    conflicts,
    tables: [...new Set(changes.map((c) => c.table))],
    stored: stored.length,
  };
}

/** One change to store, with where it comes from. */
export interface ChangeEntry {
  appId: string;
  /** The client that made the change: stored with it, and its side in LWW ties. */
  clientId: string;
  /** The LWW time of a hard delete, or of an insert that carries no time of its own. */
  receivedAt: string;
  change: Change;
}

/**
 * Stores a batch of one user's changes, the one way every write goes (push and backup import):
 * stamps them in order under the user's clock lock, skips eventIds already stored, and merges the
 * stored ones into the LWW state. Runs inside the user's transaction (`withUser`); returns the
 * entries actually stored and the incoming values that lost to newer ones.
 */
export async function storeChanges(
  tx: Sql,
  userId: string,
  entries: readonly ChangeEntry[],
): Promise<{ stored: ChangeEntry[]; conflicts: Conflict[] }> {
  if (entries.length === 0) return { stored: [], conflicts: [] };
  const batch = entries.map(({ appId, clientId, change: c }) => {
    const { data, fieldTimestamps } = toStored(c);
    return {
      e: c.eventId ?? null,
      a: appId,
      c: clientId,
      t: c.table,
      i: c.id,
      o: c.op,
      d: data,
      f: fieldTimestamps,
      v: c.schemaVersion,
    };
  });
  // One round trip: the insert takes the clock lock, then the state of every record the batch
  // touches is read under it (a few rows more than needed when some eventIds are already stored).
  const [inserted, states] = await Promise.all([
    tx.query<{ eventId: string }>(INSERT_BATCH, [userId, entries.length, JSON.stringify(batch)]),
    loadState(tx, userId, entries),
  ]);
  const stored = newEntries(entries, new Set(inserted.map((r) => r.eventId)));
  const conflicts = stored.length > 0 ? mergeState(tx, userId, states, stored) : [];
  return { stored, conflicts };
}

/**
 * The entries of a batch that were stored: those without a client eventId (the server assigned a
 * new one) and the first occurrence of each eventId the insert returned.
 */
function newEntries(entries: readonly ChangeEntry[], inserted: Set<string>): ChangeEntry[] {
  const seen = new Set<string>();
  return entries.filter(({ change: c }) => {
    if (c.eventId === undefined) return true;
    if (!inserted.has(c.eventId) || seen.has(c.eventId)) return false;
    seen.add(c.eventId);
    return true;
  });
}

const key = (appId: string, table: string, id: string) => JSON.stringify([appId, table, id]);

/** The stored state of the records a batch touches, by `key`. */
async function loadState(
  tx: Sql,
  userId: string,
  entries: readonly ChangeEntry[],
): Promise<Map<string, RecordState>> {
  const keys = new Map(
    entries.map(({ appId: a, change: { table: t, id: i } }) => [key(a, t, i), { a, t, i }]),
  );
  const rows = await tx.query<{ appId: string; table: string; id: string; fields: RecordState }>(
    LOAD_STATE,
    [userId, JSON.stringify([...keys.values()])],
  );
  return new Map(rows.map((r) => [key(r.appId, r.table, r.id), r.fields]));
}

/** Merges the stored entries into the loaded states in order; sends the save of what changed. */
function mergeState(
  tx: Sql,
  userId: string,
  states: Map<string, RecordState>,
  entries: readonly ChangeEntry[],
): Conflict[] {
  const dirty = new Set<string>();
  const conflicts: Conflict[] = [];
  for (const { appId, clientId, receivedAt, change } of entries) {
    const k = key(appId, change.table, change.id);
    const merged = mergeChange(states.get(k), change, { clientId, receivedAt });
    conflicts.push(...merged.conflicts);
    if (merged.changed) {
      states.set(k, merged.state);
      dirty.add(k);
    }
  }
  if (dirty.size > 0) {
    const updates = [...dirty].map((k) => [...JSON.parse(k) as string[], states.get(k)]);
    // Not awaited: it goes out with the COMMIT (a failure fails the transaction, see `Sql`).
    tx.query(SAVE_STATE, [userId, JSON.stringify(updates)]).catch(() => {});
  }
  return conflicts;
}
