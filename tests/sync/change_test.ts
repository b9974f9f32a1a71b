import assert from "node:assert/strict";
import {
  DEFAULT_LIMITS,
  type Limits,
  MAX_SCHEMA_VERSION,
  parsePush,
  parseSince,
} from "../../src/sync/change.ts";
import { SyncError } from "../../src/sync/errors.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";

const SINCE = "2024-01-01T10:00:00.000000Z";
const UUID = "0b6a3c2e-9d4f-4a57-8f0e-2c1d3b4a5e6f";

const insert = () => ({
  op: "insert",
  table: "tasks",
  id: "t1",
  data: { id: "t1", title: "Buy milk", completed: false, updatedAt: "2024-01-01T10:05:00Z" },
});
const update = () => ({
  op: "update",
  table: "tasks",
  id: "t1",
  fields: { title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30Z" } },
});
const softDelete = () => ({
  op: "delete",
  table: "tasks",
  id: "t1",
  deletedAt: "2024-01-01T10:07:00.000Z",
});

function body(changes: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { clientId: "client-a", since: SINCE, schemaVersion: 1, changes, ...extra };
}

/** The `SyncError` that `fn` throws; fails the test when it throws nothing or something else. */
function refusal(fn: () => unknown): SyncError {
  try {
    fn();
  } catch (e) {
    if (e instanceof SyncError) return e;
    throw e;
  }
  assert.fail("expected a SyncError, nothing was thrown");
}

function assertRefused(
  fn: () => unknown,
  expected: { status: number; code: string; message?: string | RegExp },
): SyncError {
  const e = refusal(fn);
  assert.equal(e.status, expected.status, e.message);
  assert.equal(e.code, expected.code, e.message);
  if (typeof expected.message === "string") assert.equal(e.message, expected.message);
  else if (expected.message) assert.match(e.message, expected.message);
  return e;
}

/**
 * Puts `bad` at index 3 of an otherwise valid batch and checks the 400 names that index, then
 * the given detail.
 */
function assertChangeRefused(bad: unknown, detail: string | RegExp, limits?: Limits): void {
  const changes = [insert(), update(), softDelete(), bad, update()];
  const e = assertRefused(() => parsePush(body(changes), limits ? { limits } : {}), {
    status: 400,
    code: "invalid_change",
    message: /^Cannot apply change 3: /,
  });
  const rest = e.message.slice("Cannot apply change 3: ".length);
  if (typeof detail === "string") assert.equal(rest, detail);
  else assert.match(rest, detail);
}

function assertChangeAccepted(change: unknown, limits?: Limits) {
  const result = parsePush(body([change]), limits ? { limits } : {});
  assert.equal(result.changes.length, 1);
  return result.changes[0]!;
}

/** `levels` nested objects around a string leaf. */
function nest(levels: number): unknown {
  let value: unknown = "leaf";
  for (let i = 0; i < levels; i++) value = { k: value };
  return value;
}

function nestArrays(levels: number): unknown {
  let value: unknown = "leaf";
  for (let i = 0; i < levels; i++) value = [value];
  return value;
}

Deno.test("parsePush() returns a valid push with its changes in order", () => {
  const result = parsePush(body([insert(), update(), softDelete()]), {});
  assert.deepEqual(result, {
    clientId: "client-a",
    since: SINCE,
    schemaVersion: 1,
    changes: [
      { schemaVersion: 1, ...insert() },
      { schemaVersion: 1, ...update() },
      { schemaVersion: 1, ...softDelete() },
    ],
  });
});

Deno.test("parsePush() accepts an empty changes array", () => {
  assert.deepEqual(parsePush(body([]), {}).changes, []);
});

Deno.test("parsePush() refuses a body that is not a JSON object", async (t) => {
  for (
    const [name, value] of [
      ["null", null],
      ["undefined", undefined],
      ["an array", [insert()]],
      ["a string", "{}"],
      ["a number", 42],
      ["a boolean", true],
    ] as const
  ) {
    await t.step(name, () => {
      assertRefused(() => parsePush(value, { clientIdHeader: "client-a" }), {
        status: 400,
        code: "invalid_body",
        message: "Push body must be a JSON object",
      });
    });
  }
});

Deno.test("parsePush() takes the client id from the header, else the body", async (t) => {
  await t.step("the header wins over body clientId", () => {
    const result = parsePush(body([]), { clientIdHeader: "header-client" });
    assert.equal(result.clientId, "header-client");
  });
  await t.step("the header alone is enough", () => {
    const b = body([]);
    delete b.clientId;
    assert.equal(parsePush(b, { clientIdHeader: "header-client" }).clientId, "header-client");
  });
  await t.step("body clientId when there is no header", () => {
    assert.equal(parsePush(body([]), {}).clientId, "client-a");
    assert.equal(parsePush(body([]), { clientIdHeader: undefined }).clientId, "client-a");
  });
  await t.step("body clientId when the header is empty", () => {
    assert.equal(parsePush(body([]), { clientIdHeader: "" }).clientId, "client-a");
  });
});

Deno.test("parsePush() refuses a push without a client id", async (t) => {
  for (
    const [name, clientId] of [
      ["missing", undefined],
      ["null", null],
      ["empty", ""],
      ["a number", 42],
      ["an object", { id: "a" }],
    ] as const
  ) {
    await t.step(name, () => {
      const b = body([]);
      if (clientId === undefined) delete b.clientId;
      else b.clientId = clientId;
      assertRefused(() => parsePush(b, {}), {
        status: 400,
        code: "missing_client_id",
        message: "A client id is required: X-Client-Id header or body clientId",
      });
    });
  }
  await t.step("an empty header and no body clientId", () => {
    const b = body([]);
    delete b.clientId;
    assertRefused(() => parsePush(b, { clientIdHeader: "" }), {
      status: 400,
      code: "missing_client_id",
    });
  });
});

Deno.test("parsePush() refuses a client id that cannot be stored", async (t) => {
  await t.step("longer than maxIdLength", () => {
    assertRefused(() => parsePush(body([]), { clientIdHeader: "c".repeat(257) }), {
      status: 400,
      code: "invalid_client_id",
      message: "client id is longer than 256 characters",
    });
    assert.equal(parsePush(body([]), { clientIdHeader: "c".repeat(256) }).clientId.length, 256);
  });
  await t.step("with a NUL", () => {
    assertRefused(() => parsePush(body([], { clientId: "a\u0000b" }), {}), {
      status: 400,
      code: "invalid_client_id",
      message: "client id contains a NUL or a lone surrogate",
    });
  });
  await t.step("with a lone surrogate", () => {
    assertRefused(() => parsePush(body([]), { clientIdHeader: "a\ud800" }), {
      status: 400,
      code: "invalid_client_id",
      message: "client id contains a NUL or a lone surrogate",
    });
  });
});

Deno.test("parsePush() parses since into a canonical cursor", async (t) => {
  await t.step("missing since is the epoch", () => {
    const b = body([]);
    delete b.since;
    assert.equal(parsePush(b, {}).since, EPOCH_CURSOR);
  });
  await t.step("null since is the epoch", () => {
    assert.equal(parsePush(body([], { since: null }), {}).since, EPOCH_CURSOR);
  });
  await t.step("a cursor comes back as is", () => {
    const since = "2024-01-01T10:06:15.123456Z";
    assert.equal(parsePush(body([], { since }), {}).since, since);
  });
  await t.step("an offset time becomes UTC", () => {
    const since = "2024-01-01T12:06:15.5+02:00";
    assert.equal(parsePush(body([], { since }), {}).since, "2024-01-01T10:06:15.500000Z");
  });
  await t.step("nanoseconds are truncated to microseconds", () => {
    const since = "2024-01-01T10:06:15.123456789Z";
    assert.equal(parsePush(body([], { since }), {}).since, "2024-01-01T10:06:15.123456Z");
  });
});

Deno.test("parsePush() refuses a since that is not an ISO-8601 time", async (t) => {
  for (
    const [name, since, shown] of [
      ["garbage", "yesterday", '"yesterday"'],
      ["the empty string", "", '""'],
      ["a number", 0, "0"],
      ["epoch milliseconds", 1704103500000, "1704103500000"],
      ["an impossible date", "2024-02-30T00:00:00Z", '"2024-02-30T00:00:00Z"'],
      ["an object", {}, "{}"],
      ["false", false, "false"],
    ] as const
  ) {
    await t.step(name, () => {
      assertRefused(() => parsePush(body([insert()], { since }), {}), {
        status: 400,
        code: "invalid_since",
        message: `since is not an ISO-8601 time: ${shown}`,
      });
    });
  }
});

Deno.test("parseSince() returns canonical cursors and refuses the rest", () => {
  assert.equal(parseSince("2024-01-01"), "2024-01-01T00:00:00.000000Z");
  assert.equal(refusal(() => parseSince(undefined)).code, "invalid_since");
  assert.equal(refusal(() => parseSince(null)).status, 400);
});

Deno.test("parsePush() reads the push schemaVersion", async (t) => {
  for (
    const [name, version, expected] of [
      ["missing means 1", undefined, 1],
      ["null means 1", null, 1],
      ["0 means 1", 0, 1],
      ["negative means 1", -3, 1],
      ["1 is 1", 1, 1],
    ] as const
  ) {
    await t.step(name, () => {
      const b = body([insert()]);
      if (version === undefined) delete b.schemaVersion;
      else b.schemaVersion = version;
      const result = parsePush(b, {});
      assert.equal(result.schemaVersion, expected);
      assert.equal(result.changes[0]!.schemaVersion, expected);
    });
  }
  await t.step("newer than supported is 400 unsupported_schema_version", () => {
    assert.equal(MAX_SCHEMA_VERSION, 1);
    assertRefused(() => parsePush(body([], { schemaVersion: 2 }), {}), {
      status: 400,
      code: "unsupported_schema_version",
      message: "Push schemaVersion 2 is newer than this server supports (1)",
    });
  });
  for (
    const [name, version] of [
      ["a fraction", 1.5],
      ["a string", "1"],
      ["a boolean", true],
      ["an array", [1]],
    ] as const
  ) {
    await t.step(`${name} is 400 invalid_schema_version`, () => {
      assertRefused(() => parsePush(body([], { schemaVersion: version }), {}), {
        status: 400,
        code: "invalid_schema_version",
        message: "Push schemaVersion must be an integer",
      });
    });
  }
});

Deno.test("parsePush() reads each change's schemaVersion", async (t) => {
  await t.step("missing, null, 0 or negative take the push's", () => {
    const changes = [undefined, null, 0, -1].map((v) => ({ ...update(), schemaVersion: v }));
    const result = parsePush(body(changes), {});
    assert.deepEqual(result.changes.map((c) => c.schemaVersion), [1, 1, 1, 1]);
  });
  await t.step("1 is kept", () => {
    assert.equal(assertChangeAccepted({ ...update(), schemaVersion: 1 }).schemaVersion, 1);
  });
  await t.step("newer than supported is refused, naming the index", () => {
    assertChangeRefused(
      { ...update(), schemaVersion: 2 },
      "change schemaVersion 2 is newer than this server supports (1)",
    );
  });
  await t.step("not an integer is refused, naming the index", () => {
    assertChangeRefused(
      { ...update(), schemaVersion: "1" },
      "change schemaVersion must be an integer",
    );
  });
});

Deno.test("parsePush() refuses changes that are not an array", async (t) => {
  for (
    const [name, changes] of [
      ["missing", undefined],
      ["null", null],
      ["an object", { 0: insert() }],
      ["a string", "[]"],
    ] as const
  ) {
    await t.step(name, () => {
      const b = body(changes);
      if (changes === undefined) delete b.changes;
      assertRefused(() => parsePush(b, {}), {
        status: 400,
        code: "invalid_body",
        message: "Push body needs a changes array",
      });
    });
  }
});

Deno.test("parsePush() refuses more changes than the limit with 413", async (t) => {
  await t.step("default limit of 1000", () => {
    assert.equal(DEFAULT_LIMITS.maxChanges, 1000);
    assert.equal(parsePush(body(Array.from({ length: 1000 }, update)), {}).changes.length, 1000);
    assertRefused(() => parsePush(body(Array.from({ length: 1001 }, update)), {}), {
      status: 413,
      code: "too_many_changes",
      message: "Push has 1001 changes: at most 1000 are accepted per request",
    });
  });
  await t.step("configured limit", () => {
    const limits = { ...DEFAULT_LIMITS, maxChanges: 3 };
    assert.equal(parsePush(body([update(), update(), update()]), { limits }).changes.length, 3);
    assertRefused(() => parsePush(body([update(), update(), update(), update()]), { limits }), {
      status: 413,
      code: "too_many_changes",
      message: "Push has 4 changes: at most 3 are accepted per request",
    });
  });
  await t.step("the count is checked before the changes themselves", () => {
    const limits = { ...DEFAULT_LIMITS, maxChanges: 1 };
    assertRefused(() => parsePush(body(["bad", "bad"]), { limits }), {
      status: 413,
      code: "too_many_changes",
    });
  });
});

Deno.test("parsePush() names the index of the first bad change", async (t) => {
  await t.step("index 0", () => {
    assertRefused(() => parsePush(body([{ ...update(), op: "upsert" }]), {}), {
      status: 400,
      code: "invalid_change",
      message: 'Cannot apply change 0: op must be insert, update or delete, got "upsert"',
    });
  });
  await t.step("the first of two bad changes", () => {
    const changes = [update(), { ...update(), table: "" }, update(), { ...update(), op: "x" }];
    assertRefused(() => parsePush(body(changes), {}), {
      status: 400,
      code: "invalid_change",
      message: "Cannot apply change 1: table must be a non-empty string",
    });
  });
  await t.step("a large index", () => {
    const changes = [...Array.from({ length: 57 }, update), null];
    assertRefused(() => parsePush(body(changes), {}), {
      status: 400,
      code: "invalid_change",
      message: "Cannot apply change 57: change is not an object",
    });
  });
});

Deno.test("parsePush() refuses a change that is not an object", async (t) => {
  for (
    const [name, value] of [["null", null], ["an array", [update()]], ["a string", "x"], [
      "a number",
      3,
    ]] as const
  ) {
    await t.step(name, () => assertChangeRefused(value, "change is not an object"));
  }
});

Deno.test("parsePush() refuses an op outside insert/update/delete", async (t) => {
  for (
    const [name, op, shown] of [
      ["upsert", "upsert", '"upsert"'],
      ["uppercase", "INSERT", '"INSERT"'],
      ["empty", "", '""'],
      ["a number", 1, "1"],
      ["null", null, "null"],
    ] as const
  ) {
    await t.step(name, () => {
      assertChangeRefused(
        { ...update(), op },
        `op must be insert, update or delete, got ${shown}`,
      );
    });
  }
  await t.step("missing", () => {
    const { op: _op, ...rest } = update();
    assertChangeRefused(rest, /^op must be insert, update or delete, got /);
  });
});

Deno.test("parsePush() refuses a bad table or id", async (t) => {
  for (const key of ["table", "id"] as const) {
    for (
      const [name, value] of [
        ["missing", undefined],
        ["null", null],
        ["empty", ""],
        ["a number", 7],
        ["an array", ["tasks"]],
      ] as const
    ) {
      await t.step(`${key} ${name}`, () => {
        const change: Record<string, unknown> = update();
        if (value === undefined) delete change[key];
        else change[key] = value;
        assertChangeRefused(change, `${key} must be a non-empty string`);
      });
    }
    await t.step(`${key} too long`, () => {
      assertChangeRefused(
        { ...update(), [key]: "x".repeat(257) },
        `${key} is longer than 256 characters`,
      );
    });
    await t.step(`${key} of exactly maxIdLength`, () => {
      const change = assertChangeAccepted({ ...update(), [key]: "x".repeat(256) });
      assert.equal(change[key], "x".repeat(256));
    });
    await t.step(`${key} length counts UTF-16 code units`, () => {
      assert.equal(assertChangeAccepted({ ...update(), [key]: "😀".repeat(128) })[key].length, 256);
      assertChangeRefused(
        { ...update(), [key]: "😀".repeat(128) + "x" },
        `${key} is longer than 256 characters`,
      );
    });
    await t.step(`${key} against a configured maxIdLength`, () => {
      // The client id ("client-a") is 8 characters long.
      const limits = { ...DEFAULT_LIMITS, maxIdLength: 8 };
      assert.equal(
        assertChangeAccepted({ ...update(), [key]: "abcdefgh" }, limits)[key],
        "abcdefgh",
      );
      assertChangeRefused(
        { ...update(), [key]: "abcdefghi" },
        `${key} is longer than 8 characters`,
        limits,
      );
    });
    await t.step(`${key} with a NUL`, () => {
      assertChangeRefused(
        { ...update(), [key]: "t\u00001" },
        `${key} contains a NUL or a lone surrogate`,
      );
    });
    await t.step(`${key} with a lone surrogate`, () => {
      assertChangeRefused(
        { ...update(), [key]: "t\udc001" },
        `${key} contains a NUL or a lone surrogate`,
      );
    });
  }
});

Deno.test("parsePush() checks eventId", async (t) => {
  await t.step("a lowercase UUID is kept", () => {
    assert.equal(assertChangeAccepted({ ...update(), eventId: UUID }).eventId, UUID);
  });
  await t.step("an uppercase UUID is lowercased", () => {
    assert.equal(assertChangeAccepted({ ...update(), eventId: UUID.toUpperCase() }).eventId, UUID);
  });
  await t.step("missing or null means none", () => {
    assert.equal("eventId" in assertChangeAccepted(update()), false);
    assert.equal("eventId" in assertChangeAccepted({ ...update(), eventId: null }), false);
  });
  for (
    const [name, eventId, shown] of [
      ["not a UUID", "not-a-uuid", '"not-a-uuid"'],
      ["empty", "", '""'],
      ["with braces", `{${UUID}}`, `"{${UUID}}"`],
      ["without dashes", UUID.replaceAll("-", ""), `"${UUID.replaceAll("-", "")}"`],
      ["one digit short", UUID.slice(0, -1), `"${UUID.slice(0, -1)}"`],
      ["a non-hex digit", "g" + UUID.slice(1), `"g${UUID.slice(1)}"`],
      ["a number", 123, "123"],
    ] as const
  ) {
    await t.step(`refused when ${name}`, () => {
      assertChangeRefused({ ...update(), eventId }, `eventId must be a UUID, got ${shown}`);
    });
  }
});

Deno.test("parsePush() checks an insert's data", async (t) => {
  for (
    const [name, data] of [
      ["missing", undefined],
      ["null", null],
      ["an array", [{ title: "x" }]],
      ["a string", "{}"],
      ["a number", 1],
    ] as const
  ) {
    await t.step(`refused when data is ${name}`, () => {
      const change: Record<string, unknown> = insert();
      if (data === undefined) delete change.data;
      else change.data = data;
      assertChangeRefused(change, "insert needs a data object");
    });
  }
  for (const key of ["updatedAt", "deletedAt"]) {
    await t.step(`refused when data.${key} is unparseable`, () => {
      const change = insert();
      assertChangeRefused(
        { ...change, data: { ...change.data, [key]: "yesterday" } },
        `data.${key} is not an ISO-8601 time: "yesterday"`,
      );
    });
    await t.step(`refused when data.${key} is a number`, () => {
      const change = insert();
      assertChangeRefused(
        { ...change, data: { ...change.data, [key]: 1704103500000 } },
        `data.${key} is not an ISO-8601 time: 1704103500000`,
      );
    });
    await t.step(`accepted when data.${key} is null`, () => {
      const change = insert();
      const data = { ...change.data, [key]: null };
      assert.deepEqual(assertChangeAccepted({ ...change, data }).data, data);
    });
  }
  await t.step("an empty data object is accepted", () => {
    assert.deepEqual(assertChangeAccepted({ ...insert(), data: {} }).data, {});
  });
  await t.step("createdAt is not required to parse", () => {
    const data = { title: "x", createdAt: "not a time" };
    assert.deepEqual(assertChangeAccepted({ ...insert(), data }).data, data);
  });
  await t.step("fields and deletedAt sent with an insert are dropped", () => {
    const change = assertChangeAccepted({
      ...insert(),
      fields: update().fields,
      deletedAt: "2024-01-01T10:07:00Z",
    });
    assert.equal("fields" in change, false);
    assert.equal("deletedAt" in change, false);
  });
});

Deno.test("parsePush() checks an update's fields", async (t) => {
  for (
    const [name, fields] of [
      ["missing", undefined],
      ["null", null],
      ["an array", [{ value: 1, updatedAt: "2024-01-01T10:05:00Z" }]],
      ["a string", "title"],
    ] as const
  ) {
    await t.step(`refused when fields is ${name}`, () => {
      const change: Record<string, unknown> = update();
      if (fields === undefined) delete change.fields;
      else change.fields = fields;
      assertChangeRefused(change, "update needs a fields object");
    });
  }
  for (
    const [name, field] of [
      ["a bare value", "Buy eggs"],
      ["null", null],
      ["an array", ["Buy eggs", "2024-01-01T10:05:30Z"]],
      ["an object without value", { updatedAt: "2024-01-01T10:05:30Z" }],
    ] as const
  ) {
    await t.step(`refused when a field is ${name}`, () => {
      assertChangeRefused(
        { ...update(), fields: { title: field } },
        'field "title" must be an object with a value',
      );
    });
  }
  await t.step("a null value is a value", () => {
    const fields = { dueDate: { value: null, updatedAt: "2024-01-01T10:05:30Z" } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }).fields, fields);
  });
  await t.step("refused without updatedAt", () => {
    assertChangeRefused(
      { ...update(), fields: { title: { value: "x" } } },
      'field "title" has no ISO-8601 updatedAt: undefined',
    );
  });
  for (
    const [name, updatedAt, shown] of [
      ["garbage", "soon", '"soon"'],
      ["empty", "", '""'],
      ["null", null, "null"],
      ["a number", 1704103500000, "1704103500000"],
      ["an impossible date", "2023-02-29T10:00:00Z", '"2023-02-29T10:00:00Z"'],
    ] as const
  ) {
    await t.step(`refused when updatedAt is ${name}`, () => {
      assertChangeRefused(
        { ...update(), fields: { title: { value: "x", updatedAt } } },
        `field "title" has no ISO-8601 updatedAt: ${shown}`,
      );
    });
  }
  await t.step("the bad field is named among good ones", () => {
    assertChangeRefused(
      {
        ...update(),
        fields: {
          title: { value: "x", updatedAt: "2024-01-01T10:05:30Z" },
          completed: { value: true, updatedAt: "later" },
        },
      },
      'field "completed" has no ISO-8601 updatedAt: "later"',
    );
  });
  await t.step("refused when a field name is too long", () => {
    assertChangeRefused(
      { ...update(), fields: { ["f".repeat(257)]: { value: 1, updatedAt: SINCE } } },
      "field name is longer than 256 characters",
    );
    const name = "f".repeat(256);
    const fields =
      assertChangeAccepted({ ...update(), fields: { [name]: { value: 1, updatedAt: SINCE } } })
        .fields;
    assert.deepEqual(Object.keys(fields ?? {}), [name]);
  });
  await t.step("refused when a field name is empty", () => {
    assertChangeRefused(
      { ...update(), fields: { "": { value: 1, updatedAt: SINCE } } },
      "field name must be a non-empty string",
    );
  });
  await t.step("refused when a field name has a NUL", () => {
    assertChangeRefused(
      { ...update(), fields: { "ti\u0000tle": { value: 1, updatedAt: SINCE } } },
      "field name contains a NUL or a lone surrogate",
    );
  });
  await t.step("an empty fields object is accepted", () => {
    assert.deepEqual(assertChangeAccepted({ ...update(), fields: {} }).fields, {});
  });
  await t.step("data sent with an update is dropped", () => {
    const change = assertChangeAccepted({ ...update(), data: { title: "x" } });
    assert.equal("data" in change, false);
  });
});

