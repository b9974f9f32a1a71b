/**
 * Hostile input against the real server process (start-task flags, real HTTP and WebSocket):
 * generated push bodies (mostly valid with one mutation, some wholly random), pull query strings,
 * headers, routes, WebSocket frames and broken HTTP framing. The test's model predicts every
 * answer: 2xx for a valid request, the right 4xx and error code otherwise, never a 5xx, always a
 * JSON error body. The server must stay up and log no bug, and in the end the database must hold
 * exactly what the accepted pushes wrote: rejected requests write nothing.
 *
 * Seeds and runs: FUZZ_SEED / FUZZ_RUNS (tests/helpers/fuzz.ts); `deno task fuzz` runs many more.
 * A failure prints its seed and shrunk counterexample; the same seed and runs replay the run.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { openPostgres, withUser } from "../../src/store/db.ts";
import type { Change } from "../../src/sync/change.ts";
import { type Conflict, mergeChange, type RecordState } from "../../src/sync/merge.ts";
import { parseCursor } from "../../src/sync/time.ts";
import { countRows, POSTGRES_URL } from "../helpers/databases.ts";
import { fuzzParameters } from "../helpers/fuzz.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { eventually, WsClient } from "../helpers/realtime_clients.ts";
import { startServer } from "../helpers/server_process.ts";

/** Runs per property (FUZZ_RUNS overrides them all); the pushes are worth the most. */
const RUNS = {
  push: fuzzParameters(300),
  pull: fuzzParameters(150),
  route: fuzzParameters(100),
  ws: fuzzParameters(100),
};

// Small limits, so that the generated input reaches them.
const MAX_BODY = 128 * 1024;
const MAX_CHANGES = 20;
const PAGE = 40;
/** ws_session's default largest client message, in bytes. */
const MAX_WS_MESSAGE = 64 * 1024;
const MAX_ID = 256;

/** Ids unique to this process: a PostgreSQL test database outlives runs of the same seed. */
const RUN = crypto.randomUUID().slice(0, 8);
const START = new Date().toISOString();

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CURSOR = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

// ---------------------------------------------------------------------------------------------
// Pools. Names that are also properties of every object, odd Unicode, and the longest allowed.

const APPS = ["todo", "notes.app", "A-1_b"];
/** Path segments that are no app id (single segments: they still reach the route). */
const BAD_APPS = [
  "-x",
  ".hidden",
  "a".repeat(129),
  "%00",
  "%ZZ",
  "%F0%9F%A6%84",
  "todo%20",
  "a%2Fb",
];
const TABLES = ["tasks", "notes", "ünï 🦄", "t".repeat(MAX_ID), "__proto__", "a b"];
const IDS = ["1", "2", "rec-x", "i".repeat(MAX_ID), "💥", "constructor"];
const FIELDS = ["title", "done", "n", "__proto__", "constructor", "ünï", "🦄", "f".repeat(MAX_ID)];
const CLIENTS = ["laptop", "phone", "ünï-tab", "c".repeat(MAX_ID), "🦄"];
/** Client ids a header can carry (Latin-1). */
const HEADER_CLIENTS = ["laptop", "tablet", "ünï-tab", "c".repeat(MAX_ID)];

/** Valid times, all before this run (field times may lie in the year 0, cursors may not). */
const PAST_TIMES = [
  "2024-01-01T10:00:00Z",
  "2024-01-01T10:00:00.000Z",
  "2024-01-01T12:00:00+02:00",
  "2024-01-01T10:00:00,000000001Z",
  "2024-01-01 10:00:00z",
  "2023-06-30T23:59:59.999999999-11:59",
  "2024-02-29",
  "0000-01-01T00:00:00Z",
  "0001-01-01T00:00:00+01:00",
  "1969-12-31T23:59:59.5Z",
  "2020-05-05T05:05:05.123456+0530",
  "2024-01-01T10:00",
];
/** Valid times beyond any clock skew. */
const FUTURE_TIMES = [
  "2999-01-01T00:00:00Z",
  "9999-12-31T23:59:59.999999999Z",
  "2100-01-01",
  "3000-06-15T12:00:00+14:00",
];
const NOT_TIME_STRINGS = [
  "",
  "yesterday",
  "2024-13-01",
  "2024-02-30",
  "2024-01-01T24:00:00Z",
  "2024-01-01T10:00:60Z",
  "2024-01-01T10:00:00+24:00",
  "10000-01-01",
  "2024-1-1",
  "0000-01-01T00:00:00+00:01",
  " 2024-01-01",
  "2024-01-01T10:00:00ZZ",
  "１２３４-01-01",
  "2024-01-01T10:00:00.Z",
  "2024-01-01T10",
  "NaN",
  "\u0000",
];
const PAST_SINCE = [
  "1970-01-01T00:00:00.000000Z",
  "2024-01-01",
  "0001-01-01T00:00:00Z",
  "2020-01-01T00:00:00+14:00",
  "1000-06-15T12:00:00,5-12:00",
  "2024-01-01T10:00:00.123456789Z",
];
const FUTURE_SINCE = ["9999-12-31T23:59:59.999999Z", "2999-01-01"];
const BAD_SINCE = [
  ...NOT_TIME_STRINGS,
  "0000-01-01",
  "0000-12-31T23:59:59Z",
  "0001-01-01T00:30:00+01:00",
];
const SPECIAL_STRINGS = [
  "",
  "é",
  "🦄",
  "\u2028\u2029",
  "\uFEFF",
  'a\\b"c',
  "<script>alert(1)</script>",
  "'; DROP TABLE sync_changes; --",
  "%00",
  "\u0001\u001f",
  "\\u0000",
  "𝕏".repeat(50),
  "2999-01-01T00:00:00Z",
];
const EVENT_POOL = Array.from({ length: 6 }, () => crypto.randomUUID());

// ---------------------------------------------------------------------------------------------
// Building bodies. `undefined` means "absent"; a Deep is nesting written straight into the text.

class Deep {
  constructor(readonly depth: number) {}
  toString() {
    return `Deep(${this.depth})`;
  }
}

type Raw = Record<string, unknown>;

/** An object with exactly these own properties (`__proto__` included), absent ones left out. */
function obj(entries: readonly (readonly [string, unknown])[]): Raw {
  return Object.fromEntries(entries.filter(([, v]) => v !== undefined));
}

function serialize(v: unknown): string {
  if (v instanceof Deep) return "[".repeat(v.depth) + "]".repeat(v.depth);
  if (Array.isArray(v)) return "[" + v.map(serialize).join(",") + "]";
  if (typeof v === "object" && v !== null) {
    return "{" +
      Object.entries(v).filter(([, x]) => x !== undefined)
        .map(([k, x]) => JSON.stringify(k) + ":" + serialize(x)).join(",") +
      "}";
  }
  return JSON.stringify(v) ?? "null";
}

const isObject = (x: unknown): x is Raw => typeof x === "object" && x !== null && !Array.isArray(x);
const present = (x: unknown) => x !== null && x !== undefined;
const show = (x: unknown) => x instanceof Deep ? String(x) : (JSON.stringify(x) ?? "absent");

/** Strings PostgreSQL's jsonb takes (no NUL, no lone surrogate), inside any JSON value. */
function storableJson(v: unknown): unknown {
  const fix = (s: string) => s.toWellFormed().replaceAll("\0", "");
  if (typeof v === "string") return fix(v);
  if (Array.isArray(v)) return v.map(storableJson);
  if (typeof v === "object" && v !== null) {
    return obj(Object.entries(v).map(([k, x]) => [fix(k), storableJson(x)]));
  }
  return v;
}

