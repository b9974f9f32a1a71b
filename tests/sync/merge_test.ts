import assert from "node:assert/strict";
import type { Change } from "../../src/sync/change.ts";
import {
  canonicalJson,
  compareWrites,
  type Conflict,
  DELETED_AT,
  type FieldState,
  fieldWrites,
  futureTimestamp,
  mergeChange,
  type RecordState,
} from "../../src/sync/merge.ts";
import { instantKey } from "../../src/sync/time.ts";

const RECEIVED = "2024-01-01T12:00:00.000000Z";

function update(fields: Record<string, [unknown, string]>, id = "t1"): Change {
  return {
    schemaVersion: 1,
    table: "tasks",
    id,
    op: "update",
    fields: Object.fromEntries(
      Object.entries(fields).map(([name, [value, updatedAt]]) => [name, { value, updatedAt }]),
    ),
  };
}

function insert(data: Record<string, unknown>, id = "t1"): Change {
  return { schemaVersion: 1, table: "tasks", id, op: "insert", data };
}

function remove(deletedAt?: string, id = "t1"): Change {
  const change: Change = { schemaVersion: 1, table: "tasks", id, op: "delete" };
  if (deletedAt !== undefined) change.deletedAt = deletedAt;
  return change;
}

function merge(
  state: RecordState | undefined,
  change: Change,
  clientId: string,
  receivedAt = RECEIVED,
) {
  return mergeChange(state, change, { clientId, receivedAt });
}

/** Merges `steps` in order from an empty state; returns the state and all conflicts. */
function replay(steps: readonly (readonly [Change, string, string?])[]) {
  let state: RecordState | undefined;
  const conflicts: Conflict[] = [];
  for (const [change, clientId, receivedAt] of steps) {
    const result = merge(state, change, clientId, receivedAt);
    state = result.state;
    conflicts.push(...result.conflicts);
  }
  return { state: state ?? {}, conflicts };
}

function values(state: RecordState): Record<string, unknown> {
  return Object.fromEntries(Object.entries(state).map(([k, f]) => [k, f.v]));
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  const out: T[][] = [];
  items.forEach((item, i) => {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const p of permutations(rest)) out.push([item, ...p]);
  });
  return out;
}

function deepFreeze<T>(x: T): T {
  if (typeof x === "object" && x !== null) {
    for (const v of Object.values(x)) deepFreeze(v);
    Object.freeze(x);
  }
  return x;
}

Deno.test("mergeChange() resolves the seed's first example whichever arrives first", async (t) => {
  const a = update({ title: ["Buy milk", "2024-01-01T10:05:00Z"] });
  const b = update({ title: ["Buy eggs", "2024-01-01T10:05:30Z"] });
  await t.step("A then B", () => {
    const { state, conflicts } = replay([[a, "client-a"], [b, "client-b"]]);
    assert.deepEqual(state, { title: { v: "Buy eggs", t: "2024-01-01T10:05:30Z", c: "client-b" } });
    assert.deepEqual(conflicts, []);
  });
  await t.step("B then A", () => {
    const { state, conflicts } = replay([[b, "client-b"], [a, "client-a"]]);
    assert.deepEqual(state, { title: { v: "Buy eggs", t: "2024-01-01T10:05:30Z", c: "client-b" } });
    assert.deepEqual(conflicts, [{
      table: "tasks",
      id: "t1",
      field: "title",
      clientValue: "Buy milk",
      clientTimestamp: "2024-01-01T10:05:00Z",
      serverValue: "Buy eggs",
      serverTimestamp: "2024-01-01T10:05:30Z",
    }]);
  });
});