Deno.test("parsePush() checks a delete's deletedAt", async (t) => {
  await t.step("a soft delete keeps its deletedAt", () => {
    assert.equal(assertChangeAccepted(softDelete()).deletedAt, "2024-01-01T10:07:00.000Z");
  });
  await t.step("deletedAt is taken from data.deletedAt", () => {
    const change = assertChangeAccepted({
      op: "delete",
      table: "tasks",
      id: "t1",
      data: { id: "t1", title: "Buy milk", deletedAt: "2024-01-01T12:07:00+02:00" },
    });
    assert.equal(change.deletedAt, "2024-01-01T12:07:00+02:00");
    assert.equal("data" in change, false);
  });
  await t.step("top-level deletedAt wins over data.deletedAt", () => {
    const change = assertChangeAccepted({
      ...softDelete(),
      data: { deletedAt: "2024-01-01T09:00:00Z" },
    });
    assert.equal(change.deletedAt, "2024-01-01T10:07:00.000Z");
  });
  await t.step("a null top-level deletedAt falls back to data.deletedAt", () => {
    const change = assertChangeAccepted({
      ...softDelete(),
      deletedAt: null,
      data: { deletedAt: "2024-01-01T09:00:00Z" },
    });
    assert.equal(change.deletedAt, "2024-01-01T09:00:00Z");
  });
  await t.step("without any deletedAt it is a hard delete", () => {
    for (const extra of [{}, { deletedAt: null }, { data: {} }, { data: null }, { data: "x" }]) {
      const change = assertChangeAccepted({ op: "delete", table: "tasks", id: "t1", ...extra });
      assert.deepEqual(change, { schemaVersion: 1, op: "delete", table: "tasks", id: "t1" });
    }
  });
  for (
    const [name, deletedAt, shown] of [
      ["garbage", "now", '"now"'],
      ["empty", "", '""'],
      ["a number", 1704103620000, "1704103620000"],
      ["hour 24", "2024-01-01T24:00:00Z", '"2024-01-01T24:00:00Z"'],
    ] as const
  ) {
    await t.step(`refused when deletedAt is ${name}`, () => {
      assertChangeRefused(
        { ...softDelete(), deletedAt },
        `deletedAt is not an ISO-8601 time: ${shown}`,
      );
    });
  }
  await t.step("refused when data.deletedAt is bad", () => {
    assertChangeRefused(
      { op: "delete", table: "tasks", id: "t1", data: { deletedAt: "never" } },
      'deletedAt is not an ISO-8601 time: "never"',
    );
  });
});

