/**
 * The NOTIFY payload codec (pure), and the LISTEN/NOTIFY fan-out against a real PostgreSQL when
 * the run has one (TEST_DATABASE_URL or DATABASE_URL).
 */
import assert from "node:assert/strict";
import type { SyncEvent } from "../../src/realtime/hub.ts";
import {
  decodeEvent,
  encodeEvent,
  postgresPubSub,
  type PubSub,
} from "../../src/realtime/pubsub.ts";
import { type Db, openPostgres } from "../../src/store/db.ts";
import { POSTGRES_URL } from "../helpers/databases.ts";

/** Deno 2 runs tests unsanitized by default: opt in, so a leaked timer or socket fails the test. */
const sanitized = { sanitizeOps: true, sanitizeResources: true } as const;

const LIMIT = 7900;
const bytes = (s: string) => new TextEncoder().encode(s).length;

const event = (overrides: Partial<SyncEvent> = {}): SyncEvent => ({
  userId: "alice",
  appId: "todo",
  tables: ["tasks", "lists"],
  clientId: "device-a",
  ...overrides,
});

Deno.test(
  "encodeEvent() and decodeEvent() round-trip an event and its sender",
  sanitized,
  async (t) => {
    for (
      const [name, sent] of [
        ["plain", event()],
        ["no tables", event({ tables: [] })],
        ["non-ASCII and quotes", event({ userId: 'ü"ser', tables: ["täsks", "emoji 🎉"] })],
        ["empty clientId", event({ clientId: "" })],
      ] as const
    ) {
      await t.step(name, () => {
        assert.deepEqual(decodeEvent(encodeEvent(sent, "instance-1")), {
          from: "instance-1",
          event: sent,
        });
      });
    }
  },
);

Deno.test(
  "encodeEvent() drops the table list when the payload would exceed the NOTIFY limit",
  sanitized,
  async (t) => {
    await t.step("many long table names", () => {
      const sent = event({
        tables: Array.from({ length: 200 }, (_, i) => `table_${i}_${"x".repeat(60)}`),
      });
      assert.ok(bytes(JSON.stringify(sent.tables)) > LIMIT, "the full list does not fit");
      const payload = encodeEvent(sent, "instance-1");
      assert.ok(bytes(payload) <= LIMIT, `${bytes(payload)} bytes`);
      assert.deepEqual(decodeEvent(payload), {
        from: "instance-1",
        event: { ...sent, tables: [] },
      });
    });

    await t.step("limit counted in bytes, not characters", () => {
      // 3,000 characters but 6,000+ bytes per name list half: fits in characters, not in bytes.
      const sent = event({ tables: ["é".repeat(2000), "ü".repeat(2000)] });
      assert.ok(JSON.stringify(sent).length < LIMIT);
      const payload = encodeEvent(sent, "instance-1");
      assert.ok(bytes(payload) <= LIMIT, `${bytes(payload)} bytes`);
      assert.deepEqual(decodeEvent(payload)?.event.tables, []);
    });

    await t.step("a payload that fits keeps its tables", () => {
      const sent = event({ tables: Array.from({ length: 50 }, (_, i) => `table_${i}`) });
      assert.deepEqual(decodeEvent(encodeEvent(sent, "i"))?.event.tables, sent.tables);
    });
  },
);