const valueArb: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(
      null,
      true,
      false,
      0,
      -1,
      1.5,
      1e21,
      -1e-7,
      2 ** 53 + 2,
      Number.MAX_VALUE,
      Number.MIN_VALUE,
      [],
      {},
    ),
  },
  { weight: 2, arbitrary: fc.constantFrom(...SPECIAL_STRINGS) },
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 3, stringUnit: "grapheme" }).map(storableJson) },
);

const eventIdArb: fc.Arbitrary<string | null | undefined> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 2, arbitrary: fc.constantFrom(...EVENT_POOL) },
  { weight: 1, arbitrary: fc.constantFrom(...EVENT_POOL).map((u) => u.toUpperCase()) },
  { weight: 3, arbitrary: fc.uuid().map((u) => RUN + u.slice(8)) },
);

const pastArb = fc.constantFrom(...PAST_TIMES);
const futureArb = fc.constantFrom(...FUTURE_TIMES);
/** Anything but null that is not a time. */
const notTimeArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(...NOT_TIME_STRINGS, 0, 1704103500000, true, {}, [], [2024]),
  fc.string({ maxLength: 20 }).filter((s) => !/^\d{4}-/.test(s)),
);

const base = {
  table: fc.constantFrom(...TABLES),
  id: fc.constantFrom(...IDS),
  eventId: eventIdArb,
  schemaVersion: fc.constantFrom(undefined, undefined, 1, 0, -3, null),
};

const envelope = (c: { eventId: unknown; schemaVersion: unknown; table: unknown; id: unknown }) =>
  [["eventId", c.eventId], ["schemaVersion", c.schemaVersion], ["table", c.table], [
    "id",
    c.id,
  ]] as const;

const insertArb: fc.Arbitrary<Raw> = fc.record({
  ...base,
  entries: fc.array(fc.tuple(fc.constantFrom("", ...FIELDS), valueArb), { maxLength: 5 }),
  updatedAt: fc.oneof(fc.constantFrom(undefined, null), pastArb),
  createdAt: fc.oneof(fc.constantFrom(undefined, null, 17, "soon"), pastArb),
  deletedAt: fc.oneof(fc.constantFrom(undefined, undefined, null), pastArb),
}).map((c) =>
  obj([...envelope(c), ["op", "insert"], [
    "data",
    obj([...c.entries, ["updatedAt", c.updatedAt], ["createdAt", c.createdAt], [
      "deletedAt",
      c.deletedAt,
    ]]),
  ]])
);

const updateArb: fc.Arbitrary<Raw> = fc.record({
  ...base,
  fields: fc.array(fc.tuple(fc.constantFrom(...FIELDS), valueArb, pastArb, fc.boolean()), {
    maxLength: 4,
  }),
}).map((c) =>
  obj([...envelope(c), ["op", "update"], [
    "fields",
    obj(c.fields.map(([name, value, at, extra]) => [
      name,
      obj([["value", value], ["updatedAt", at], ["note", extra ? "ignored" : undefined]]),
    ])),
  ]])
);

const deleteArb: fc.Arbitrary<Raw> = fc.record({
  ...base,
  variant: fc.nat(5),
  at: pastArb,
  junk: fc.constantFrom<unknown>(null, 1, "x", [], {}, { deletedAt: "garbage" }),
}).map((c) => {
  const rest: [string, unknown][] = [
    [["deletedAt", c.at]], // soft
    [], // hard
    [["deletedAt", null]], // hard
    [["data", obj([["deletedAt", c.at]])]], // soft, from data
    [["deletedAt", c.at], ["data", c.junk]], // data ignored
    [["deletedAt", null], ["data", obj([["deletedAt", c.at]])]], // soft, from data
  ][c.variant]! as [string, unknown][];
  return obj([...envelope(c), ["op", "delete"], ...rest]);
});

const validChangeArb = fc.oneof(insertArb, updateArb, deleteArb);

// ---------------------------------------------------------------------------------------------
// Pushes and their mutations.

interface ValidPush {
  user: number;
  app: string;
  clientId: string;
  /** X-Client-Id: absent, empty (the body's counts) or a value (wins over the body's). */
  headerClient: string | undefined;
  since: string | null | undefined;
  schemaVersion: unknown;
  changes: unknown[];
}

const validPushArb: fc.Arbitrary<ValidPush> = fc.record({
  user: fc.constantFrom(0, 1),
  app: fc.constantFrom(...APPS),
  clientId: fc.constantFrom(...CLIENTS),
  headerClient: fc.constantFrom(undefined, undefined, "", ...HEADER_CLIENTS),
  since: fc.constantFrom(undefined, null, ...PAST_SINCE, ...FUTURE_SINCE),
  schemaVersion: fc.constantFrom(undefined, 1, 0, -1, null),
  changes: fc.array(validChangeArb, { maxLength: 6 }),
});

function pushObject(p: ValidPush): Raw {
  return obj([["clientId", p.clientId], ["since", p.since], ["schemaVersion", p.schemaVersion], [
    "changes",
    p.changes,
  ]]);
}

/** What the server must answer: a status and, for an error, the codes it may name. */
interface Outcome {
  status: number;
  codes?: string[];
  /** invalid_change: the index the message names. */
  index?: number;
}
const OK: Outcome = { status: 200 };
const bad = (code: string, status = 400, index?: number): Outcome =>
  index === undefined ? { status, codes: [code] } : { status, codes: [code], index };
const ANY_400: Outcome = { status: 400 };

interface Mutated {
  label: string;
  body: string | Uint8Array<ArrayBuffer>;
  headerClient: string | undefined;
  outcome: Outcome;
}
type Mutation = (p: ValidPush) => Mutated;

const same = (label: string, push: Raw, outcome = OK): Mutation => (p) => ({
  label,
  body: serialize(push),
  headerClient: p.headerClient,
  outcome,
});

const noMutation: fc.Arbitrary<Mutation> = fc.constant((p) => same("valid", pushObject(p))(p));

/** A change that must be refused (invalid_change), or accepted only to be refused for its clock. */
interface BadChange {
  change: unknown;
  label: string;
  skew?: boolean;
}

const BAD_IDS = ["", 0, null, {}, [], "x".repeat(MAX_ID + 1), "a\u0000b", "\uD800", "x\uDFFFy"];
const BAD_EVENT_IDS = [
  "not-a-uuid",
  "",
  7,
  {},
  [],
  EVENT_POOL[0]!.replaceAll("-", ""),
  EVENT_POOL[0]! + "0",
  " " + EVENT_POOL[0]!,
  "g" + EVENT_POOL[0]!.slice(1),
];
const BAD_STRINGS = ["a\u0000b", "\uD800", "x\uDFFF", "\u0000"];
const NOT_OBJECTS = [null, 1, "x", [], true];

function withFields(change: Raw, entries: [string, unknown][]): Raw {
  return { ...change, fields: obj([...Object.entries(change.fields as Raw), ...entries]) };
}
function withData(change: Raw, entries: [string, unknown][]): Raw {
  return { ...change, data: obj([...Object.entries(change.data as Raw), ...entries]) };
}