Deno.test("mergeChange() resolves the seed's second example field by field", async (t) => {
  const a = update({
    title: ["Buy milk", "2024-01-01T10:05:00Z"],
    completed: [true, "2024-01-01T10:06:00Z"],
  });
  const b = update({ title: ["Buy eggs", "2024-01-01T10:05:30Z"] });
  const expected = {
    title: { v: "Buy eggs", t: "2024-01-01T10:05:30Z", c: "client-b" },
    completed: { v: true, t: "2024-01-01T10:06:00Z", c: "client-a" },
  };
  await t.step("A then B", () => {
    const { state, conflicts } = replay([[a, "client-a"], [b, "client-b"]]);
    assert.deepEqual(state, expected);
    assert.deepEqual(values(state), { title: "Buy eggs", completed: true });
    assert.deepEqual(conflicts, []);
  });
  await t.step("B then A: only the losing title is a conflict", () => {
    const first = merge(undefined, b, "client-b");
    const second = merge(first.state, a, "client-a");
    assert.deepEqual(second.state, expected);
    assert.equal(second.changed, true, "completed was written");
    assert.deepEqual(second.conflicts, [{
      table: "tasks",
      id: "t1",
      field: "title",
      clientValue: "Buy milk",
      clientTimestamp: "2024-01-01T10:05:00Z",
      serverValue: "Buy eggs",
      serverTimestamp: "2024-01-01T10:05:30Z",
    }]);
  });
});

Deno.test("mergeChange() reports a conflict for each losing incoming field, with both sides", () => {
  const state: RecordState = {
    title: { v: "Server title", t: "2024-01-01T10:10:00.123456Z", c: "client-z" },
    tags: { v: ["a", { b: 1 }], t: "2024-01-01T12:10:00+02:00", c: "client-z" },
    notes: { v: "old", t: "2024-01-01T09:00:00Z", c: "client-z" },
  };
  const change = update({
    title: ["Client title", "2024-01-01T10:09:59.999Z"],
    tags: [null, "2024-01-01T10:09:00Z"],
    notes: ["new", "2024-01-01T09:30:00Z"],
    extra: [42, "2024-01-01T08:00:00Z"],
  }, "rec-7");
  const result = merge(state, change, "client-a");
  assert.deepEqual(result.conflicts, [
    {
      table: "tasks",
      id: "rec-7",
      field: "title",
      clientValue: "Client title",
      clientTimestamp: "2024-01-01T10:09:59.999Z",
      serverValue: "Server title",
      serverTimestamp: "2024-01-01T10:10:00.123456Z",
    },
    {
      table: "tasks",
      id: "rec-7",
      field: "tags",
      clientValue: null,
      clientTimestamp: "2024-01-01T10:09:00Z",
      serverValue: ["a", { b: 1 }],
      serverTimestamp: "2024-01-01T12:10:00+02:00",
    },
  ]);
  assert.equal(result.changed, true);
  assert.deepEqual(result.state.notes, { v: "new", t: "2024-01-01T09:30:00Z", c: "client-a" });
  assert.deepEqual(result.state.extra, { v: 42, t: "2024-01-01T08:00:00Z", c: "client-a" });
  assert.deepEqual(result.state.title, state.title);
  assert.deepEqual(result.state.tags, state.tags);
});

Deno.test("mergeChange() reports changed=false and conflicts when every field loses", () => {
  const state: RecordState = { title: { v: "x", t: "2024-01-01T10:00:00Z", c: "b" } };
  const result = merge(state, update({ title: ["y", "2024-01-01T09:00:00Z"] }), "a");
  assert.equal(result.changed, false);
  assert.deepEqual(result.state, state);
  assert.equal(result.conflicts.length, 1);
});

Deno.test("mergeChange() writes every field of an empty state", () => {
  const result = merge(undefined, update({ a: [1, "2024-01-01T10:00:00Z"] }), "a");
  assert.equal(result.changed, true);
  assert.deepEqual(result.conflicts, []);
  assert.deepEqual(result.state, { a: { v: 1, t: "2024-01-01T10:00:00Z", c: "a" } });
});

