/**
 * The unit on the wire, and the validation every push goes through before anything is written.
 * Pure: no I/O, no clock (the caller passes the time limits in).
 */
import { badRequest, SyncError } from "./errors.ts";
import { isTime, parseCursor } from "./time.ts";

export type Op = "insert" | "update" | "delete";
export const OPS: readonly Op[] = ["insert", "update", "delete"];

/** The newest change schema this server understands. */
export const MAX_SCHEMA_VERSION = 1;

export interface FieldValue {
  value: unknown;
  updatedAt: string;
}

/** A validated change, as a client pushed it. Timestamps are the client's strings, untouched. */
export interface Change {
  eventId?: string;
  schemaVersion: number;
  table: string;
  id: string;
  op: Op;
  /** `update` only. */
  fields?: Record<string, FieldValue>;
  /** `insert` only: the whole record. */
  data?: Record<string, unknown>;
  /** `delete` only: present for a soft delete. */
  deletedAt?: string;
}

export interface PushRequest {
  clientId: string;
  /** Canonical cursor. */
  since: string;
  schemaVersion: number;
  changes: Change[];
}

export interface Limits {
  /** Most changes accepted in one push (413 beyond). */
  maxChanges: number;
  /** Longest `table`, `id`, field name and client id, in UTF-16 code units. */
  maxIdLength: number;
  /** Deepest nesting of objects and arrays inside one value. */
  maxDepth: number;
  /**
   * Most fields in one change: keys of an insert's `data`, entries of an update's `fields` (each
   * becomes one field timestamp). Keys nested inside a value do not count.
   */
  maxFields: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxChanges: 1000,
  maxIdLength: 256,
  maxDepth: 32,
  maxFields: 1000,
};

/** What an app id looks like (URL segment, backup archive). */
export const APP_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type Json = Record<string, unknown>;