const badChangeArb: fc.Arbitrary<BadChange> = fc.oneof(
  fc.constantFrom(...NOT_OBJECTS).map((c) => ({ change: c, label: `change ${show(c)}` })),
  fc.tuple(
    validChangeArb,
    fc.constantFrom<unknown>(undefined, "INSERT", "upsert", "", 1, null, [
      "insert",
    ]),
  ).map(([c, op]) => ({ change: { ...c, op }, label: `op ${show(op)}` })),
  fc.tuple(validChangeArb, fc.constantFrom("table", "id"), fc.constantFrom(undefined, ...BAD_IDS))
    .map(([c, key, v]) => ({ change: { ...c, [key]: v }, label: `${key} ${show(v)}` })),
  fc.tuple(validChangeArb, fc.constantFrom<unknown>(...BAD_EVENT_IDS)).map(([c, v]) => ({
    change: { ...c, eventId: v },
    label: `eventId ${show(v)}`,
  })),
  fc.tuple(validChangeArb, fc.constantFrom<unknown>(1.5, "1", true, {}, [], 2, 1e9)).map((
    [c, v],
  ) => ({ change: { ...c, schemaVersion: v }, label: `change schemaVersion ${show(v)}` })),
  // insert
  fc.tuple(insertArb, fc.constantFrom(undefined, ...NOT_OBJECTS)).map(([c, v]) => ({
    change: { ...c, data: v },
    label: `insert data ${show(v)}`,
  })),
  fc.tuple(insertArb, fc.constantFrom("updatedAt", "deletedAt"), notTimeArb).map((
    [c, key, v],
  ) => ({ change: withData(c, [[key, v]]), label: `data.${key} ${show(v)}` })),
  fc.tuple(insertArb, fc.constantFrom(32, 32, 33, 5000)).map(([c, depth]) => ({
    change: withData(c, [["nested", new Deep(depth)]]),
    label: `data nested ${depth} deep`,
  })),
  fc.tuple(insertArb, fc.constantFrom(...BAD_STRINGS), fc.boolean()).map(([c, s, asKey]) => ({
    change: withData(c, [asKey ? [s, 1] : ["title", ["ok", { deep: s }]]]),
    label: `data ${asKey ? "key" : "value"} ${show(s)}`,
  })),
  // update
  fc.tuple(updateArb, fc.constantFrom(undefined, ...NOT_OBJECTS)).map(([c, v]) => ({
    change: { ...c, fields: v },
    label: `update fields ${show(v)}`,
  })),
  fc.tuple(
    updateArb,
    fc.constantFrom(...FIELDS),
    fc.oneof(
      fc.constantFrom<unknown>(...NOT_OBJECTS, { updatedAt: PAST_TIMES[0] }, { value: 1 }, {
        value: 1,
        updatedAt: null,
      }),
      notTimeArb.map((t) => ({ value: 1, updatedAt: t })),
    ),
  ).map(([c, name, entry]) => ({
    change: withFields(c, [[name, entry]]),
    label: `field ${name} = ${show(entry)}`,
  })),
  fc.tuple(updateArb, fc.constantFrom("", "f".repeat(MAX_ID + 1), ...BAD_STRINGS)).map((
    [c, name],
  ) => ({
    change: withFields(c, [[name, { value: 1, updatedAt: PAST_TIMES[0] }]]),
    label: `field name ${show(name)}`,
  })),
  fc.tuple(
    updateArb,
    fc.constantFrom<unknown>(
      ...BAD_STRINGS,
      ["ok", "\u0000"],
      { "a\u0000": 1 },
      new Deep(33),
      new Deep(33),
      new Deep(5000),
    ),
  ).map(([c, value]) => ({
    change: withFields(c, [["title", { value, updatedAt: PAST_TIMES[0] }]]),
    label: `field value ${show(value)}`,
  })),
  // delete
  fc.tuple(deleteArb, notTimeArb).map(([c, t]) => ({
    change: { ...c, deletedAt: t, data: undefined },
    label: `deletedAt ${show(t)}`,
  })),
  fc.tuple(deleteArb, notTimeArb, fc.constantFrom(undefined, null)).map(([c, t, top]) => ({
    change: { ...c, deletedAt: top, data: { deletedAt: t } },
    label: `data.deletedAt ${show(t)}`,
  })),
  // a write time beyond the clock skew
  fc.tuple(updateArb, futureArb).map(([c, t]) => ({
    change: withFields(c, [["title", { value: "from the future", updatedAt: t }]]),
    label: `field updatedAt ${t}`,
    skew: true,
  })),
  fc.tuple(insertArb, futureArb, fc.boolean()).map(([c, t, created]) => ({
    change: withData(c, created ? [["updatedAt", null], ["createdAt", t]] : [["updatedAt", t]]),
    label: `insert ${created ? "createdAt" : "updatedAt"} ${t}`,
    skew: true,
  })),
  fc.tuple(deleteArb, futureArb, fc.boolean()).map(([c, t, inData]) => ({
    change: inData
      ? { ...c, deletedAt: undefined, data: { deletedAt: t } }
      : { ...c, deletedAt: t, data: undefined },
    label: `delete at ${t}${inData ? " (data)" : ""}`,
    skew: true,
  })),
);

const badChangeMutation: fc.Arbitrary<Mutation> = fc.tuple(badChangeArb, fc.nat()).map((
  [bc, at],
) =>
(p) => {
  const changes = [...p.changes];
  const i = at % (changes.length + 1);
  changes.splice(i, 0, bc.change);
  return same(
    `change ${i}: ${bc.label}`,
    pushObject({ ...p, changes }),
    bc.skew ? bad("clock_skew", 422) : bad("invalid_change", 400, i),
  )(p);
});

const topMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.constantFrom("[]", "null", "1", '"push"', "true", "[{}]").map((text) => (p: ValidPush) => ({
    label: `body ${text}`,
    body: text,
    headerClient: p.headerClient,
    outcome: bad("invalid_body"),
  })),
  fc.constantFrom<[unknown, string]>(
    [undefined, "missing_client_id"],
    [0, "missing_client_id"],
    [null, "missing_client_id"],
    ["", "missing_client_id"],
    [{}, "missing_client_id"],
    [true, "missing_client_id"],
    ["c".repeat(MAX_ID + 1), "invalid_client_id"],
    ["a\u0000", "invalid_client_id"],
    ["\uDC00", "invalid_client_id"],
  ).map(([v, code]) => (p: ValidPush) =>
    // The header, when it has a value, wins over the body.
    same(`clientId ${show(v)}`, { ...pushObject(p), clientId: v }, p.headerClient ? OK : bad(code))(
      p,
    )
  ),
  fc.constantFrom<unknown>(...BAD_SINCE, 0, {}, []).map((v) => (p: ValidPush) =>
    same(`since ${show(v)}`, { ...pushObject(p), since: v }, bad("invalid_since"))(p)
  ),
  fc.constantFrom<[unknown, string]>(
    [1.5, "invalid_schema_version"],
    ["1", "invalid_schema_version"],
    [true, "invalid_schema_version"],
    [{}, "invalid_schema_version"],
    [2, "unsupported_schema_version"],
    [1e9, "unsupported_schema_version"],
  ).map(([v, code]) => (p: ValidPush) =>
    same(`schemaVersion ${show(v)}`, { ...pushObject(p), schemaVersion: v }, bad(code))(p)
  ),
  fc.constantFrom<unknown>(undefined, null, {}, "[]", 1).map((v) => (p: ValidPush) =>
    same(`changes ${show(v)}`, { ...pushObject(p), changes: v }, bad("invalid_body"))(p)
  ),
  fc.array(validChangeArb, { minLength: MAX_CHANGES + 1, maxLength: MAX_CHANGES + 3 }).map((
    changes,
  ) =>
  (p: ValidPush) =>
    same(
      `${changes.length} changes`,
      pushObject({ ...p, changes }),
      bad("too_many_changes", 413),
    )(p)
  ),
  fc.constant((p: ValidPush) => ({
    label: "X-Client-Id too long",
    body: serialize(pushObject(p)),
    headerClient: "h".repeat(MAX_ID + 1),
    outcome: bad("invalid_client_id"),
  })),
);

