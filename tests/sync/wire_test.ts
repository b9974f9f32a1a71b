import assert from "node:assert/strict";
import { type Change, parsePush } from "../../src/sync/change.ts";
import fc from "fast-check";
import {
  type LogRow,
  type LogRowText,
  toStored,
  toWire,
  wireJson,
  withChanges,
} from "../../src/sync/wire.ts";
import { fuzzParameters } from "../helpers/fuzz.ts";

const EVENT_ID = "0b6a3c2e-9d4f-4a57-8f0e-2c1d3b4a5e6f";
const CREATED_AT = "2024-01-01T10:06:15.123456Z";

/** The log row a change becomes, as the store would read it back. */
function row(change: Change, overrides: Partial<LogRow> = {}): LogRow {
  const stored = toStored(change);
  return {
    eventId: EVENT_ID,
    schemaVersion: change.schemaVersion,
    appId: "todo",
    table: change.table,
    id: change.id,
    op: change.op,
    data: stored.data,
    fieldTimestamps: stored.fieldTimestamps,
    clientId: "client-a",
    createdAt: CREATED_AT,
    ...overrides,
  };
}

/** What the store keeps survives JSON (jsonb) storage. */
function throughJson(r: LogRow): LogRow {
  return JSON.parse(JSON.stringify(r));
}

Deno.test("toStored() keeps an insert's data whole", () => {
  const data = {
    id: "t1",
    title: "Buy milk",
    nested: { a: [1, null] },
    updatedAt: "2024-01-01T10:05:00Z",
  };
  const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "insert", data };
  assert.deepEqual(toStored(change), { data, fieldTimestamps: {} });
});

Deno.test("toStored() stores an insert without data as an empty object", () => {
  const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "insert" };
  assert.deepEqual(toStored(change), { data: {}, fieldTimestamps: {} });
});

Deno.test("toStored() splits an update into data and fieldTimestamps", () => {
  const change: Change = {
    schemaVersion: 1,
    table: "tasks",
    id: "t1",
    op: "update",
    fields: {
      title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" },
      completed: { value: true, updatedAt: "2024-01-01T12:06:00+02:00" },
      dueDate: { value: null, updatedAt: "2024-01-01" },
    },
  };
  assert.deepEqual(toStored(change), {
    data: { title: "Buy eggs", completed: true, dueDate: null },
    fieldTimestamps: {
      title: "2024-01-01T10:05:30Z",
      completed: "2024-01-01T12:06:00+02:00",
      dueDate: "2024-01-01",
    },
  });
});

Deno.test("toStored() keeps only deletedAt of a delete", async (t) => {
  await t.step("soft delete", () => {
    const change: Change = {
      schemaVersion: 1,
      table: "tasks",
      id: "t1",
      op: "delete",
      deletedAt: "2024-01-01T10:07:00.000Z",
    };
    assert.deepEqual(toStored(change), {
      data: { deletedAt: "2024-01-01T10:07:00.000Z" },
      fieldTimestamps: {},
    });
  });
  await t.step("hard delete", () => {
    const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "delete" };
    assert.deepEqual(toStored(change), { data: null, fieldTimestamps: {} });
  });
});

Deno.test("toWire() of toStored() gives the change back", async (t) => {
  const cases: [string, Change][] = [
    ["insert", {
      schemaVersion: 1,
      table: "tasks",
      id: "t1",
      op: "insert",
      data: { id: "t1", title: "Buy milk", tags: ["a"], updatedAt: "2024-01-01T12:05:00,5+0200" },
    }],
    ["update", {
      schemaVersion: 1,
      table: "tasks",
      id: "t1",
      op: "update",
      fields: {
        title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" },
        meta: { value: { b: 1, a: [null] }, updatedAt: "2024-01-01T10:05:30.123456789Z" },
        cleared: { value: null, updatedAt: "2024-01-01 10:05z" },
      },
    }],
    ["soft delete", {
      schemaVersion: 1,
      table: "tasks",
      id: "t1",
      op: "delete",
      deletedAt: "2024-01-01T11:07:00+01:00",
    }],
    ["hard delete", { schemaVersion: 1, table: "tasks", id: "t1", op: "delete" }],
  ];
  for (const [name, change] of cases) {
    await t.step(name, () => {
      assert.deepEqual(toWire(row(change)), { eventId: EVENT_ID, ...change });
      assert.deepEqual(toWire(throughJson(row(change))), { eventId: EVENT_ID, ...change });
    });
  }
});

Deno.test("toWire() of a parsed push gives its timestamps back byte for byte", () => {
  const push = parsePush({
    clientId: "client-a",
    changes: [
      { op: "insert", table: "tasks", id: "a", data: { updatedAt: "2024-01-01T12:05:00,5+0200" } },
      {
        op: "update",
        table: "tasks",
        id: "a",
        fields: { title: { value: "x", updatedAt: "2024-01-01t10:05:00.1234567891+05" } },
      },
      { op: "delete", table: "tasks", id: "a", data: { deletedAt: "2024-01-01T04:35:00-0530" } },
    ],
  }, {});
  const [insert, update, del] = push.changes.map((c) => toWire(throughJson(row(c))));
  assert.equal(insert?.data?.updatedAt, "2024-01-01T12:05:00,5+0200");
  assert.equal(update?.fields?.title?.updatedAt, "2024-01-01t10:05:00.1234567891+05");
  assert.equal(del?.deletedAt, "2024-01-01T04:35:00-0530");
});