Deno.test("parsePush() refuses NUL characters and lone surrogates in values", async (t) => {
  const cases = [
    ["NUL in an insert value", { title: "a\u0000b" }, "data contains a NUL or a lone surrogate"],
    [
      "lone high surrogate in an insert value",
      { title: "a\ud83d" },
      "data contains a NUL or a lone surrogate",
    ],
    [
      "lone low surrogate in an insert value",
      { title: "\ude00b" },
      "data contains a NUL or a lone surrogate",
    ],
    [
      "NUL deep in an array",
      { tags: ["a", ["b", "c\u0000"]] },
      "data contains a NUL or a lone surrogate",
    ],
    ["NUL in a key", { ["ti\u0000tle"]: "x" }, "data has a key with a NUL or a lone surrogate"],
    [
      "lone surrogate in a nested key",
      { meta: { ["\ud800"]: 1 } },
      "data has a key with a NUL or a lone surrogate",
    ],
  ] as const;
  for (const [name, data, detail] of cases) {
    await t.step(name, () => assertChangeRefused({ ...insert(), data }, detail));
  }
  await t.step("NUL in an update value", () => {
    assertChangeRefused(
      { ...update(), fields: { title: { value: "x\u0000", updatedAt: SINCE } } },
      'field "title" contains a NUL or a lone surrogate',
    );
  });
  await t.step("lone surrogate in a key inside an update value", () => {
    assertChangeRefused(
      { ...update(), fields: { meta: { value: { a: { ["\udfff"]: 1 } }, updatedAt: SINCE } } },
      'field "meta" has a key with a NUL or a lone surrogate',
    );
  });
  await t.step("paired surrogates and other control characters are fine", () => {
    const data = { title: "😀 \u0001\u001f\ud83d\ude00", ["😀"]: ["\t\n"] };
    assert.deepEqual(assertChangeAccepted({ ...insert(), data }).data, data);
  });
});

