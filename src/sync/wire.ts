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

/** The wire form of a stored change. Legacy rows with schema version 0 go out as 1. */
export function toWire(row: LogRow): WireChange {
  const change: WireChange = {
    eventId: row.eventId,
    schemaVersion: Math.max(row.schemaVersion, 1),
    table: row.table,
    id: row.id,
    op: row.op,
  };
  const data = row.data ?? {};
  if (row.op === "insert") {
    change.data = data;
  } else if (row.op === "update") {
    const times = row.fieldTimestamps ?? {};
    change.fields = {};
    for (const [name, value] of Object.entries(data)) {
      change.fields[name] = { value, updatedAt: times[name] ?? row.createdAt };
    }
  } else if (typeof data.deletedAt === "string") {
    change.deletedAt = data.deletedAt;
  }
  return change;
}
