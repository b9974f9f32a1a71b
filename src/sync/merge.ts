/**
 * Field-level last-write-wins. The server keeps, per record, each field's winning value with its
 * timestamp and the client that wrote it. Pure: the caller loads and stores the state.
 *
 * Order of writes to one field: the later instant wins; on an equal instant the greater client id;
 * then the greater value (canonical JSON); then the greater timestamp text. That is a total order, so replaying the same writes in
 * any order converges to one state, and merging a write twice changes nothing.
 */
import type { Change } from "./change.ts";
import { instantKey } from "./time.ts";

/** One field of the merged state, as stored: value, timestamp (the client's string), client id. */
export interface FieldState {
  v: unknown;
  t: string;
  c: string;
}

export type RecordState = Record<string, FieldState>;

export interface Conflict {
  table: string;
  id: string;
  field: string;
  clientValue: unknown;
  clientTimestamp: string;
  serverValue: unknown;
  serverTimestamp: string;
}

/** The field a soft delete writes; a record is deleted while this field holds a time. */
export const DELETED_AT = "deletedAt";

/**
 * The field writes a change makes. An insert writes every field of `data` at
 * `data.updatedAt ?? data.createdAt` (or `receivedAt` when neither is a time); a delete writes
 * `deletedAt` (a hard delete at `receivedAt`).
 */
export function fieldWrites(
  change: Change,
  clientId: string,
  receivedAt: string,
): [string, FieldState][] {
  switch (change.op) {
    case "update":
      return Object.entries(change.fields ?? {}).map((
        [name, f],
      ) => [name, { v: f.value, t: f.updatedAt, c: clientId }]);
    case "insert": {
      const data = change.data ?? {};
      const t =
        [data.updatedAt, data.createdAt].find((x): x is string =>
          typeof x === "string" && instantKey(x) !== undefined
        ) ?? receivedAt;
      return Object.entries(data).map(([name, v]) => [name, { v, t, c: clientId }]);
    }
    case "delete": {
      const t = change.deletedAt ?? receivedAt;
      return [[DELETED_AT, { v: t, t, c: clientId }]];
    }
  }
}

/** Orders two writes of one field: > 0 when `a` wins over `b`, 0 when they are the same write. */
export function compareWrites(a: FieldState, b: FieldState): number {
  const ta = instantKey(a.t) ?? "", tb = instantKey(b.t) ?? "";
  if (ta !== tb) return ta > tb ? 1 : -1;
  if (a.c !== b.c) return a.c > b.c ? 1 : -1;
  const va = canonicalJson(a.v), vb = canonicalJson(b.v);
  if (va !== vb) return va > vb ? 1 : -1;
  // One instant spelled two ways: the stored text must not depend on arrival order either.
  return a.t === b.t ? 0 : a.t > b.t ? 1 : -1;
}

/**
 * Merges a change into a record's state. Returns the new state (the input is not modified) and
 * one conflict per incoming field value that lost to the value the state already held.
 */
export function mergeChange(
  state: RecordState | undefined,
  change: Change,
  context: { clientId: string; receivedAt: string },
): { state: RecordState; conflicts: Conflict[]; changed: boolean } {
  const next: RecordState = { ...state };
  const conflicts: Conflict[] = [];
  let changed = false;
  for (const [field, incoming] of fieldWrites(change, context.clientId, context.receivedAt)) {
    const current = Object.hasOwn(next, field) ? next[field] : undefined;
    const order = current === undefined ? 1 : compareWrites(incoming, current);
    if (order > 0) {
      next[field] = incoming;
      changed = true;
    } else if (order < 0 && current !== undefined) {
      conflicts.push({
        table: change.table,
        id: change.id,
        field,
        clientValue: incoming.v,
        clientTimestamp: incoming.t,
        serverValue: current.v,
        serverTimestamp: current.t,
      });
    }
  }
  return { state: next, conflicts, changed };
}

/** JSON with object keys sorted, so that equal values compare equal whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  const keys = Object.keys(value).sort();
  return "{" +
    keys.map((k) => JSON.stringify(k) + ":" + canonicalJson((value as Record<string, unknown>)[k]))
      .join(",") +
    "}";
}

/**
 * The first client timestamp of `changes` later than `limitKey` (an instant key), if any. A
 * timestamp far in the future would win every conflict until that time: the push is refused.
 */
export function futureTimestamp(changes: readonly Change[], limitKey: string): string | undefined {
  for (const change of changes) {
    let previous: string | undefined;
    for (const [, write] of fieldWrites(change, "", "")) {
      if (write.t === previous) continue; // an insert writes all its fields at one time
      previous = write.t;
      const key = instantKey(write.t);
      if (key !== undefined && key > limitKey) return write.t;
    }
  }
  return undefined;
}