Deno.test("parsePush() bounds the nesting of values", async (t) => {
  const limits = { ...DEFAULT_LIMITS, maxDepth: 3 };
  await t.step("an update value of exactly maxDepth levels is accepted", () => {
    const fields = { meta: { value: nest(3), updatedAt: SINCE } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }, limits).fields, fields);
    const arrays = { meta: { value: nestArrays(3), updatedAt: SINCE } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields: arrays }, limits).fields, arrays);
  });
  await t.step("an update value one level deeper is refused", () => {
    assertChangeRefused(
      { ...update(), fields: { meta: { value: nest(4), updatedAt: SINCE } } },
      'field "meta" is nested deeper than 3 levels',
      limits,
    );
    assertChangeRefused(
      { ...update(), fields: { meta: { value: nestArrays(4), updatedAt: SINCE } } },
      'field "meta" is nested deeper than 3 levels',
      limits,
    );
  });
  await t.step("an insert's data counts as the first level", () => {
    const ok = { meta: nest(2) };
    assert.deepEqual(assertChangeAccepted({ ...insert(), data: ok }, limits).data, ok);
    assertChangeRefused(
      { ...insert(), data: { meta: nest(3) } },
      "data is nested deeper than 3 levels",
      limits,
    );
  });
  await t.step("scalars at the deepest level do not count", () => {
    const fields = { meta: { value: { a: { b: [1, null, true, "s"] } }, updatedAt: SINCE } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }, limits).fields, fields);
  });
  await t.step("the default maxDepth is 32", () => {
    assert.equal(DEFAULT_LIMITS.maxDepth, 32);
    const fields = { meta: { value: nest(32), updatedAt: SINCE } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }).fields, fields);
    assertChangeRefused(
      { ...update(), fields: { meta: { value: nest(33), updatedAt: SINCE } } },
      'field "meta" is nested deeper than 32 levels',
    );
  });
});