Deno.test("decodeEvent() rejects malformed payloads", sanitized, async (t) => {
  const valid = { i: "instance", u: "alice", a: "todo", t: ["tasks"], c: "device" };
  const cases: [string, string][] = [
    ["not JSON", "{nope"],
    ["empty", ""],
    ["null", "null"],
    ["a number", "42"],
    ["an array", "[]"],
    ["empty object", "{}"],
    ["missing sender", JSON.stringify({ ...valid, i: undefined })],
    ["missing user", JSON.stringify({ ...valid, u: undefined })],
    ["missing app", JSON.stringify({ ...valid, a: undefined })],
    ["missing clientId", JSON.stringify({ ...valid, c: undefined })],
    ["numeric user", JSON.stringify({ ...valid, u: 7 })],
    ["tables not an array", JSON.stringify({ ...valid, t: "tasks" })],
    ["missing tables", JSON.stringify({ ...valid, t: undefined })],
    ["non-string table", JSON.stringify({ ...valid, t: ["tasks", 3] })],
  ];
  assert.deepEqual(decodeEvent(JSON.stringify(valid)), {
    from: "instance",
    event: { userId: "alice", appId: "todo", tables: ["tasks"], clientId: "device" },
  });
  for (const [name, payload] of cases) {
    await t.step(name, () => {
      assert.equal(decodeEvent(payload), undefined);
    });
  }
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `ready()` every 20 ms for up to 10 s; a hang fails instead of stalling the run. */
async function until(ready: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!await ready()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

if (POSTGRES_URL) {
  const url = POSTGRES_URL;

  const listenerPids = async (db: Db) =>
    new Set(
      (await db.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
          WHERE application_name = 'mana-sync-listener' AND datname = current_database()`,
      )).map((r) => r.pid),
    );

  Deno.test("postgresPubSub().close() ends its listener connection", sanitized, async () => {
    const db = openPostgres(url, { max: 1 });
    try {
      const before = await listenerPids(db);
      const pubsub = await postgresPubSub(url, (text, params) => db.query(text, params), {
        onEvent: () => {},
      });
      let ours: number[];
      try {
        ours = [...await listenerPids(db)].filter((pid) => !before.has(pid));
        assert.equal(ours.length, 1, "one dedicated listener connection");
      } finally {
        await pubsub.close();
      }
      await until(async () => {
        const now = await listenerPids(db);
        return !ours.some((pid) => now.has(pid));
      }, "the listener backend to go away");
    } finally {
      await db.close();
    }
  });

  Deno.test(
    "postgresPubSub() fans events out to the other instances on PostgreSQL",
    sanitized,
    async (t) => {
      const db = openPostgres(url, { max: 2 });
      const publishVia = (text: string, params: unknown[]) => db.query(text, params);
      const received = { a: [] as SyncEvent[], b: [] as SyncEvent[] };
      const states = { a: [] as string[], b: [] as string[] };
      const instances: PubSub[] = [];
      try {
        const a = await postgresPubSub(url, publishVia, {
          onEvent: (e) => received.a.push(e),
          onState: (s) => states.a.push(s),
          maxBackoffMs: 200,
        });
        instances.push(a);
        const b = await postgresPubSub(url, publishVia, {
          onEvent: (e) => received.b.push(e),
          onState: (s) => states.b.push(s),
          maxBackoffMs: 200,
        });
        instances.push(b);
        assert.deepEqual(states, { a: ["listening"], b: ["listening"] });

        await t.step("an event published by A reaches B, not A itself", async () => {
          // Scoped to a fresh user: other instances on the same database may be publishing too.
          const user = `user-${crypto.randomUUID()}`;
          const mine = (events: SyncEvent[]) => events.filter((e) => e.userId === user);
          const fromA = event({ userId: user, clientId: "a" });
          await a.publish(fromA);
          await until(() => mine(received.b).length > 0, "B to receive A's event");
          assert.deepEqual(mine(received.b), [fromA]);

          // Notifications reach a listener in commit order: once A has B's later event, A's own
          // earlier one has been through A's listener too, and must have been filtered out.
          const fromB = event({ userId: user, clientId: "b" });
          await b.publish(fromB);
          await until(() => mine(received.a).length > 0, "A to receive B's event");
          assert.deepEqual(mine(received.a), [fromB]);
          assert.deepEqual(mine(received.b), [fromA], "B does not hear itself either");
        });

        await t.step("the listener comes back by itself after its backend is killed", async () => {
          const before = states.b.length;
          const [killed] = await db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM (
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'mana-sync-listener' AND datname = current_database()
           ) AS terminated`,
          );
          assert.ok(killed!.n >= 2, `terminated ${killed!.n} listener backends`);

          await until(() => states.b.slice(before).includes("listening"), "B to listen again");
          assert.deepEqual(states.b.slice(before), ["reconnecting", "listening"]);

          const marker = `after-kill-${crypto.randomUUID()}`;
          const reached = () => received.b.some((e) => e.tables.includes(marker));
          for (let i = 0; i < 100 && !reached(); i++) {
            await a.publish(event({ tables: [marker] }));
            await sleep(100);
          }
          assert.ok(reached(), "a publish from A reached B again within 10 s");
        });
      } finally {
        for (const instance of instances) await instance.close();
        await db.close();
      }
    },
  );
}