Deno.test("mergeChange() breaks ties on an equal instant deterministically", async (t) => {
  await t.step("the greater client id wins, in both orders", () => {
    const a = update({ title: ["from a", "2024-01-01T10:05:00Z"] });
    const b = update({ title: ["from b", "2024-01-01T10:05:00Z"] });
    for (
      const steps of [[[a, "client-a"], [b, "client-b"]], [[b, "client-b"], [
        a,
        "client-a",
      ]]] as const
    ) {
      const { state } = replay(steps);
      assert.deepEqual(state.title, { v: "from b", t: "2024-01-01T10:05:00Z", c: "client-b" });
    }
  });
  await t.step("the tie loser arriving second is a conflict", () => {
    const first = merge(
      undefined,
      update({ title: ["from b", "2024-01-01T10:05:00Z"] }),
      "client-b",
    );
    const second = merge(
      first.state,
      update({ title: ["from a", "2024-01-01T10:05:00Z"] }),
      "client-a",
    );
    assert.equal(second.changed, false);
    assert.deepEqual(second.conflicts, [{
      table: "tasks",
      id: "t1",
      field: "title",
      clientValue: "from a",
      clientTimestamp: "2024-01-01T10:05:00Z",
      serverValue: "from b",
      serverTimestamp: "2024-01-01T10:05:00Z",
    }]);
  });
  await t.step("client ids compare as text, not by length", () => {
    const long = update({ title: ["long", "2024-01-01T10:05:00Z"] });
    const short = update({ title: ["short", "2024-01-01T10:05:00Z"] });
    const { state } = replay([[short, "b"], [long, "aaaaaaaa"]]);
    assert.equal(state.title?.v, "short");
  });
  await t.step("an equal instant spelled differently is still a tie", () => {
    const a = update({ title: ["from a", "2024-01-01T12:05:00+02:00"] });
    const b = update({ title: ["from b", "2024-01-01T10:05:00.000Z"] });
    assert.equal(replay([[a, "client-z"], [b, "client-b"]]).state.title?.v, "from a");
    assert.equal(replay([[b, "client-b"], [a, "client-z"]]).state.title?.v, "from a");
  });
  await t.step("same instant and client: the greater value (canonical JSON) wins", () => {
    const x = update({ title: ["apple", "2024-01-01T10:05:00Z"] });
    const y = update({ title: ["banana", "2024-01-01T10:05:00Z"] });
    assert.equal(replay([[x, "a"], [y, "a"]]).state.title?.v, "banana");
    assert.equal(replay([[y, "a"], [x, "a"]]).state.title?.v, "banana");
    const n = update({ title: [null, "2024-01-01T10:05:00Z"] });
    const o = update({ title: [{ z: 1 }, "2024-01-01T10:05:00Z"] });
    const expected = canonicalJson({ z: 1 }) > canonicalJson(null) ? { z: 1 } : null;
    assert.deepEqual(replay([[n, "a"], [o, "a"]]).state.title?.v, expected);
    assert.deepEqual(replay([[o, "a"], [n, "a"]]).state.title?.v, expected);
  });
});

Deno.test("mergeChange() compares timestamps as instants, not as text", async (t) => {
  await t.step("+02:00 noon is earlier than 11:00Z", () => {
    const early = update({ title: ["early", "2024-01-01T12:00:00+02:00"] });
    const late = update({ title: ["late", "2024-01-01T11:00:00Z"] });
    for (const steps of [[[early, "z"], [late, "a"]], [[late, "a"], [early, "z"]]] as const) {
      const { state } = replay(steps);
      assert.deepEqual(state.title, { v: "late", t: "2024-01-01T11:00:00Z", c: "a" });
    }
    const { conflicts } = replay([[late, "a"], [early, "z"]]);
    assert.equal(conflicts.length, 1);
    assert.equal(conflicts[0]?.clientTimestamp, "2024-01-01T12:00:00+02:00");
  });
  await t.step("more fractional digits are a later instant", () => {
    const a = update({ f: ["a", "2024-01-01T10:05:00Z"] });
    const b = update({ f: ["b", "2024-01-01T10:05:00.0000001Z"] });
    assert.equal(replay([[b, "a"], [a, "z"]]).state.f?.v, "b");
  });
  await t.step("differently spelled fractions", () => {
    const a = update({ f: ["a", "2024-01-01T10:05:00.5Z"] });
    const b = update({ f: ["b", "2024-01-01T10:05:00,4999999999Z"] });
    assert.equal(replay([[a, "a"], [b, "z"]]).state.f?.v, "a");
  });
  await t.step("a date-only time is midnight UTC", () => {
    const a = update({ f: ["a", "2024-01-02"] });
    const b = update({ f: ["b", "2024-01-01T23:59:59.999999999Z"] });
    assert.equal(replay([[a, "a"], [b, "z"]]).state.f?.v, "a");
  });
  await t.step("the state keeps the client's timestamp string", () => {
    const { state } = replay([[update({ f: [1, "2024-01-01T12:00:00,5+0200"] }), "a"]]);
    assert.equal(state.f?.t, "2024-01-01T12:00:00,5+0200");
  });
});