Deno.test("toWire() always sends eventId and schemaVersion", async (t) => {
  const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "insert", data: {} };
  await t.step("eventId comes from the row", () => {
    assert.equal(
      toWire(row(change, { eventId: "ffffffff-0000-4000-8000-000000000000" })).eventId,
      "ffffffff-0000-4000-8000-000000000000",
    );
  });
  for (
    const [name, stored, sent] of [
      ["legacy 0 goes out as 1", 0, 1],
      ["negative goes out as 1", -2, 1],
      ["1 stays 1", 1, 1],
      ["a newer version is kept", 3, 3],
    ] as const
  ) {
    await t.step(name, () => {
      assert.equal(toWire(row(change, { schemaVersion: stored })).schemaVersion, sent);
    });
  }
});

Deno.test("toWire() always sends an insert's data", () => {
  const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "insert", data: {} };
  const wire = toWire(row(change, { data: null }));
  assert.deepEqual(wire.data, {});
  assert.equal("fields" in wire, false);
  assert.equal("deletedAt" in wire, false);
});

Deno.test("toWire() falls back to createdAt for an update field without a timestamp", async (t) => {
  const change: Change = {
    schemaVersion: 1,
    table: "tasks",
    id: "t1",
    op: "update",
    fields: {
      title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" },
      completed: { value: true, updatedAt: "2024-01-01T10:06:00Z" },
    },
  };
  await t.step("one field missing from fieldTimestamps", () => {
    const wire = toWire(row(change, { fieldTimestamps: { title: "2024-01-01T10:05:30Z" } }));
    assert.deepEqual(wire.fields, {
      title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" },
      completed: { value: true, updatedAt: CREATED_AT },
    });
  });
  await t.step("fieldTimestamps null (a legacy row)", () => {
    const wire = toWire(row(change, { fieldTimestamps: null }));
    assert.deepEqual(wire.fields, {
      title: { value: "Buy eggs", updatedAt: CREATED_AT },
      completed: { value: true, updatedAt: CREATED_AT },
    });
  });
  await t.step("a timestamp without a value sends no field", () => {
    const wire = toWire(row(change, {
      data: { title: "Buy eggs" },
      fieldTimestamps: { title: "2024-01-01T10:05:30Z", completed: "2024-01-01T10:06:00Z" },
    }));
    assert.deepEqual(wire.fields, {
      title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" },
    });
  });
  await t.step("an update row without data has empty fields", () => {
    const wire = toWire(row(change, { data: null, fieldTimestamps: null }));
    assert.deepEqual(wire.fields, {});
    assert.equal("data" in wire, false);
  });
});

Deno.test("toWire() sends a delete's deletedAt only when one was stored", async (t) => {
  const change: Change = { schemaVersion: 1, table: "tasks", id: "t1", op: "delete" };
  await t.step("soft", () => {
    const wire = toWire(row(change, { data: { deletedAt: "2024-01-01T10:07:00Z", title: "x" } }));
    assert.deepEqual(wire, {
      eventId: EVENT_ID,
      schemaVersion: 1,
      table: "tasks",
      id: "t1",
      op: "delete",
      deletedAt: "2024-01-01T10:07:00Z",
    });
  });
  await t.step("hard (data null)", () => {
    const wire = toWire(row(change, { data: null }));
    assert.equal("deletedAt" in wire, false);
    assert.equal("data" in wire, false);
  });
  await t.step("a non-string deletedAt is not sent", () => {
    assert.equal("deletedAt" in toWire(row(change, { data: { deletedAt: 17 } })), false);
  });
});

/** A row as the page read gets it: jsonb columns as text, spaced the way PostgreSQL prints. */
function asText(r: LogRow): LogRowText {
  const text = (v: unknown) => v === null ? null : pgSpacing(JSON.stringify(v));
  return { ...r, data: text(r.data), fieldTimestamps: text(r.fieldTimestamps) };
}

/** PostgreSQL's jsonb output puts a space after `:` and `,` between members (not in strings). */
function pgSpacing(json: string): string {
  let out = "", inString = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i]!;
    out += ch;
    if (inString) {
      if (ch === "\\") out += json[++i];
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === ":" || ch === ",") out += " ";
  }
  return out;
}