/** Changes that look odd but are valid. */
const benignMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(valueArb, fc.constantFrom<unknown>(null, 1, "x", [], { a: 1 })).map(
    ([extra, junk]) => (p: ValidPush) =>
      same("unknown keys", {
        ...pushObject(p),
        extra,
        clientID: "ignored",
        changes: p.changes.map((c) => {
          const change: Raw = { ...(c as Raw), "x-extra": extra };
          if (change.op !== "update") change.fields = junk;
          if (change.op === "update") change.data = junk;
          return change;
        }),
      })(p),
  ),
  fc.constantFrom("\uFEFF", " \n\t", "\r\n").map((ws) => (p: ValidPush) => ({
    label: `wrapped in ${show(ws)}`,
    body: ws + serialize(pushObject(p)) + (ws === "\uFEFF" ? "" : ws),
    headerClient: p.headerClient,
    outcome: OK,
  })),
  fc.nat().map((i) => (p: ValidPush) =>
    same(
      "a change twice",
      pushObject({
        ...p,
        changes: p.changes.length ? [...p.changes, p.changes[i % p.changes.length]] : [],
      }),
    )(p)
  ),
  fc.tuple(insertArb, updateArb).map(([ins, upd]) => (p: ValidPush) =>
    same(
      "nesting at the limit",
      pushObject({
        ...p,
        changes: [
          ...p.changes,
          withData(ins, [["nested", new Deep(31)]]),
          withFields(upd, [["nested", { value: new Deep(32), updatedAt: PAST_TIMES[0] }]]),
        ],
      }),
    )(p)
  ),
  fc.tuple(insertArb, insertArb, updateArb, futureArb, pastArb).map(
    ([a, b, u, future, past]) => (p: ValidPush) =>
      same(
        "future times that are not write times",
        pushObject({
          ...p,
          changes: [
            ...p.changes,
            withData(a, [["updatedAt", past], ["createdAt", future]]),
            withData(b, [["updatedAt", past], ["deletedAt", future]]),
            withFields(u, [["due", { value: future, updatedAt: past }]]),
          ],
        }),
      )(p),
  ),
);

/** One more change whose string value brings the body to about MAX_BODY + delta bytes. */
const sizeMutation: fc.Arbitrary<Mutation> = fc.tuple(
  fc.constantFrom("a", "é", "😀", "\u2028"),
  fc.constantFrom(-1, 0, 1, -40_000, 40_000, 400_000),
).map(([ch, delta]) => (p: ValidPush) => {
  const padded = (n: number) =>
    pushObject({
      ...p,
      changes: [...p.changes, {
        table: "tasks",
        id: "big",
        op: "update",
        fields: { text: { value: ch.repeat(n), updatedAt: PAST_TIMES[0] } },
      }],
    });
  const empty = encoder.encode(serialize(padded(0))).length;
  const n = Math.max(0, Math.floor((MAX_BODY + delta - empty) / encoder.encode(ch).length));
  return same(`${n} × ${show(ch)}`, padded(n))(p);
});

const mentionsChanges = (s: string) => s.includes("changes");

const garbageMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).filter((b) => !mentionsChanges(decoder.decode(b))).map(
    (bytes) => (p: ValidPush) => ({
      label: "random bytes",
      body: bytes,
      headerClient: p.headerClient,
      outcome: ANY_400,
    }),
  ),
  fc.string({ unit: "binary", maxLength: 200 }).filter((s) => !mentionsChanges(s)).map(
    (text) => (p: ValidPush) => ({
      label: "random text",
      body: text,
      headerClient: p.headerClient,
      outcome: ANY_400,
    }),
  ),
  fc.jsonValue({ maxDepth: 3 }).filter((v) => !mentionsChanges(JSON.stringify(v))).map(
    (v) => (p: ValidPush) => ({
      label: "random JSON",
      body: JSON.stringify(v),
      headerClient: p.headerClient,
      outcome: ANY_400,
    }),
  ),
  fc.nat().map((cut) => (p: ValidPush) => {
    const text = serialize(pushObject(p));
    return {
      label: "truncated",
      body: text.slice(0, cut % text.length),
      headerClient: p.headerClient,
      outcome: bad("invalid_json"),
    };
  }),
  fc.constantFrom("x", "}", ",", "{}", "\u0000", "]").map((tail) => (p: ValidPush) => ({
    label: `trailing ${show(tail)}`,
    body: serialize(pushObject(p)) + tail,
    headerClient: p.headerClient,
    outcome: bad("invalid_json"),
  })),
);

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 5, arbitrary: noMutation },
  { weight: 8, arbitrary: badChangeMutation },
  { weight: 4, arbitrary: topMutation },
  { weight: 2, arbitrary: benignMutation },
  { weight: 1, arbitrary: sizeMutation },
  { weight: 2, arbitrary: garbageMutation },
);

// ---------------------------------------------------------------------------------------------
// Headers.

const AUTH_OK = ["Bearer", "bearer", "BEARER  ", "Bearer\t"];
const AUTH_BAD = [
  "absent",
  "scheme only",
  "basic",
  "two tokens",
  "garbage",
  "truncated",
  "expired",
  "foreign key",
  "alg none",
  "no sub",
  "unknown kid",
] as const;
type AuthCase = { ok: true; style: string } | { ok: false; kind: string };

/** What fetch lets through in a header value (the rest goes over a raw socket, below). */
const headerSafe = (s: string) => /^[\t\x20-\x7e\x80-\xff]*$/.test(s);
const authArb: fc.Arbitrary<AuthCase> = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom(...AUTH_OK).map((style) => ({ ok: true, style })) },
  { weight: 2, arbitrary: fc.constantFrom(...AUTH_BAD).map((kind) => ({ ok: false, kind })) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: "binary-ascii", maxLength: 60 }).filter(headerSafe).map((s) => ({
      ok: false,
      kind: `random:${s}`,
    })),
  },
) as fc.Arbitrary<AuthCase>;

const requestIdArb = fc.oneof(
  fc.constantFrom(
    undefined,
    "req-1.2_3",
    "a".repeat(100),
    "a".repeat(101),
    "has space",
    "ünï",
    "../etc",
    "",
    "x\ty",
    " padded ",
  ),
  fc.string({ unit: "binary-ascii", maxLength: 30 }).filter(headerSafe),
);
const contentTypeArb = fc.constantFrom(
  undefined,
  "application/json",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=xyz",
  "application/json; charset=iso-8859-1",
  "garbage/garbage/garbage",
  "",
);

const appArb = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom(...APPS).map((app) => ({ segment: app, app })) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(...BAD_APPS).map((segment) => ({
      segment,
      app: undefined as string | undefined,
    })),
  },
);

// ---------------------------------------------------------------------------------------------
// The model: what the accepted pushes wrote.

interface Logged {
  user: number;
  app: string;
  clientId: string;
  /** The client's eventId (lower case); the server assigns one otherwise. */
  eventId: string | undefined;
  /** The change as pull returns it, without eventId. */
  wire: Raw;
}

function wireOf(raw: Raw): Raw {
  const head = { schemaVersion: 1, table: raw.table, id: raw.id, op: raw.op };
  if (raw.op === "insert") return { ...head, data: raw.data };
  if (raw.op === "update") {
    return {
      ...head,
      fields: obj(
        Object.entries(raw.fields as Record<string, Raw>).map((
          [name, f],
        ) => [name, { value: f.value, updatedAt: f.updatedAt }]),
      ),
    };
  }
  const deletedAt = present(raw.deletedAt)
    ? raw.deletedAt
    : isObject(raw.data) && present(raw.data.deletedAt)
    ? raw.data.deletedAt
    : undefined;
  return deletedAt === undefined ? head : { ...head, deletedAt };
}

class Model {
  readonly log: Logged[] = [];
  /** The server's eventIds are unique across all users. */
  readonly eventIds = new Set<string>();
  readonly states = new Map<string, RecordState>();