Deno.test("mergeChange() treats a soft delete as the deletedAt field", async (t) => {
  await t.step("it writes deletedAt with the delete's time", () => {
    const { state, changed } = merge(
      { title: { v: "x", t: "2024-01-01T10:00:00Z", c: "a" } },
      remove("2024-01-01T10:07:00.000Z"),
      "client-b",
    );
    assert.equal(DELETED_AT, "deletedAt");
    assert.equal(changed, true);
    assert.deepEqual(state, {
      title: { v: "x", t: "2024-01-01T10:00:00Z", c: "a" },
      deletedAt: { v: "2024-01-01T10:07:00.000Z", t: "2024-01-01T10:07:00.000Z", c: "client-b" },
    });
  });
  await t.step("the later of two deletes wins, the earlier is a conflict", () => {
    const { state, conflicts } = replay([
      [remove("2024-01-01T10:08:00Z"), "a"],
      [remove("2024-01-01T10:07:00Z"), "b"],
    ]);
    assert.equal(state.deletedAt?.v, "2024-01-01T10:08:00Z");
    assert.deepEqual(conflicts, [{
      table: "tasks",
      id: "t1",
      field: "deletedAt",
      clientValue: "2024-01-01T10:07:00Z",
      clientTimestamp: "2024-01-01T10:07:00Z",
      serverValue: "2024-01-01T10:08:00Z",
      serverTimestamp: "2024-01-01T10:08:00Z",
    }]);
  });
  await t.step("a later update of deletedAt restores, an earlier one loses", () => {
    const deleted = merge(undefined, remove("2024-01-01T10:07:00Z"), "a").state;
    const restored = merge(deleted, update({ deletedAt: [null, "2024-01-01T10:08:00Z"] }), "b");
    assert.equal(restored.state.deletedAt?.v, null);
    const stale = merge(deleted, update({ deletedAt: [null, "2024-01-01T10:06:00Z"] }), "b");
    assert.equal(stale.state.deletedAt?.v, "2024-01-01T10:07:00Z");
    assert.equal(stale.conflicts.length, 1);
  });
  await t.step("a delete compares with an offset time as an instant", () => {
    const { state } = replay([
      [remove("2024-01-01T10:07:00Z"), "a"],
      [remove("2024-01-01T11:06:00+01:00"), "z"],
    ]);
    assert.equal(state.deletedAt?.v, "2024-01-01T10:07:00Z");
  });
});

Deno.test("mergeChange() records a hard delete at receivedAt", () => {
  const receivedAt = "2024-01-01T10:09:00.123456Z";
  const { state, changed, conflicts } = merge(
    { title: { v: "x", t: "2024-01-01T10:00:00Z", c: "a" } },
    remove(),
    "client-b",
    receivedAt,
  );
  assert.equal(changed, true);
  assert.deepEqual(conflicts, []);
  assert.deepEqual(state.deletedAt, { v: receivedAt, t: receivedAt, c: "client-b" });
  assert.deepEqual(state.title, { v: "x", t: "2024-01-01T10:00:00Z", c: "a" });
  // A soft delete later than the receive time wins over it.
  const later = merge(state, remove("2024-01-01T10:10:00Z"), "client-a");
  assert.equal(later.state.deletedAt?.v, "2024-01-01T10:10:00Z");
});

