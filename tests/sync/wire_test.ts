import assert from "node:assert/strict";
import { type Change, parsePush } from "../../src/sync/change.ts";
import { type LogRow, toStored, toWire } from "../../src/sync/wire.ts";

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