  /** Applies an accepted push; returns the conflicts the server must have reported. */
  apply(user: number, app: string, clientId: string, changes: Raw[], receivedAt: string) {
    const conflicts: Conflict[] = [];
    for (const raw of changes) {
      const eventId = present(raw.eventId) ? String(raw.eventId).toLowerCase() : undefined;
      if (eventId !== undefined) {
        if (this.eventIds.has(eventId)) continue;
        this.eventIds.add(eventId);
      }
      const wire = wireOf(raw);
      this.log.push({ user, app, clientId, eventId, wire });
      const key = JSON.stringify([user, app, wire.table, wire.id]);
      const merged = mergeChange(this.states.get(key), wire as unknown as Change, {
        clientId,
        receivedAt,
      });
      conflicts.push(...merged.conflicts);
      if (merged.changed) this.states.set(key, merged.state);
    }
    return conflicts;
  }

  /** What a device sees: other clients' changes of this user and app (and table). */
  visible(user: number, app: string, clientId: string, table?: string): Logged[] {
    return this.log.filter((l) =>
      l.user === user && l.app === app && l.clientId !== clientId &&
      (table === undefined || l.wire.table === table)
    );
  }
}

/** The server's receive time (hard deletes, inserts without a time) is not the test's to know. */
function normalized(x: unknown): unknown {
  return typeof x === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/.test(x) &&
      x >= START.slice(0, 16) && x < "2100"
    ? "<received>"
    : x;
}

function normalizedConflicts(conflicts: Conflict[]) {
  return conflicts.map((c) => ({
    ...c,
    clientValue: normalized(c.clientValue),
    clientTimestamp: normalized(c.clientTimestamp),
    serverValue: normalized(c.serverValue),
    serverTimestamp: normalized(c.serverTimestamp),
  }));
}

function normalizedState(state: RecordState): Record<string, unknown> {
  return obj(
    Object.entries(state).map(([k, f]) => [k, { v: normalized(f.v), t: normalized(f.t), c: f.c }]),
  );
}

/** The server's changes are the model's, in order; eventIds as given, or fresh UUIDs. */
function assertSameChanges(actual: Raw[], expected: Logged[], label: string) {
  assert.equal(actual.length, expected.length, `${label}: number of changes`);
  actual.forEach((change, i) => {
    const { eventId, ...rest } = change;
    const want = expected[i]!;
    if (want.eventId !== undefined) assert.equal(eventId, want.eventId, `${label}: eventId ${i}`);
    else assert.match(String(eventId), UUID, `${label}: server eventId ${i}`);
    assert.deepEqual(rest, want.wire, `${label}: change ${i}`);
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP.

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** Reads a reply that must be JSON, and checks the request id it carries. */
async function readReply(res: Response, requestId: string | undefined, label: string) {
  const text = await res.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${label}: ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
  }
  const sent = requestId?.replace(/^[\t ]+|[\t ]+$/g, "");
  const echoed = res.headers.get("x-request-id") ?? "";
  if (sent && /^[A-Za-z0-9._-]{1,100}$/.test(sent)) assert.equal(echoed, sent, label);
  else assert.match(echoed, UUID, `${label}: a fresh request id for ${show(requestId)}`);
  return { status: res.status, headers: res.headers, body } satisfies Reply;
}

function assertOutcome(reply: Reply, expected: Outcome, label: string) {
  const what = `${label}: ${reply.status} ${JSON.stringify(reply.body).slice(0, 300)}`;
  assert.ok(reply.status < 500, `never a 5xx — ${what}`);
  assert.equal(reply.status, expected.status, what);
  if (expected.status === 200) return;
  assert.equal(typeof reply.body.error, "string", `an error code — ${what}`);
  assert.equal(typeof reply.body.message, "string", `an error message — ${what}`);
  if (expected.codes) assert.ok(expected.codes.includes(reply.body.error as string), what);
  if (expected.index !== undefined) {
    assert.match(String(reply.body.message), new RegExp(`^Cannot apply change ${expected.index}:`));
  }
  if (reply.body.error === "clock_skew") {
    assert.equal(typeof reply.body.serverTime, "string", what);
  }
}

/** One raw HTTP/1.1 exchange: the status of the answer, or undefined when the server just closed. */
async function rawExchange(
  port: number,
  request: string,
  halfClose: boolean,
): Promise<{ status: number | undefined; body: string }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  // A guard against a hang, not a measurement: no answer at all counts as "closed".
  const guard = setTimeout(() => conn.close(), 10_000);
  let text = "";
  try {
    await conn.write(encoder.encode(request));
    if (halfClose) await conn.closeWrite();
    const buf = new Uint8Array(16 * 1024);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n), { stream: true });
      const end = text.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: (\d+)/i.exec(text.slice(0, end));
      if (end >= 0 && length && encoder.encode(text.slice(end + 4)).length >= +length[1]!) break;
    }
  } catch { /* reset or closed by the guard */ }
  clearTimeout(guard);
  try {
    conn.close();
  } catch { /* closed by the guard */ }
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(text)?.[1];
  return {
    status: status === undefined ? undefined : Number(status),
    body: text.slice(text.indexOf("\r\n\r\n") + 4),
  };
}

/**
 * fetch, guarded: a request the server never answers fails the test instead of hanging it (a
 * guard, not a measurement).
 */
function send(url: string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
}

// ---------------------------------------------------------------------------------------------