Deno.test("mergeChange() writes an insert at data.updatedAt ?? data.createdAt ?? receivedAt", async (t) => {
  await t.step("updatedAt", () => {
    const data = {
      id: "t1",
      title: "x",
      createdAt: "2024-01-01T09:00:00Z",
      updatedAt: "2024-01-01T10:00:00Z",
    };
    const { state } = merge(undefined, insert(data), "a");
    assert.deepEqual(Object.keys(state).sort(), ["createdAt", "id", "title", "updatedAt"]);
    for (const [name, field] of Object.entries(state)) {
      assert.deepEqual(field, { v: data[name as keyof typeof data], t: data.updatedAt, c: "a" });
    }
  });
  await t.step("createdAt when there is no updatedAt", () => {
    const { state } = merge(
      undefined,
      insert({ title: "x", createdAt: "2024-01-01T09:00:00Z" }),
      "a",
    );
    assert.equal(state.title?.t, "2024-01-01T09:00:00Z");
  });
  await t.step("createdAt when updatedAt is null", () => {
    const data = { title: "x", updatedAt: null, createdAt: "2024-01-01T09:00:00Z" };
    const { state } = merge(undefined, insert(data), "a");
    assert.equal(state.title?.t, "2024-01-01T09:00:00Z");
    assert.deepEqual(state.updatedAt, { v: null, t: "2024-01-01T09:00:00Z", c: "a" });
  });
  await t.step("receivedAt when there is neither", () => {
    const { state } = merge(undefined, insert({ title: "x" }), "a", "2024-01-01T10:09:00.5Z");
    assert.deepEqual(state.title, { v: "x", t: "2024-01-01T10:09:00.5Z", c: "a" });
  });
  await t.step("receivedAt when createdAt is not a time", () => {
    const { state } = merge(undefined, insert({ title: "x", createdAt: 17 }), "a");
    assert.equal(state.title?.t, RECEIVED);
  });
  await t.step("an older insert loses field by field to newer state", () => {
    const current: RecordState = { title: { v: "new", t: "2024-01-01T11:00:00Z", c: "b" } };
    const result = merge(
      current,
      insert({ title: "old", done: false, updatedAt: "2024-01-01T10:00:00Z" }),
      "a",
    );
    assert.equal(result.changed, true);
    assert.deepEqual(values(result.state), {
      title: "new",
      done: false,
      updatedAt: "2024-01-01T10:00:00Z",
    });
    assert.deepEqual(result.conflicts.map((c) => c.field), ["title"]);
  });
  await t.step("an empty insert writes nothing", () => {
    const result = merge(undefined, insert({}), "a");
    assert.deepEqual(result, { state: {}, conflicts: [], changed: false });
  });
});

Deno.test("mergeChange() changes nothing when the same change is merged twice", async (t) => {
  const cases: [string, Change, string][] = [
    [
      "insert",
      insert({ title: "x", updatedAt: "2024-01-01T10:00:00Z", tags: { b: [1], a: 2 } }),
      "a",
    ],
    ["insert without timestamps", insert({ title: "x" }), "a"],
    ["update", update({ title: ["y", "2024-01-01T12:00:00+02:00"], n: [null, "2024-01-01"] }), "b"],
    ["soft delete", remove("2024-01-01T10:07:00Z"), "c"],
    ["hard delete", remove(), "c"],
  ];
  for (const [name, change, clientId] of cases) {
    await t.step(name, () => {
      const base: RecordState = { other: { v: 1, t: "2024-01-01T10:30:00Z", c: "z" } };
      const once = merge(base, change, clientId);
      assert.equal(once.changed, true);
      const twice = merge(once.state, change, clientId);
      assert.equal(twice.changed, false);
      assert.deepEqual(twice.conflicts, []);
      assert.deepEqual(twice.state, once.state);
      // Also a structurally equal copy, as a retried push would send it.
      const copy = merge(once.state, structuredClone(change), clientId);
      assert.equal(copy.changed, false);
      assert.deepEqual(copy.conflicts, []);
    });
  }
});