Deno.test("wireJson() is JSON.stringify(toWire()) for a row read as text", async (t) => {
  const cases: [string, LogRow][] = [
    [
      "insert",
      row({
        schemaVersion: 1,
        table: "tasks",
        id: "t1",
        op: "insert",
        data: {
          id: "t1",
          title: 'say "hi", then: go\\n',
          tags: ["a", { b: [null, 1.5, -0.25e-3] }],
          updatedAt: "2024-01-01T12:05:00,5+0200",
        },
      }),
    ],
    ["insert with empty data", row({ schemaVersion: 1, table: "t", id: "i", op: "insert" })],
    [
      "insert, data NULL",
      row({ schemaVersion: 1, table: "t", id: "i", op: "insert" }, { data: null }),
    ],
    [
      "insert, legacy schema version 0",
      row({ schemaVersion: 1, table: "t", id: "i", op: "insert" }, { schemaVersion: 0 }),
    ],
    [
      "update",
      row({
        schemaVersion: 1,
        table: "tasks",
        id: "t1",
        op: "update",
        fields: {
          title: { value: "x, y", updatedAt: "2024-01-01T10:05:30Z" },
          meta: { value: { a: [1] }, updatedAt: "2024-01-01t10:05:30.1234567891+05" },
        },
      }),
    ],
    [
      "update, a field without a timestamp",
      row({
        schemaVersion: 1,
        table: "t",
        id: "i",
        op: "update",
        fields: {
          a: { value: 1, updatedAt: "2024-01-01T10:05:30Z" },
        },
      }, { fieldTimestamps: null }),
    ],
    [
      "soft delete",
      row({
        schemaVersion: 1,
        table: "t",
        id: "i",
        op: "delete",
        deletedAt: "2024-01-01T04:35:00-0530",
      }),
    ],
    ["hard delete", row({ schemaVersion: 1, table: "t", id: "i", op: "delete" })],
    [
      "names that need escaping",
      row({
        schemaVersion: 1,
        table: 'ta"b\u2028le',
        id: "é/\\\u0001",
        op: "insert",
        data: { 'k"': 1 },
      }),
    ],
  ];
  for (const [name, r] of cases) {
    await t.step(name, () => {
      const text = wireJson(asText(r));
      assert.deepEqual(JSON.parse(text), toWire(r));
      assert.ok(!text.includes("\n"), "one line");
    });
  }
  await t.step("an insert's data text goes out as it was stored", () => {
    const r = asText(row({ schemaVersion: 1, table: "t", id: "i", op: "insert", data: { n: 1 } }));
    // 12345678901234567890 and 1.50 would not survive JSON.parse and JSON.stringify unchanged.
    const stored = '{"n": 12345678901234567890, "price": 1.50}';
    assert.ok(wireJson({ ...r, data: stored }).endsWith(`,"data":${stored}}`));
  });
  await t.step("a legacy insert whose data is JSON null sends empty data", () => {
    const r = asText(row({ schemaVersion: 1, table: "t", id: "i", op: "insert" }));
    assert.deepEqual(JSON.parse(wireJson({ ...r, data: "null" })).data, {});
  });
});

Deno.test("wireJson() agrees with toWire() on generated rows", () => {
  const json: fc.Arbitrary<unknown> = fc.jsonValue();
  const text = fc.string({ unit: "grapheme" });
  const row = fc.record({
    eventId: fc.uuid(),
    schemaVersion: fc.integer({ min: -3, max: 5 }),
    table: text,
    id: text,
    op: fc.constantFrom("insert" as const, "update" as const, "delete" as const),
    data: fc.option(fc.dictionary(text, json), { nil: null }),
    fieldTimestamps: fc.option(fc.dictionary(text, text), { nil: null }),
    createdAt: fc.constant(CREATED_AT),
  });
  fc.assert(
    fc.property(row, (r) => {
      const full = throughJson({ ...r, appId: "todo", clientId: "c" });
      assert.deepEqual(JSON.parse(wireJson(asText(full))), toWire(full));
    }),
    fuzzParameters(500),
  );
});

Deno.test("withChanges() splices change texts into one JSON object", async (t) => {
  const changes = [{ id: "a", n: [1] }, { id: 'b"', s: "x,y" }].map((c) => JSON.stringify(c));
  await t.step("the changes first, then the other members", () => {
    const text = withChanges("serverChanges", changes, { syncedUntil: "s", hasMore: true });
    assert.equal(
      text,
      JSON.stringify({
        serverChanges: changes.map((c) => JSON.parse(c)),
        syncedUntil: "s",
        hasMore: true,
      }),
    );
  });
  await t.step("no changes", () => {
    assert.equal(withChanges("changes", [], { table: "t" }), '{"changes":[],"table":"t"}');
  });
  await t.step("no other members", () => {
    assert.equal(withChanges('a"b', changes.slice(0, 1), {}), '{"a\\"b":[{"id":"a","n":[1]}]}');
  });
});

Deno.test("toWire() does not take an update time from Object.prototype", () => {
  const change: Change = {
    schemaVersion: 1,
    table: "t",
    id: "i",
    op: "update",
    fields: { toString: { value: 1, updatedAt: "2024-01-01T10:05:30Z" } },
  };
  const wire = toWire(row(change, { fieldTimestamps: {} }));
  assert.deepEqual(wire.fields, { toString: { value: 1, updatedAt: CREATED_AT } });
});