/** An object of `n` keys `f0`…, each with `value(i)`. */
function keys<T>(n: number, value: (i: number) => T): Record<string, T> {
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, value(i)]));
}

Deno.test("parsePush() bounds the fields of a change", async (t) => {
  const field = (i: number) => ({ value: i, updatedAt: SINCE });
  await t.step("the default maxFields is 1000", () => {
    assert.equal(DEFAULT_LIMITS.maxFields, 1000);
  });
  await t.step("an insert's data of exactly maxFields keys is accepted", () => {
    const data = keys(1000, (i) => i);
    assert.equal(Object.keys(assertChangeAccepted({ ...insert(), data }).data!).length, 1000);
  });
  await t.step("one key more is refused, naming the change", () => {
    assertChangeRefused(
      { ...insert(), data: keys(1001, (i) => i) },
      "data has 1001 fields: at most 1000 are accepted per change",
    );
  });
  await t.step("an update of exactly maxFields fields (field timestamps) is accepted", () => {
    const fields = keys(1000, field);
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }).fields, fields);
  });
  await t.step("one field more is refused", () => {
    assertChangeRefused(
      { ...update(), fields: keys(1001, field) },
      "update has 1001 fields: at most 1000 are accepted per change",
    );
  });
  const limits = { ...DEFAULT_LIMITS, maxFields: 3 };
  /** `bad` after a delete (which fits any limit): the 400 names index 1. */
  const refusedAt1 = (bad: unknown, detail: string, at = limits) =>
    assertRefused(() => parsePush(body([softDelete(), bad]), { limits: at }), {
      status: 400,
      code: "invalid_change",
      message: `Cannot apply change 1: ${detail}`,
    });
  await t.step("against a configured maxFields", () => {
    assertChangeAccepted({ ...insert(), data: { id: "t1", a: 1, updatedAt: SINCE } }, limits);
    refusedAt1(
      { ...insert(), data: { id: "t1", a: 1, b: 2, updatedAt: SINCE } },
      "data has 4 fields: at most 3 are accepted per change",
    );
    assertChangeAccepted({ ...update(), fields: keys(3, field) }, limits);
    refusedAt1(
      { ...update(), fields: keys(4, field) },
      "update has 4 fields: at most 3 are accepted per change",
    );
  });
  await t.step("keys nested in a value do not count, in objects or in arrays", () => {
    const wide = keys(5000, (i) => i);
    const data = { id: "t1", nested: { wide, list: [wide, [wide]] }, list: Array(5000).fill(1) };
    assert.deepEqual(assertChangeAccepted({ ...insert(), data }, limits).data, data);
    const fields = { meta: { value: { wide, deeper: [{ wide }] }, updatedAt: SINCE } };
    assert.deepEqual(assertChangeAccepted({ ...update(), fields }, limits).fields, fields);
  });
  await t.step("the count is checked before the fields themselves", () => {
    // Every field is malformed, but the count is what the client hears about.
    refusedAt1(
      { ...update(), fields: keys(4, () => ({ noValue: true })) },
      "update has 4 fields: at most 3 are accepted per change",
    );
  });
  await t.step("each change is bounded by itself, not the batch as a whole", () => {
    const changes = Array.from({ length: 5 }, () => ({ ...insert(), data: keys(3, (i) => i) }));
    assert.equal(parsePush(body(changes), { limits }).changes.length, 5);
  });
  await t.step("a delete stores only deletedAt, so its data is not counted", () => {
    const change = assertChangeAccepted(
      { ...softDelete(), data: { ...keys(10, (i) => i), deletedAt: SINCE } },
      limits,
    );
    assert.equal(change.deletedAt, "2024-01-01T10:07:00.000Z");
  });
  await t.step("maxFields 0 leaves only empty records and updates", () => {
    const none = { ...DEFAULT_LIMITS, maxFields: 0 };
    assert.deepEqual(assertChangeAccepted({ ...insert(), data: {} }, none).data, {});
    refusedAt1(
      { ...insert(), data: { id: "t1" } },
      "data has 1 field: at most 0 are accepted per change",
      none,
    );
  });
});