function isObject(x: unknown): x is Json {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** `null`/`undefined` count as absent everywhere on the wire. */
function present<T>(x: T | null | undefined): x is T {
  return x !== null && x !== undefined;
}

/**
 * Validates a push body. Throws a `SyncError` (400/413) naming the first bad change's index;
 * nothing is written when this throws.
 */
export function parsePush(
  body: unknown,
  options: { clientIdHeader?: string | undefined; limits?: Limits },
): PushRequest {
  const limits = options.limits ?? DEFAULT_LIMITS;
  if (!isObject(body)) throw badRequest("invalid_body", "Push body must be a JSON object");
  const clientId = options.clientIdHeader || body.clientId;
  if (typeof clientId !== "string" || clientId === "") {
    throw badRequest(
      "missing_client_id",
      "A client id is required: X-Client-Id header or body clientId",
    );
  }
  try {
    checkId("client id", clientId, limits);
  } catch (e) {
    throw e instanceof SyncError ? badRequest("invalid_client_id", e.message) : e;
  }
  const since = present(body.since) ? parseSince(body.since) : "1970-01-01T00:00:00.000000Z";
  const schemaVersion = parseSchemaVersion(body.schemaVersion, 1, "Push");
  if (!Array.isArray(body.changes)) {
    throw badRequest("invalid_body", "Push body needs a changes array");
  }
  if (body.changes.length > limits.maxChanges) {
    throw new SyncError(
      413,
      "too_many_changes",
      `Push has ${body.changes.length} changes: at most ${limits.maxChanges} are accepted per request`,
    );
  }
  const changes = body.changes.map((raw, index) => {
    try {
      return parseChange(raw, schemaVersion, limits);
    } catch (e) {
      if (e instanceof SyncError) {
        throw badRequest("invalid_change", `Cannot apply change ${index}: ${e.message}`);
      }
      throw e;
    }
  });
  return { clientId, since, schemaVersion, changes };
}

/** Parses a client cursor; 400 when it is not an ISO-8601 time. */
export function parseSince(since: unknown): string {
  const cursor = typeof since === "string" ? parseCursor(since) : undefined;
  if (cursor === undefined) {
    throw badRequest("invalid_since", `since is not an ISO-8601 time: ${JSON.stringify(since)}`);
  }
  return cursor;
}

function parseSchemaVersion(raw: unknown, fallback: number, what: string): number {
  if (!present(raw)) return fallback;
  if (typeof raw !== "number" || !Number.isInteger(raw)) {
    throw badRequest("invalid_schema_version", `${what} schemaVersion must be an integer`);
  }
  if (raw <= 0) return fallback;
  if (raw > MAX_SCHEMA_VERSION) {
    throw badRequest(
      "unsupported_schema_version",
      `${what} schemaVersion ${raw} is newer than this server supports (${MAX_SCHEMA_VERSION})`,
    );
  }
  return raw;
}

/**
 * Validates one change (a push's, or a backup's event in wire form). Throws a 400 `SyncError`
 * saying what is wrong; `batchVersion` stands in for a missing or legacy (≤ 0) schemaVersion.
 */
export function parseChange(raw: unknown, batchVersion: number, limits: Limits): Change {
  if (!isObject(raw)) throw badRequest("invalid_change", "change is not an object");
  const { op, table, id, eventId } = raw;
  if (!OPS.includes(op as Op)) {
    throw badRequest(
      "invalid_change",
      `op must be insert, update or delete, got ${JSON.stringify(op)}`,
    );
  }
  checkId("table", table, limits);
  checkId("id", id, limits);
  const change: Change = {
    schemaVersion: parseSchemaVersion(raw.schemaVersion, batchVersion, "change"),
    table,
    id,
    op: op as Op,
  };
  if (present(eventId)) {
    if (typeof eventId !== "string" || !UUID.test(eventId)) {
      throw badRequest("invalid_change", `eventId must be a UUID, got ${JSON.stringify(eventId)}`);
    }
    change.eventId = eventId.toLowerCase();
  }
  if (op === "insert") {
    if (!isObject(raw.data)) throw badRequest("invalid_change", "insert needs a data object");
    checkFieldCount("data", raw.data, limits);
    for (const key of ["updatedAt", "deletedAt"]) {
      const t = raw.data[key];
      if (present(t) && !isTime(t)) {
        throw badRequest(
          "invalid_change",
          `data.${key} is not an ISO-8601 time: ${JSON.stringify(t)}`,
        );
      }
    }
    checkValue("data", raw.data, limits, 0);
    change.data = raw.data;
  } else if (op === "update") {
    if (!isObject(raw.fields)) throw badRequest("invalid_change", "update needs a fields object");
    checkFieldCount("update", raw.fields, limits);
    for (const [name, field] of Object.entries(raw.fields)) {
      checkId("field name", name, limits);
      if (!isObject(field) || !("value" in field)) {
        throw badRequest("invalid_change", `field "${name}" must be an object with a value`);
      }
      if (!isTime(field.updatedAt)) {
        throw badRequest(
          "invalid_change",
          `field "${name}" has no ISO-8601 updatedAt: ${JSON.stringify(field.updatedAt)}`,
        );
      }
      checkValue(`field "${name}"`, field.value, limits, 0);
    }
    change.fields = raw.fields as Record<string, FieldValue>;
  } else {
    const deletedAt = present(raw.deletedAt)
      ? raw.deletedAt
      : isObject(raw.data) && present(raw.data.deletedAt)
      ? raw.data.deletedAt
      : undefined;
    if (deletedAt !== undefined) {
      if (!isTime(deletedAt)) {
        throw badRequest(
          "invalid_change",
          `deletedAt is not an ISO-8601 time: ${JSON.stringify(deletedAt)}`,
        );
      }
      change.deletedAt = deletedAt;
    }
  }
  return change;
}

function checkId(what: string, x: unknown, limits: Limits): asserts x is string {
  if (typeof x !== "string" || x === "") {
    throw badRequest("invalid_change", `${what} must be a non-empty string`);
  }
  if (x.length > limits.maxIdLength) {
    throw badRequest("invalid_change", `${what} is longer than ${limits.maxIdLength} characters`);
  }
  if (!storable(x)) {
    throw badRequest("invalid_change", `${what} contains a NUL or a lone surrogate`);
  }
}

/** Checked before any field is looked at. */
function checkFieldCount(what: string, object: Json, limits: Limits): void {
  const count = Object.keys(object).length;
  if (count > limits.maxFields) {
    const fields = count === 1 ? "1 field" : `${count} fields`;
    throw badRequest(
      "invalid_change",
      `${what} has ${fields}: at most ${limits.maxFields} are accepted per change`,
    );
  }
}

/** PostgreSQL's jsonb refuses NUL characters and unpaired surrogates: refuse them up front. */
export function storable(s: string): boolean {
  return s.isWellFormed() && !s.includes("\0");
}

function checkValue(where: string, value: unknown, limits: Limits, depth: number): void {
  if (typeof value === "string") {
    if (!storable(value)) {
      throw badRequest("invalid_change", `${where} contains a NUL or a lone surrogate`);
    }
    return;
  }
  if (typeof value !== "object" || value === null) return;
  if (depth >= limits.maxDepth) {
    throw badRequest("invalid_change", `${where} is nested deeper than ${limits.maxDepth} levels`);
  }
  if (Array.isArray(value)) {
    for (const item of value) checkValue(where, item, limits, depth + 1);
    return;
  }
  for (const [key, item] of Object.entries(value)) {
    if (!storable(key)) {
      throw badRequest("invalid_change", `${where} has a key with a NUL or a lone surrogate`);
    }
    checkValue(where, item, limits, depth + 1);
  }
}
