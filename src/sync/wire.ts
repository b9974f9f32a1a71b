/**
 * The two shapes a change takes besides the wire: the log row it is stored as (`sync_changes`:
 * `data` plus `field_timestamps`, as the first version stored it) and back. Pure.
 */
import type { Change, Op } from "./change.ts";

/** A `sync_changes` row as the store reads it. `createdAt` is a canonical cursor. */
export interface LogRow {
  eventId: string;
  schemaVersion: number;
  appId: string;
  table: string;
  id: string;
  op: Op;
  data: Record<string, unknown> | null;
  fieldTimestamps: Record<string, string> | null;
  clientId: string;
  createdAt: string;
}

/** A change as the server sends it: always with `eventId` (and `schemaVersion`). */
export type WireChange = Change & { eventId: string };

/**
 * A log row as a page read gets it: `data` and `fieldTimestamps` as the JSON text PostgreSQL sent,
 * not parsed (the text of a jsonb value is valid JSON on one line).
 */
export type LogRowText = Omit<LogRow, "data" | "fieldTimestamps" | "appId" | "clientId"> & {
  data: string | null;
  fieldTimestamps: string | null;
};

/** What a change stores: `data` and `field_timestamps`. */
export function toStored(
  change: Change,
): { data: Record<string, unknown> | null; fieldTimestamps: Record<string, string> } {
  switch (change.op) {
    case "insert":
      return { data: change.data ?? {}, fieldTimestamps: {} };
    case "update": {
      const data: Record<string, unknown> = {}, fieldTimestamps: Record<string, string> = {};
      for (const [name, f] of Object.entries(change.fields ?? {})) {
        data[name] = f.value;
        fieldTimestamps[name] = f.updatedAt;
      }
      return { data, fieldTimestamps };
    }
    case "delete":
      return {
        data: change.deletedAt === undefined ? null : { deletedAt: change.deletedAt },
        fieldTimestamps: {},
      };
  }
}

/** The members every wire change starts with. Legacy rows with schema version 0 go out as 1. */
function wireHead(row: Pick<LogRow, "eventId" | "schemaVersion" | "table" | "id" | "op">) {
  const { eventId, table, id, op } = row;
  return { eventId, schemaVersion: Math.max(row.schemaVersion, 1), table, id, op };
}

/** The wire form of a stored change. */
export function toWire(row: Omit<LogRow, "appId" | "clientId">): WireChange {
  const change: WireChange = wireHead(row);
  const data = row.data ?? {};
  if (row.op === "insert") {
    change.data = data;
  } else if (row.op === "update") {
    const times = row.fieldTimestamps ?? {};
    change.fields = {};
    for (const [name, value] of Object.entries(data)) {
      // Own keys only: a field named `toString` must not find Object.prototype's.
      const updatedAt = Object.hasOwn(times, name) ? times[name] : undefined;
      change.fields[name] = { value, updatedAt: updatedAt ?? row.createdAt };
    }
  } else if (typeof data.deletedAt === "string") {
    change.deletedAt = data.deletedAt;
  }
  return change;
}

/**
 * `JSON.stringify(toWire(row))` for a row read as text. An insert's `data`, the bulk of most pages,
 * goes out as the text it was read as, never parsed and serialized again (the same JSON value;
 * only the spacing and the number spelling of PostgreSQL's output may differ). Updates and deletes
 * are small: they go through `toWire`.
 */
export function wireJson(row: LogRowText): string {
  const parse = (text: string | null) => text === null ? null : JSON.parse(text);
  if (row.op !== "insert" || row.data === null || row.data === "null") {
    return JSON.stringify(
      toWire({ ...row, data: parse(row.data), fieldTimestamps: parse(row.fieldTimestamps) }),
    );
  }
  // toWire's insert: its head, then `data` as stored.
  return `${JSON.stringify(wireHead(row)).slice(0, -1)},"data":${row.data}}`;
}

/**
 * A JSON object: `key` holding the array of `changes` (each already wire JSON text), then the
 * members of `rest` — `JSON.stringify({ [key]: changes.map(JSON.parse), ...rest })` without
 * parsing anything.
 */
export function withChanges(
  key: string,
  changes: readonly string[],
  rest: Record<string, unknown>,
): string {
  const tail = JSON.stringify(rest);
  return `{${JSON.stringify(key)}:[${changes.join(",")}]${
    tail === "{}" ? "}" : `,${tail.slice(1)}`
  }`;
}