Deno.test("fuzz: hostile input never gets a 5xx, and only valid pushes write", async (t) => {
  const jwks = await startJwksServer();
  const server = await startServer({
    JWKS_URL: jwks.url,
    MAX_BODY_BYTES: String(MAX_BODY),
    MAX_CHANGES_PER_PUSH: String(MAX_CHANGES),
    PUSH_PAGE_SIZE: String(PAGE),
    PULL_PAGE_SIZE: String(PAGE),
  });
  const users = [`fuzz-${RUN}-a`, `fuzz-${RUN}-b`];
  const tokens = await Promise.all(users.map((u) => jwks.token(u)));
  const badTokens: Record<(typeof AUTH_BAD)[number], string | undefined> = {
    "absent": undefined,
    "scheme only": "Bearer",
    "basic": `Basic ${btoa("user:pass")}`,
    "two tokens": `Bearer ${tokens[0]} ${tokens[0]}`,
    "garbage": "Bearer not.a.jwt",
    "truncated": `Bearer ${tokens[0]!.slice(0, -3)}`,
    "expired": `Bearer ${await jwks.token(users[0]!, {
      expiresIn: Math.floor(Date.now() / 1000) - 60,
    })}`,
    "foreign key": `Bearer ${await jwks.token(users[0]!, { foreignKey: true })}`,
    "alg none": `Bearer ${jwks.unsignedToken(users[0]!)}`,
    "no sub": `Bearer ${await jwks.token(users[0]!, { sub: null })}`,
    "unknown kid": `Bearer ${await jwks.token(users[0]!, { kid: "nobody" })}`,
  };
  const authorization = (auth: AuthCase, user: number) =>
    auth.ok
      ? `${auth.style} ${tokens[user]}`
      : auth.kind.startsWith("random:")
      ? auth.kind.slice(7)
      : badTokens[auth.kind as (typeof AUTH_BAD)[number]];
  const model = new Model();
  let requests = 0;

  /** Sends a push the model knows to be valid (used by other steps); returns its cursor. */
  async function validPush(user: number, app: string, clientId: string, changes: Raw[]) {
    const receivedAt = new Date().toISOString();
    const res = await send(`${server.url}/sync/${app}`, {
      method: "POST",
      headers: { authorization: `Bearer ${tokens[user]}`, "x-client-id": clientId },
      body: serialize({ changes }),
    });
    const reply = await readReply(res, undefined, "valid push");
    assertOutcome(reply, OK, "valid push");
    model.apply(user, app, clientId, changes, receivedAt);
  }

  try {
    await t.step("regressions found by fuzzing", async () => {
      const headers = { authorization: `Bearer ${tokens[0]}`, "x-client-id": "laptop" };
      const get = async (path: string) =>
        readReply(await send(server.url + path, { headers }), undefined, path);
      // PostgreSQL has no year 0: such a cursor was a 500.
      for (const since of ["0000-01-01", "0000-12-31T23:59:59.999999Z", "0001-01-01T00:30+01:00"]) {
        const q = encodeURIComponent(since);
        assertOutcome(
          await get(`/sync/todo/pull?collection=tasks&since=${q}`),
          bad("invalid_since"),
          since,
        );
        assertOutcome(
          await get(`/sync/todo/stream?collections=tasks&since=${q}`),
          bad("invalid_since"),
          since,
        );
        const push = await send(`${server.url}/sync/todo`, {
          method: "POST",
          headers,
          body: JSON.stringify({ since, changes: [] }),
        });
        assertOutcome(await readReply(push, undefined, since), bad("invalid_since"), since);
      }
      // HEAD ran the GET handler and dropped its body without cancelling it: an export kept its
      // transaction (with the embedded database its only connection: every later request hung),
      // an event stream its place in the hub.
      for (let i = 0; i < 3; i++) {
        for (
          const path of ["/backup/export", "/sync/todo/stream?collections=tasks&since=2024-01-01"]
        ) {
          const head = await send(server.url + path, { method: "HEAD", headers });
          assert.equal(head.status, 200, `HEAD ${path}`);
          assert.equal(head.body, null);
        }
        assertOutcome(await get("/sync/todo/pull?collection=tasks&since=2024-01-01"), OK, "pull");
      }
      await eventually(async () => {
        const res = await send(`${server.url}/health`);
        return (await res.json()).connections === 0;
      }, 10_000);
      // A NUL in a collection name reached PostgreSQL: a 500 (pull), a failed stream (SSE).
      assertOutcome(
        await get("/sync/todo/pull?collection=a%00b&since=2024-01-01"),
        bad("invalid_collection"),
        "NUL collection",
      );
      assertOutcome(
        await get("/sync/todo/stream?collections=tasks,%00&since=2024-01-01"),
        bad("invalid_collections"),
        "NUL collections",
      );
    });

    await t.step("push bodies, mostly valid with one mutation, some random", async () => {
      const pushCaseArb = fc.record({
        push: validPushArb,
        mutation: mutationArb,
        auth: authArb,
        app: appArb,
        requestId: requestIdArb,
        contentType: contentTypeArb,
      }).map(({ mutation, ...c }) => {
        const push = { ...c.push, app: c.app.app ?? c.push.app };
        // A counterexample shows the request, not the function that made it.
        const request = Object.assign(mutation(push), {
          [fc.toStringMethod]: () => `${request.label}: ${show(request.body).slice(0, 2000)}`,
        });
        return { ...c, push, request };
      });
      await fc.assert(
        fc.asyncProperty(pushCaseArb, async (c) => {
          const p = c.push, m = c.request;
          const label = `push ${c.app.segment} [${m.label}]`;
          const bytes = typeof m.body === "string" ? encoder.encode(m.body) : m.body;
          const expected = bytes.length > MAX_BODY
            ? bad("payload_too_large", 413)
            : !c.auth.ok
            ? { status: 401, codes: ["unauthorized"] }
            : c.app.app === undefined
            ? bad("invalid_app_id")
            : m.outcome;
          const headers = new Headers();
          const auth = authorization(c.auth, p.user);
          if (auth !== undefined) headers.set("authorization", auth);
          if (m.headerClient !== undefined) headers.set("x-client-id", m.headerClient);
          if (c.requestId !== undefined) headers.set("x-request-id", c.requestId);
          if (c.contentType !== undefined) headers.set("content-type", c.contentType);
          const receivedAt = new Date().toISOString();
          requests++;
          const res = await send(`${server.url}/sync/${c.app.segment}`, {
            method: "POST",
            headers,
            body: bytes,
          });
          const reply = await readReply(res, c.requestId, label);
          assertOutcome(reply, expected, label);
          if (reply.status !== 200) return;

          // What the server parsed (the BOM goes as in the server's text()).
          const sent = JSON.parse(decoder.decode(bytes)) as Raw;
          const clientId = m.headerClient || (sent.clientId as string);
          const future = typeof sent.since === "string" && FUTURE_SINCE.includes(sent.since);
          const before = future ? [] : model.visible(p.user, p.app, clientId);
          const conflicts = model.apply(
            p.user,
            p.app,
            clientId,
            sent.changes as Raw[],
            receivedAt,
          );
          assert.deepEqual(
            normalizedConflicts(reply.body.conflicts as Conflict[]),
            normalizedConflicts(conflicts),
            `${label}: conflicts`,
          );
          assertSameChanges(
            reply.body.serverChanges as Raw[],
            before.slice(0, PAGE),
            `${label}: serverChanges`,
          );
          assert.equal(reply.body.hasMore, before.length > PAGE, `${label}: hasMore`);
          assert.match(String(reply.body.syncedUntil), CURSOR);
        }),
        RUNS.push,
      );
    });

    await t.step("pull query strings and headers", async () => {
      interface Param {
        key: string;
        /** As sent. */
        raw: string;
        /** As the server reads it. */
        value: string;
      }
      const clean = (key: string, value: string): Param => ({
        key,
        raw: `${encodeURIComponent(key)}=${encodeURIComponent(value)}`,
        value,
      });
      /** Sent as is; the server keeps what it cannot decode. */
      const GARBAGE = ["%", "%Z", "%ZZ", "%E0%A4", "%ED%A0%80", "%C0%80", "%FF", "a%2", "%%%"];
      const validCollection = fc.constantFrom(...TABLES).map((v) => clean("collection", v));
      const badCollection: fc.Arbitrary<Param> = fc.oneof(
        fc.constantFrom("", "c".repeat(MAX_ID + 1), "a\u0000b", "never-written").map((v) =>
          clean("collection", v)
        ),
        fc.constantFrom(...GARBAGE).map((g) => ({
          key: "collection",
          raw: `collection=${g}`,
          value: g,
        })),
        fc.constantFrom(
          { key: "collection", raw: "collection", value: "" },
          { key: "collection", raw: "coll%65ction=tasks", value: "tasks" },
        ),
      );
      const validSince = fc.oneof(
        fc.constantFrom(...PAST_SINCE, ...FUTURE_SINCE).map((v) => clean("since", v)),
        fc.constant({ key: "since", raw: "since=%32%30%32%34-01-01", value: "2024-01-01" }),
      );
      const badSince: fc.Arbitrary<Param> = fc.oneof(
        fc.constantFrom(...BAD_SINCE).map((v) => clean("since", v)),
        fc.constantFrom(...GARBAGE).map((g) => ({ key: "since", raw: `since=${g}`, value: g })),
      );
      const otherParam = fc.tuple(
        fc.constantFrom("limit", "clientId", "table", "collections", "Collection", "x"),
        fc.string({ maxLength: 20 }),
      ).map(([k, v]) => clean(k, v));
      /** Mostly a valid query; sometimes a bad or missing part, repeated keys, other keys. */
      const paramsArb = fc.tuple(
        fc.option(fc.oneof({ weight: 6, arbitrary: validCollection }, badCollection), {
          freq: 8,
        }),
        fc.option(fc.oneof({ weight: 6, arbitrary: validSince }, badSince), { freq: 8 }),
        fc.array(fc.oneof(otherParam, validCollection, badCollection, validSince, badSince), {
          maxLength: 3,
        }),
      ).chain(([collection, since, extras]) => {
        const all = [collection, since, ...extras].filter((p): p is Param => p !== null);
        return fc.shuffledSubarray(all, { minLength: all.length });
      });
      const pullCaseArb = fc.record({
        user: fc.constantFrom(0, 1),
        auth: authArb,
        app: appArb,
        params: paramsArb,
        separator: fc.constantFrom("&", "&", "&&"),
        clientHeader: fc.oneof(
          { weight: 8, arbitrary: fc.constantFrom(...HEADER_CLIENTS) },
          fc.constantFrom(undefined, ""),
        ),
        requestId: requestIdArb,
      });
      await fc.assert(
        fc.asyncProperty(pullCaseArb, async (c) => {
          const query = c.params.map((p) => p.raw).join(c.separator);
          const label = `pull ${c.app.segment}?${query}`;
          const first = (key: string) => c.params.find((p) => p.key === key)?.value;
          const collection = first("collection"), since = first("since");
          const defects: string[] = [];
          if (!collection) defects.push("missing_collection");
          else if (collection.length > MAX_ID || collection.includes("\0")) {
            defects.push("invalid_collection");
          }
          const cursor = since === undefined ? undefined : parseCursor(since);
          if (cursor === undefined) defects.push("invalid_since");
          if (!c.clientHeader) defects.push("missing_client_id");
          const expected: Outcome = !c.auth.ok
            ? { status: 401, codes: ["unauthorized"] }
            : c.app.app === undefined
            ? bad("invalid_app_id")
            : defects.length
            ? { status: 400, codes: defects }
            : OK;
          const headers = new Headers();
          const auth = authorization(c.auth, c.user);
          if (auth !== undefined) headers.set("authorization", auth);
          if (c.clientHeader !== undefined) headers.set("x-client-id", c.clientHeader);
          if (c.requestId !== undefined) headers.set("x-request-id", c.requestId);
          requests++;
          const res = await send(`${server.url}/sync/${c.app.segment}/pull?${query}`, { headers });
          const reply = await readReply(res, c.requestId, label);
          assertOutcome(reply, expected, label);
          if (reply.status !== 200) return;
          const future = FUTURE_SINCE.includes(since!);
          const visible = future
            ? []
            : model.visible(c.user, c.app.app!, c.clientHeader!, collection);
          assertSameChanges(reply.body.serverChanges as Raw[], visible.slice(0, PAGE), label);
          assert.equal(reply.body.hasMore, visible.length > PAGE, `${label}: hasMore`);
          assert.deepEqual(reply.body.conflicts, []);
          assert.match(String(reply.body.syncedUntil), CURSOR);
          assert.ok(String(reply.body.syncedUntil) >= cursor!, `${label}: syncedUntil ≥ since`);
        }),
        RUNS.pull,
      );
    });

    await t.step("any method on any route", async () => {
      const PATHS = [
        "/",
        "/sync",
        "/sync/todo",
        "/sync/todo/pull",
        "/sync/todo/stream",
        "/sync/todo/stream?collections=tasks&since=2024-01-01",
        "/ws",
        "/ws/todo",
        "/ws/-bad",
        "/health",
        "/metrics",
        "/backup/export",
        "/backup/import",
        "/sync/todo/pull/extra",
        "/%ZZ",
        "/sync/%00",
        "//sync//todo",
        "/sync/todo?x=%",
        "/sync/" + "a".repeat(5000),
      ];
      const routeArb = fc.record({
        method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"),
        path: fc.constantFrom(...PATHS),
        auth: authArb,
        body: fc.option(fc.uint8Array({ maxLength: 200 }), { nil: undefined }),
      });
      await fc.assert(
        fc.asyncProperty(routeArb, async (c) => {
          const label = `${c.method} ${c.path.slice(0, 80)}`;
          const headers = new Headers({ "x-client-id": "router" });
          const auth = authorization(c.auth, 0);
          if (auth !== undefined) headers.set("authorization", auth);
          requests++;
          const res = await send(server.url + c.path, {
            method: c.method,
            headers,
            ...(c.body && c.method !== "GET" && c.method !== "HEAD" ? { body: c.body } : {}),
          });
          // Read at most the first chunk: a stream (SSE, export) goes on.
          const reader = res.body?.getReader();
          const chunk = reader ? (await reader.read()).value : undefined;
          await reader?.cancel();
          assert.ok(res.status < 500, `${label}: ${res.status}`);
          if (res.status >= 400 && c.method !== "HEAD") {
            const text = decoder.decode(chunk);
            assert.equal(typeof JSON.parse(text).error, "string", `${label}: ${text}`);
          }
        }),
        RUNS.route,
      );
    });

    await t.step("WebSocket frames before and after auth", async () => {
      type Frame =
        | { kind: "text"; text: string }
        | { kind: "binary"; bytes: Uint8Array }
        | { kind: "auth"; token: string; clientId: string | undefined };
      const ping = (bytes: number) => {
        const head = '{"type":"ping","pad":"';
        return head + "x".repeat(bytes - head.length - 2) + '"}';
      };
      const textArb = fc.oneof(
        fc.string({ unit: "binary", maxLength: 80 }),
        fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
        fc.record({
          type: fc.constantFrom<unknown>("ping", "pong", "PING", "auth", "sync", "", 1, null, [
            "ping",
          ]),
          token: fc.constantFrom<unknown>(undefined, "", 5, "garbage", null),
          extra: fc.jsonValue({ maxDepth: 1 }),
        }).map((o) => serialize(o)),
        fc.constantFrom(
          '{"type":"ping"}',
          ping(MAX_WS_MESSAGE),
          ping(MAX_WS_MESSAGE + 1),
          "a".repeat(70_000),
          JSON.stringify("😀".repeat(MAX_WS_MESSAGE / 3)),
        ),
      ).map((text): Frame => ({ kind: "text", text }));
      const frameArb: fc.Arbitrary<Frame> = fc.oneof(
        { weight: 4, arbitrary: textArb },
        {
          weight: 1,
          arbitrary: fc.uint8Array({ maxLength: 50 }).map((bytes): Frame => ({
            kind: "binary",
            bytes,
          })),
        },
        {
          weight: 2,
          arbitrary: fc.record({
            token: fc.constantFrom("good", "good", "expired", "foreign key", "truncated"),
            clientId: fc.constantFrom(undefined, "", "laptop", "🦄"),
          }).map(({ token, clientId }): Frame => ({
            kind: "auth",
            token: token === "good" ? tokens[0]! : badTokens[token]!.slice("Bearer ".length),
            clientId,
          })),
        },
      );
      const error = (message: string) => ({ type: "error", message, tables: [message] });
      const wsCaseArb = fc.record({
        app: fc.constantFrom(undefined, ...APPS),
        frames: fc.array(frameArb, { minLength: 1, maxLength: 8 }),
      });
      let socketNo = 0;
      await fc.assert(
        fc.asyncProperty(wsCaseArb, async (c) => {
          const path = c.app === undefined ? "/ws" : `/ws/${c.app}`;
          const ws = await WsClient.open(server.url, path);
          let open = false, closed: number | undefined;
          try {
            for (const frame of c.frames) {
              const label = `${path} ${frame.kind} ${
                frame.kind === "binary" ? frame.bytes.length : show(
                  frame.kind === "text" ? frame.text.slice(0, 80) : frame.clientId,
                )
              }`;
              let text: string | undefined;
              if (frame.kind === "binary") ws.socket.send(frame.bytes);
              else {
                text = frame.kind === "text"
                  ? frame.text
                  : serialize({ type: "auth", token: frame.token, clientId: frame.clientId });
                ws.socket.send(text);
              }
              // The model of one frame.
              let reply: unknown, close: [number, string] | undefined;
              if (text === undefined) {
                reply = error("messages must be JSON text");
                close = [1008, "messages must be JSON text"];
              } else if (encoder.encode(text).length > MAX_WS_MESSAGE) {
                close = [1009, "message too large"];
              } else {
                let msg: unknown, parsed = true;
                try {
                  msg = JSON.parse(text.toWellFormed());
                } catch {
                  parsed = false;
                }
                const type = typeof msg === "object" && msg !== null
                  ? (msg as Raw).type
                  : undefined;
                if (!parsed) reply = error("invalid message");
                else if (type === "ping") reply = { type: "pong" };
                else if (type === "auth") {
                  if (!open) {
                    if ((msg as Raw).token === tokens[0]) {
                      reply = { type: "auth-ok" };
                      open = true;
                    } else {
                      reply = error("invalid token");
                      close = [1008, "invalid token"];
                    }
                  }
                } else reply = error("unknown message type");
              }
              if (reply !== undefined) assert.deepEqual(await ws.next(5000), reply, label);
              if (close) {
                assert.deepEqual(await ws.closed, { code: close[0], reason: close[1] }, label);
                closed = close[0];
                break;
              }
            }
            if (closed !== undefined) return;
            // Nothing unexpected is waiting, and the socket still works.
            ws.send({ type: "ping" });
            assert.deepEqual(await ws.next(5000), { type: "pong" }, `${path}: final ping`);
            if (open) {
              const app = c.app ?? "todo";
              await validPush(0, app, "ws-pusher", [{
                table: "tasks",
                id: `ws-${socketNo++}`,
                op: "insert",
                data: { title: "notify" },
              }]);
              assert.deepEqual(await ws.next(5000), {
                type: "sync-available",
                appId: app,
                tables: ["tasks"],
              });
            }
            assert.deepEqual(ws.unread(), []);
          } finally {
            await ws.close();
          }
        }),
        RUNS.ws,
      );
      const fresh = await WsClient.authed(server.url, tokens[1]!);
      await fresh.close();
    });

    await t.step("broken HTTP framing", async () => {
      const head = (extra: string) =>
        `POST /sync/todo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${
          tokens[0]
        }\r\nX-Client-Id: raw\r\n${extra}\r\n`;
      const change = JSON.stringify({
        changes: [{ table: "tasks", id: "raw", op: "insert", data: {} }],
      });
      const cases: [string, string, boolean, number | "any"][] = [
        [
          "declared length beyond the limit",
          head("Content-Length: 1000000000\r\n") + "{}",
          false,
          413,
        ],
        // The client hangs up mid-body: was a 500 (the unreadable body treated as a bug).
        ["body shorter than declared", head("Content-Length: 500\r\n") + change, true, 400],
        [
          "chunked body cut off",
          head("Transfer-Encoding: chunked\r\n") + `${change.length.toString(16)}\r\n${change}\r\n`,
          true,
          400,
        ],
        [
          "chunk longer than sent",
          head("Transfer-Encoding: chunked\r\n") + "400000\r\n" + change,
          true,
          400,
        ],
        [
          "bad chunk size",
          head("Transfer-Encoding: chunked\r\n") + "zz\r\nabc\r\n0\r\n\r\n",
          true,
          "any",
        ],
        [
          "length and chunked",
          head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n",
          false,
          "any",
        ],
        ["negative length", head("Content-Length: -1\r\n"), false, "any"],
        ["two lengths", head("Content-Length: 2\r\nContent-Length: 3\r\n") + "{}", false, "any"],
        ["garbage request line", "GARBAGE\r\n\r\n", false, "any"],
        ["control bytes in a header", head("X-Client-Id: \u0001\u007f\r\n"), false, "any"],
      ];
      for (const [label, request, halfClose, status] of cases) {
        requests++;
        const answer = await rawExchange(server.port, request, halfClose);
        if (status === "any") {
          assert.ok(
            answer.status === undefined || answer.status < 500,
            `${label}: ${answer.status}`,
          );
        } else {
          assert.equal(answer.status, status, `${label}: ${answer.body}`);
          assert.equal(typeof JSON.parse(answer.body).error, "string", label);
        }
      }
    });

    await t.step("the database holds exactly what the accepted pushes wrote", async () => {
      const auditor = `auditor-${RUN}`;
      for (const [user, token] of tokens.entries()) {
        for (const app of APPS) {
          // Every table at once: empty pushes as a fresh device, page after page.
          const seen: Raw[] = [];
          let since: string | undefined;
          for (;;) {
            const res = await send(`${server.url}/sync/${app}`, {
              method: "POST",
              headers: { authorization: `Bearer ${token}`, "x-client-id": auditor },
              body: serialize({ since, changes: [] }),
            });
            const reply = await readReply(res, undefined, "audit push");
            assertOutcome(reply, OK, "audit push");
            seen.push(...reply.body.serverChanges as Raw[]);
            since = reply.body.syncedUntil as string;
            if (!reply.body.hasMore) break;
          }
          const expected = model.visible(user, app, auditor);
          assertSameChanges(seen, expected, `user ${user} app ${app}`);
          const ids = seen.map((c) => c.eventId);
          assert.equal(new Set(ids).size, ids.length, "eventIds are unique");
          // And table by table through pull.
          for (const table of TABLES) {
            const pulled: Raw[] = [];
            let cursor = "1970-01-01T00:00:00.000000Z";
            for (;;) {
              const q = new URLSearchParams({ collection: table, since: cursor });
              const res = await send(`${server.url}/sync/${app}/pull?${q}`, {
                headers: { authorization: `Bearer ${token}`, "x-client-id": auditor },
              });
              const reply = await readReply(res, undefined, "audit pull");
              assertOutcome(reply, OK, "audit pull");
              pulled.push(...reply.body.serverChanges as Raw[]);
              cursor = reply.body.syncedUntil as string;
              if (!reply.body.hasMore) break;
            }
            assertSameChanges(
              pulled,
              expected.filter((l) => l.wire.table === table),
              `user ${user} app ${app} table ${table}`,
            );
          }
        }
      }
      if (POSTGRES_URL) {
        // Rows no pull can reach: other apps, other tables, the merged state.
        const db = openPostgres(POSTGRES_URL, { max: 1 });
        try {
          for (const [i, user] of users.entries()) {
            assert.equal(
              await countRows(db, user),
              model.log.filter((l) => l.user === i).length,
              `${user}: log rows`,
            );
            const rows = await withUser(
              db,
              user,
              (tx) =>
                tx.query<{ appId: string; table: string; id: string; fields: RecordState }>(
                  `SELECT app_id AS "appId", table_name AS "table", record_id AS id, fields
                 FROM sync_records WHERE user_id = $1`,
                  [user],
                ),
            );
            const actual = new Map(
              rows.map((r) => [JSON.stringify([i, r.appId, r.table, r.id]), r.fields]),
            );
            const expected = [...model.states].filter(([k]) => JSON.parse(k)[0] === i);
            assert.equal(actual.size, expected.length, `${user}: records`);
            for (const [key, state] of expected) {
              assert.ok(actual.has(key), `${key} is stored`);
              assert.deepEqual(normalizedState(actual.get(key)!), normalizedState(state), key);
            }
          }
        } finally {
          await db.close();
        }
      }
    });

    await t.step("the server is still up, healthy and logged no bug", async () => {
      const health = await send(`${server.url}/health`);
      assert.equal(health.status, 200);
      assert.equal((await health.json()).status, "ok");
      // Every socket and stream the fuzz opened is gone from the hub.
      await eventually(async () => {
        const res = await send(`${server.url}/health`);
        return (await res.json()).connections === 0;
      }, 10_000);
      const bugs = server.output().split("\n").filter((l) => l.includes('"level":"error"'));
      assert.deepEqual(bugs, []);
      console.log(
        `fuzz: seed ${RUNS.push.seed}, runs ${
          Object.entries(RUNS).map(([k, r]) => `${k} ${r.numRuns}`).join(", ")
        }, ${requests} requests, ` +
          `${model.log.length} changes stored`,
      );
    });
  } finally {
    await server.stop();
    await jwks.close();
  }
});