Deno.test("mergeChange() does not modify its inputs", () => {
  const state = deepFreeze<RecordState>({
    title: { v: "x", t: "2024-01-01T10:00:00Z", c: "a" },
    tags: { v: ["a"], t: "2024-01-01T10:00:00Z", c: "a" },
  });
  const change = deepFreeze(update({
    title: ["y", "2024-01-01T11:00:00Z"],
    tags: [["b"], "2024-01-01T09:00:00Z"],
    added: [{ deep: [1] }, "2024-01-01T11:00:00Z"],
  }));
  const stateBefore = JSON.stringify(state), changeBefore = JSON.stringify(change);
  const result = merge(state, change, "b");
  assert.notEqual(result.state, state);
  assert.equal(JSON.stringify(state), stateBefore);
  assert.equal(JSON.stringify(change), changeBefore);
  assert.equal(result.state.title?.v, "y");
  assert.equal(result.conflicts.length, 1);
  // Merging into the result does not reach back into the first state either.
  merge(result.state, update({ title: ["z", "2024-01-01T12:00:00Z"] }), "c");
  assert.equal(result.state.title?.v, "y");
});

Deno.test("mergeChange() converges: every order of the same changes gives one state", async (t) => {
  const steps: (readonly [Change, string, string?])[] = [
    [
      insert({ id: "t1", title: "Buy milk", completed: false, updatedAt: "2024-01-01T10:00:00Z" }),
      "client-a",
    ],
    [update({ title: ["Buy eggs", "2024-01-01T11:05:30+01:00"] }), "client-b"],
    [
      update({
        title: ["Buy bread", "2024-01-01T10:05:30.000Z"],
        tags: [{ a: 1, b: [1, 2] }, "2024-01-01T10:05:30Z"],
      }),
      "client-c",
    ],
    [
      update({
        completed: [true, "2024-01-01T10:06:00Z"],
        tags: [{ b: [1, 2], a: 1 }, "2024-01-01T10:05:30Z"],
      }),
      "client-a",
    ],
    [remove("2024-01-01T10:07:00Z"), "client-b"],
    [
      update({
        deletedAt: [null, "2024-01-01T10:06:59.999999Z"],
        completed: [false, "2024-01-01T11:06:00+01:00"],
      }),
      "client-c",
    ],
  ];
  const all = permutations(steps);
  await t.step("there are 720 orders", () => assert.equal(all.length, 720));
  await t.step("all orders end in the same canonical state", () => {
    const reference = canonicalJson(replay(steps).state);
    for (const order of all) assert.equal(canonicalJson(replay(order).state), reference);
  });
  await t.step("the state is the expected LWW result", () => {
    assert.deepEqual(values(replay(all[719]!).state), {
      id: "t1",
      title: "Buy bread", // same instant as client-b's eggs; client-c is greater
      completed: false, // same instant as client-a's true; client-c is greater
      tags: { a: 1, b: [1, 2] },
      updatedAt: "2024-01-01T10:00:00Z",
      deletedAt: "2024-01-01T10:07:00Z", // the restore at 10:06:59.999999 is older
    });
  });
  await t.step("a hard delete with its receive time also converges", () => {
    const withHard = [
      ...steps.slice(0, 4),
      [remove(), "client-b", "2024-01-01T10:06:30.000001Z"] as const,
    ];
    const states = new Set(permutations(withHard).map((o) => canonicalJson(replay(o).state)));
    assert.equal(states.size, 1);
  });
});

Deno.test("mergeChange() converges on random writes with many ties", () => {
  // Timestamps come from a small pool (one spelling per instant) so that ties are frequent.
  let seed = 12345;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const times = [
    "2024-01-01T10:00:00Z",
    "2024-01-01T12:00:00+02:00",
    "2024-01-01T10:00:00.000001Z",
    "2024-01-01T09:59:59.999999999-00:00",
  ];
  const clients = ["a", "b", "c"];
  const fields = ["title", "done", "deletedAt"];
  const vals = [null, 0, 1, "x", "y", [1], { k: 1 }];
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  for (let round = 0; round < 20; round++) {
    const steps = Array.from({ length: 5 }, () => {
      const writes: Record<string, [unknown, string]> = {};
      for (const f of fields) if (rand() < 0.6) writes[f] = [pick(vals), pick(times)];
      return [update(writes), pick(clients)] as const;
    });
    const states = new Set(permutations(steps).map((o) => canonicalJson(replay(o).state)));
    assert.equal(states.size, 1, `round ${round}`);
  }
});