Deno.test("parsePush() returns timestamps byte for byte as sent", () => {
  const times = [
    "2024-01-01T12:05:00,5+0200",
    "2024-01-01 10:05z",
    "2024-01-01",
    "2024-01-01T10:05:00.123456789123-05:30",
    "2024-01-01t10:05:00+05",
  ];
  const changes = [
    {
      op: "insert",
      table: "tasks",
      id: "a",
      data: { title: "x", updatedAt: times[0], createdAt: times[2] },
    },
    {
      op: "update",
      table: "tasks",
      id: "a",
      fields: {
        title: { value: "y", updatedAt: times[1] },
        completed: { value: true, updatedAt: times[3] },
      },
    },
    { op: "delete", table: "tasks", id: "a", deletedAt: times[4] },
    { op: "delete", table: "tasks", id: "b", data: { deletedAt: times[3] } },
  ];
  const sent = JSON.parse(JSON.stringify(changes));
  const result = parsePush(body(changes), {});
  const [ins, upd, del, del2] = result.changes;
  assert.equal(ins?.data?.updatedAt, times[0]);
  assert.equal(ins?.data?.createdAt, times[2]);
  assert.equal(upd?.fields?.title?.updatedAt, times[1]);
  assert.equal(upd?.fields?.completed?.updatedAt, times[3]);
  assert.equal(del?.deletedAt, times[4]);
  assert.equal(del2?.deletedAt, times[3]);
  assert.deepEqual(changes, sent, "the input is not modified");
});

Deno.test("parsePush() validates every change before returning any", () => {
  // A bad last change fails the whole push, whatever came before it.
  const changes = [...Array.from({ length: 10 }, insert), { ...insert(), data: [] }];
  const e = refusal(() => parsePush(body(changes), {}));
  assert.equal(e.message, "Cannot apply change 10: insert needs a data object");
});
