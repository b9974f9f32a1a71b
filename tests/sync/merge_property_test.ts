/**
 * Field-level LWW as properties: generated changes from several clients to a few records, with
 * timestamps drawn so that equal instants (spelled alike or differently) are common. The oracle
 * knows each write's instant from how it was generated, not by parsing its text.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import type { Change } from "../../src/sync/change.ts";
import {
  canonicalJson,
  compareWrites,
  type FieldState,
  mergeChange,
  type RecordState,
} from "../../src/sync/merge.ts";
import { fuzzParameters } from "../helpers/fuzz.ts";

const PARAMS = fuzzParameters(300);

/** 2024-01-01T10:00:00Z; generated instants are microseconds after it. */
const BASE_MS = Date.UTC(2024, 0, 1, 10);

interface Stamp {
  text: string;
  /** Microseconds after BASE_MS: the instant the text means. */
  micros: number;
}

/** One instant in one of the spellings clients send. */
function spell(micros: number, style: number, offsetMinutes: number): string {
  const wall = (minutes: number) =>
    new Date(BASE_MS + Math.floor(micros / 1000) + minutes * 60_000).toISOString().slice(0, 19);
  const frac = String(micros % 1_000_000).padStart(6, "0");
  const offset = (sep: string) => {
    const a = Math.abs(offsetMinutes);
    return (offsetMinutes < 0 ? "-" : "+") + String(Math.floor(a / 60)).padStart(2, "0") + sep +
      String(a % 60).padStart(2, "0");
  };
  switch (style) {
    case 0:
      return `${wall(0)}.${frac}Z`;
    case 1:
      return `${wall(0)}.${frac}000Z`;
    case 2:
      return micros % 1000 === 0 ? `${wall(0)}.${frac.slice(0, 3)}Z` : `${wall(0)},${frac}Z`;
    case 3:
      return micros % 1_000_000 === 0 ? `${wall(0)}Z` : `${wall(0)}.${frac}z`;
    case 4:
      return `${wall(offsetMinutes)}.${frac}${offset(":")}`;
    case 5:
      return `${wall(offsetMinutes).replace("T", " ")},${frac}${offset("")}`;
    default:
      return micros % 1_000_000 === 0
        ? `${wall(offsetMinutes)}${offset(":")}`
        : `${wall(0)}.${frac}Z`;
  }
}

/** Few distinct instants (ties are the interesting case), each in several spellings. */
const stampArb: fc.Arbitrary<Stamp> = fc.tuple(
  fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, 1, 1000, 1_000_000, 60_000_000) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 86_400_000_000 }) },
  ),
  fc.integer({ min: 0, max: 6 }),
  fc.constantFrom(0, 120, -300, 330, -720, 59),
).map(([micros, style, offset]) => ({ text: spell(micros, style, offset), micros }));

const CLIENTS = ["client-a", "client-b", "b", "aaaaaaaa", "Z"] as const;
const RECORDS = ["r1", "r2"] as const;
/** Includes names that are also properties of every object. */
const FIELDS = ["title", "done", "deletedAt", "n", "__proto__", "constructor", "toString", "v"];

const valueArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(null, true, false, 0, 1, "x", "y", [], {}, { a: 1 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
);

/** One write the oracle expects a change to make. */
interface ExpectedWrite {
  record: string;
  field: string;
  value: unknown;
  stamp: Stamp;
  clientId: string;
}

/** A change as a client pushes it (after a JSON round trip, as the server parses it). */
interface Step {
  change: Change;
  clientId: string;
  receivedAt: Stamp;
  writes: ExpectedWrite[];
}

const entriesArb = (min: number) =>
  fc.array(fc.tuple(fc.constantFrom(...FIELDS), valueArb), { minLength: min, maxLength: 4 })
    .map((entries) => [...new Map(entries)]);

const stepArb: fc.Arbitrary<Step> = fc.record({
  record: fc.constantFrom(...RECORDS),
  clientId: fc.constantFrom(...CLIENTS),
  receivedAt: stampArb,
  op: fc.constantFrom("insert", "update", "delete"),
  entries: entriesArb(0),
  stamps: fc.array(stampArb, { minLength: 4, maxLength: 4 }),
  // insert: which of updatedAt / createdAt carry a time; delete: soft or hard
  variant: fc.integer({ min: 0, max: 3 }),
}).map(({ record, clientId, receivedAt, op, entries, stamps, variant }) => {
  const writes: ExpectedWrite[] = [];
  const write = (field: string, value: unknown, stamp: Stamp) =>
    writes.push({ record, field, value, stamp, clientId });
  let change: Change;
  if (op === "update") {
    const fields = entries.map(([name, value], i) => {
      write(name, value, stamps[i]!);
      return [name, { value, updatedAt: stamps[i]!.text }] as const;
    });
    change = { schemaVersion: 1, table: "tasks", id: record, op, fields: jsonObject(fields) };
  } else if (op === "insert") {
    const data = new Map<string, unknown>(entries.filter(([k]) => k !== "deletedAt"));
    data.delete("updatedAt");
    data.delete("createdAt");
    // variant 0: updatedAt; 1: updatedAt null, createdAt; 2: createdAt not a time; 3: neither
    const [updated, created] = stamps;
    if (variant === 0) data.set("updatedAt", updated!.text);
    if (variant === 1) data.set("updatedAt", null);
    if (variant <= 1) data.set("createdAt", created!.text);
    if (variant === 2) data.set("createdAt", 17);
    const at = variant === 0 ? updated! : variant === 1 ? created! : receivedAt;
    for (const [name, value] of data) write(name, value, at);
    change = { schemaVersion: 1, table: "tasks", id: record, op, data: jsonObject([...data]) };
  } else {
    change = { schemaVersion: 1, table: "tasks", id: record, op };
    const at = variant < 2 ? stamps[0]! : receivedAt;
    if (variant < 2) change.deletedAt = at.text;
    write("deletedAt", at.text, at);
  }
  // What the server works on: the change as JSON.parse returns it.
  return { change: JSON.parse(JSON.stringify(change)), clientId, receivedAt, writes };
});

/** An object with exactly these own properties, whatever their names (`__proto__` included). */
function jsonObject(entries: readonly (readonly [string, unknown])[]): Record<string, never> {
  return JSON.parse(
    "{" + entries.map(([k, v]) => JSON.stringify(k) + ":" + JSON.stringify(v)).join(",") + "}",
  );
}

const stepsArb = fc.array(stepArb, { minLength: 1, maxLength: 12 });

type States = Map<string, RecordState>;

function mergeAll(steps: readonly Step[], states: States = new Map()): States {
  for (const { change, clientId, receivedAt } of steps) {
    const result = mergeChange(states.get(change.id), change, {
      clientId,
      receivedAt: receivedAt.text,
    });
    states.set(change.id, result.state);
  }
  return states;
}

/** A record's state as the store saves it (jsonb): own fields, canonical JSON. */
function persisted(state: RecordState | undefined): string {
  return canonicalJson(Object.fromEntries(ownFields(state)));
}

function ownFields(state: RecordState | undefined): [string, FieldState][] {
  return state === undefined ? [] : Object.entries(state);
}

function fieldOf(state: RecordState | undefined, field: string): FieldState | undefined {
  return state !== undefined && Object.hasOwn(state, field) ? state[field] : undefined;
}

const asWrite = (w: ExpectedWrite): FieldState => ({ v: w.value, t: w.stamp.text, c: w.clientId });

Deno.test("mergeChange() converges to one state whatever the order of the same changes", () => {
  fc.assert(
    fc.property(
      stepsArb.chain((steps) =>
        fc.tuple(fc.constant(steps), fc.shuffledSubarray(steps, { minLength: steps.length }))
      ),
      ([steps, shuffled]) => {
        const a = mergeAll(steps), b = mergeAll(shuffled);
        for (const record of RECORDS) {
          assert.equal(persisted(a.get(record)), persisted(b.get(record)), record);
        }
      },
    ),
    PARAMS,
  );
});

Deno.test("mergeChange() keeps, per field, the write with the latest instant, then greatest client", () => {
  fc.assert(
    fc.property(stepsArb, (steps) => {
      const states = mergeAll(steps);
      const writes = steps.flatMap((s) => s.writes);
      for (const record of RECORDS) {
        const state = states.get(record);
        const fields = new Set(writes.filter((w) => w.record === record).map((w) => w.field));
        assert.deepEqual(
          ownFields(state).map(([f]) => f).sort(),
          [...fields].sort(),
          `${record}: the state holds exactly the fields written`,
        );
        for (const field of fields) {
          const candidates = writes.filter((w) => w.record === record && w.field === field);
          const latest = Math.max(...candidates.map((w) => w.stamp.micros));
          const atLatest = candidates.filter((w) => w.stamp.micros === latest);
          const client = atLatest.map((w) => w.clientId).sort().at(-1)!;
          const best = atLatest.filter((w) => w.clientId === client).map(asWrite)
            .reduce((x, y) => compareWrites(x, y) >= 0 ? x : y);
          const winner = fieldOf(state, field);
          assert.ok(winner, `${record}.${field} is in the state`);
          assert.equal(
            winner.c,
            client,
            `${record}.${field}: the greatest client at the latest instant`,
          );
          assert.ok(
            atLatest.some((w) => w.stamp.text === winner.t),
            `${record}.${field}: written at the latest instant`,
          );
          assert.equal(canonicalJson(winner), canonicalJson(best), `${record}.${field}`);
        }
      }
    }),
    PARAMS,
  );
});

Deno.test("mergeChange() changes nothing when a change is merged again", () => {
  fc.assert(
    fc.property(stepsArb, fc.nat(), (steps, pick) => {
      const states = mergeAll(steps);
      const step = steps[pick % steps.length]!;
      const before = states.get(step.change.id);
      const snapshot = persisted(before);
      const again = mergeChange(before, step.change, {
        clientId: step.clientId,
        receivedAt: step.receivedAt.text,
      });
      assert.equal(again.changed, false);
      assert.equal(persisted(again.state), snapshot);
      assert.equal(persisted(before), snapshot, "the input state is not modified");
      // A conflict for exactly those of its writes that another write beat.
      const lost = step.writes.filter((w) =>
        canonicalJson(fieldOf(before, w.field)) !== canonicalJson(asWrite(w))
      );
      assert.deepEqual(
        again.conflicts.map((c) => [c.field, canonicalJson(c.clientValue), c.clientTimestamp]),
        lost.map((w) => [w.field, canonicalJson(w.value), w.stamp.text]),
      );
    }),
    PARAMS,
  );
});

Deno.test("mergeChange() is idempotent over a whole replay", () => {
  fc.assert(
    fc.property(stepsArb, (steps) => {
      const once = mergeAll(steps);
      const snapshot = RECORDS.map((r) => persisted(once.get(r)));
      for (const { change, clientId, receivedAt } of steps) {
        const result = mergeChange(once.get(change.id), change, {
          clientId,
          receivedAt: receivedAt.text,
        });
        assert.equal(result.changed, false);
        once.set(change.id, result.state);
      }
      assert.deepEqual(RECORDS.map((r) => persisted(once.get(r))), snapshot);
    }),
    PARAMS,
  );
});

Deno.test("compareWrites() is a total order: antisymmetric, transitive, 0 only for one write", () => {
  const writeArb = fc.record({
    v: valueArb.map((v) => JSON.parse(JSON.stringify(v))),
    t: stampArb.map((s) => s.text),
    c: fc.constantFrom(...CLIENTS),
  });
  fc.assert(
    // b and c often share parts with a, so that every tie-break is reached.
    fc.property(writeArb, writeArb, writeArb, fc.nat(63), (a, x, y, mix) => {
      const b = { v: mix & 1 ? a.v : x.v, t: mix & 2 ? a.t : x.t, c: mix & 4 ? a.c : x.c };
      const c = { v: mix & 8 ? b.v : y.v, t: mix & 16 ? b.t : y.t, c: mix & 32 ? b.c : y.c };
      assert.equal(Math.sign(compareWrites(a, b)) + Math.sign(compareWrites(b, a)), 0);
      assert.equal(compareWrites(a, a), 0);
      if (compareWrites(a, b) === 0) assert.equal(canonicalJson(a), canonicalJson(b));
      if (compareWrites(a, b) > 0 && compareWrites(b, c) > 0) assert.ok(compareWrites(a, c) > 0);
    }),
    PARAMS,
  );
});