Deno.test("mergeChange() converges when one client spells one instant two ways", () => {
  // The same client writes the same value at the same instant, once as "Z" and once with an
  // offset (a retry from a device that changed how it formats times). compareWrites() calls the
  // two writes equal, so the state keeps whichever came first and the stored timestamp text
  // depends on the order of arrival.
  const z = update({ title: ["Buy eggs", "2024-01-01T10:05:30Z"] });
  const offset = update({ title: ["Buy eggs", "2024-01-01T12:05:30+02:00"] });
  const zFirst = replay([[z, "client-a"], [offset, "client-a"]]).state;
  const offsetFirst = replay([[offset, "client-a"], [z, "client-a"]]).state;
  assert.equal(canonicalJson(zFirst), canonicalJson(offsetFirst));
});

Deno.test("compareWrites() is a consistent order of writes", async (t) => {
  const w = (v: unknown, t: string, c: string): FieldState => ({ v, t, c });
  await t.step("later instant wins", () => {
    assert.equal(
      compareWrites(w(1, "2024-01-01T10:00:01Z", "a"), w(2, "2024-01-01T10:00:00Z", "z")),
      1,
    );
    assert.equal(
      compareWrites(w(2, "2024-01-01T10:00:00Z", "z"), w(1, "2024-01-01T10:00:01Z", "a")),
      -1,
    );
  });
  await t.step("then the greater client id", () => {
    assert.equal(
      compareWrites(w(1, "2024-01-01T10:00:00Z", "b"), w(2, "2024-01-01T10:00:00Z", "a")),
      1,
    );
  });
  await t.step("then the greater canonical value", () => {
    assert.equal(
      compareWrites(w("b", "2024-01-01T10:00:00Z", "a"), w("a", "2024-01-01T10:00:00Z", "a")),
      1,
    );
  });
  await t.step("the same write is 0, whatever its key order", () => {
    assert.equal(
      compareWrites(
        w({ a: 1, b: 2 }, "2024-01-01T10:00:00Z", "a"),
        w({ b: 2, a: 1 }, "2024-01-01T10:00:00Z", "a"),
      ),
      0,
    );
  });
  await t.step("an unparseable time loses to any time", () => {
    assert.equal(compareWrites(w(1, "garbage", "z"), w(1, "0000-01-01", "a")), -1);
  });
  await t.step("antisymmetric over a pool of writes", () => {
    const pool = [
      w(1, "2024-01-01T10:00:00Z", "a"),
      w(2, "2024-01-01T10:00:00Z", "a"),
      w(1, "2024-01-01T10:00:00Z", "b"),
      w(1, "2024-01-01T12:00:00+02:00", "b"),
      w(null, "2024-01-01T09:00:00Z", "c"),
      w([1], "2024-01-02", "a"),
    ];
    for (const x of pool) {
      for (const y of pool) {
        assert.equal(Math.sign(compareWrites(x, y)) + Math.sign(compareWrites(y, x)), 0);
      }
    }
  });
});

Deno.test("fieldWrites() lists the writes of each op", () => {
  assert.deepEqual(fieldWrites(update({ a: [1, "2024-01-01"] }), "c", RECEIVED), [
    ["a", { v: 1, t: "2024-01-01", c: "c" }],
  ]);
  assert.deepEqual(fieldWrites(remove("2024-01-01"), "c", RECEIVED), [
    ["deletedAt", { v: "2024-01-01", t: "2024-01-01", c: "c" }],
  ]);
  assert.deepEqual(fieldWrites(remove(), "c", RECEIVED), [
    ["deletedAt", { v: RECEIVED, t: RECEIVED, c: "c" }],
  ]);
});

Deno.test("futureTimestamp() finds the first client time beyond the limit", async (t) => {
  const limit = instantKey("2024-01-01T10:10:00Z")!;
  await t.step("none when every time is at or before the limit", () => {
    const changes = [
      update({ a: [1, "2024-01-01T10:10:00Z"], b: [2, "2024-01-01T10:09:59.999999999Z"] }),
      insert({ updatedAt: "2024-01-01T10:00:00Z" }),
      remove("2024-01-01T10:05:00Z"),
    ];
    assert.equal(futureTimestamp(changes, limit), undefined);
  });
  await t.step("an update field, as the client wrote it", () => {
    const changes = [
      update({ a: [1, "2024-01-01T10:00:00Z"] }),
      update({ b: [1, "2024-01-01T12:10:00.000000001+02:00"], c: [1, "2030-01-01T00:00:00Z"] }),
    ];
    assert.equal(futureTimestamp(changes, limit), "2024-01-01T12:10:00.000000001+02:00");
  });
  await t.step("an insert's updatedAt, else its createdAt", () => {
    assert.equal(
      futureTimestamp([insert({ updatedAt: "2024-01-01T10:11:00Z" })], limit),
      "2024-01-01T10:11:00Z",
    );
    assert.equal(
      futureTimestamp([insert({ createdAt: "2024-01-02" })], limit),
      "2024-01-02",
    );
  });
  await t.step("a soft delete's deletedAt", () => {
    assert.equal(futureTimestamp([remove("2025-01-01T00:00:00Z")], limit), "2025-01-01T00:00:00Z");
  });
  await t.step("compared as instants, not text", () => {
    // Greater as text, earlier as an instant.
    assert.equal(
      futureTimestamp([update({ a: [1, "2024-01-01T12:09:00+02:00"] })], limit),
      undefined,
    );
    // Smaller as text, later as an instant.
    assert.equal(
      futureTimestamp([update({ a: [1, "2024-01-01T10:09:00-01:00"] })], limit),
      "2024-01-01T10:09:00-01:00",
    );
  });
  await t.step("ignores hard deletes and inserts without times", () => {
    assert.equal(futureTimestamp([remove(), insert({ title: "x" }), insert({})], limit), undefined);
  });
  await t.step("none for no changes", () => assert.equal(futureTimestamp([], limit), undefined));
});

Deno.test("canonicalJson() is independent of key order", async (t) => {
  await t.step("flat objects", () => {
    assert.equal(canonicalJson({ b: 1, a: 2 }), '{"a":2,"b":1}');
    assert.equal(canonicalJson({ a: 2, b: 1 }), canonicalJson({ b: 1, a: 2 }));
  });
  await t.step("nested objects and arrays of objects", () => {
    const x = { z: { y: [1, { q: 1, p: 2 }], x: null }, a: "s" };
    const y = { a: "s", z: { x: null, y: [1, { p: 2, q: 1 }] } };
    assert.equal(canonicalJson(x), canonicalJson(y));
    assert.equal(canonicalJson(x), '{"a":"s","z":{"x":null,"y":[1,{"p":2,"q":1}]}}');
  });
  await t.step("array order matters", () => {
    assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  });
  await t.step("different values differ", () => {
    assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: "1" }));
    assert.notEqual(canonicalJson(null), canonicalJson("null"));
    assert.notEqual(canonicalJson({}), canonicalJson([]));
  });
  await t.step("primitives are JSON", () => {
    assert.equal(canonicalJson('a"b'), '"a\\"b"');
    assert.equal(canonicalJson(1.5), "1.5");
    assert.equal(canonicalJson(true), "true");
    assert.equal(canonicalJson(null), "null");
    assert.equal(canonicalJson(undefined), "null");
  });
  await t.step("parses back to an equal value", () => {
    const value = { b: [1, "x", { d: null, c: true }], a: { "ü": 1, "\u0001": 2 } };
    assert.deepEqual(JSON.parse(canonicalJson(value)), value);
  });
});
