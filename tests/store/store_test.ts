/**
 * The store against real databases: PGlite always, PostgreSQL when the run has one. One suite,
 * run on each.
 */
import assert from "node:assert/strict";
import { openPostgres, withUser } from "../../src/store/db.ts";
import { loadMigrations, migrate } from "../../src/store/migrate.ts";
import { MIGRATIONS_DIR } from "../../src/store/open.ts";
import { createSyncStore, LOG_COLUMNS, type SyncStore } from "../../src/store/sync_store.ts";
import { type LogRow, toWire } from "../../src/sync/wire.ts";
import { type Change, parsePush } from "../../src/sync/change.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import { countRows, POSTGRES_URL, scratchPostgres, testDatabases } from "../helpers/databases.ts";
import { parsedPage } from "../helpers/pages.ts";

const RECEIVED_AT = "2026-01-01T00:00:00.000Z";

function push(
  store: SyncStore,
  userId: string,
  clientId: string,
  changes: unknown[],
  since = EPOCH_CURSOR,
) {
  const request = parsePush({ clientId, since, changes }, {});
  return store.push({ userId, appId: "todo", request, receivedAt: RECEIVED_AT, pageSize: 5000 })
    .then(parsedPage);
}

function pullAll(
  store: SyncStore,
  userId: string,
  clientId: string,
  table = "tasks",
  since = EPOCH_CURSOR,
) {
  return store.pull({ userId, appId: "todo", clientId, table, since, pageSize: 1000 })
    .then(parsedPage);
}

const task = (
  id: string,
  title: string,
  updatedAt = "2024-01-01T10:00:00.000Z",
  eventId?: string,
) => ({
  table: "tasks",
  id,
  op: "insert",
  data: { id, title, updatedAt },
  ...(eventId ? { eventId } : {}),
});

const count = countRows;

for (const database of testDatabases) {
  Deno.test(`store on ${database.name}`, async (t) => {
    const db = await database.open();
    const store = createSyncStore(db);
    try {
      await t.step("migrate() applies nothing the second time", async () => {
        assert.deepEqual(await migrate(db, await loadMigrations(MIGRATIONS_DIR)), []);
      });

      await t.step(
        "push() stores a batch and pull() returns it to another client, in order",
        async () => {
          const user = crypto.randomUUID();
          const result = await push(store, user, "laptop", [
            task("a", "one"),
            task("b", "two"),
            task("c", "three"),
          ]);
          assert.equal(result.stored, 3);
          assert.deepEqual(result.serverChanges, []);
          const page = await pullAll(store, user, "phone");
          assert.deepEqual(page.serverChanges.map((c) => c.id), ["a", "b", "c"]);
          assert.equal(page.hasMore, false);
          assert.equal(page.syncedUntil, result.syncedUntil);
          assert.deepEqual((await pullAll(store, user, "laptop")).serverChanges, []);
        },
      );

      await t.step("a batch that fails in the database leaves nothing behind", async () => {
        const user = crypto.randomUUID();
        const before = await push(store, user, "laptop", [task("a", "kept")]);
        const bad = parsePush(
          { clientId: "laptop", changes: [task("b", "x"), task("c", "y")] },
          {},
        );
        // The CHECK constraint on op rejects the second row: validation was bypassed on purpose.
        (bad.changes[1] as { op: string }).op = "upsert";
        await assert.rejects(
          store.push({
            userId: user,
            appId: "todo",
            request: bad,
            receivedAt: RECEIVED_AT,
            pageSize: 10,
          }),
        );
        assert.equal(await count(db, user), 1);
        assert.equal(await count(db, user, "sync_records"), 1);
        const page = await pullAll(store, user, "phone");
        assert.deepEqual(page.serverChanges.map((c) => c.id), ["a"]);
        assert.equal(page.syncedUntil, before.syncedUntil, "the clock did not move either");
      });

      await t.step("a retried batch with eventIds is stored once", async () => {
        const user = crypto.randomUUID();
        const ids = [crypto.randomUUID(), crypto.randomUUID()];
        const batch = [task("a", "one", undefined, ids[0]), task("b", "two", undefined, ids[1])];
        assert.equal((await push(store, user, "laptop", batch)).stored, 2);
        assert.equal((await push(store, user, "laptop", batch)).stored, 0);
        assert.equal(
          (await push(store, user, "laptop", [
            task("c", "x", undefined, ids[0]),
            task("c", "x", undefined, ids[0]),
          ]))
            .stored,
          0,
        );
        assert.equal(await count(db, user), 2);
        const page = await pullAll(store, user, "phone");
        assert.deepEqual(page.serverChanges.map((c) => c.eventId), ids);
      });

      await t.step("one eventId twice in one batch is stored once", async () => {
        const user = crypto.randomUUID();
        const id = crypto.randomUUID();
        const result = await push(store, user, "laptop", [
          task("a", "one", undefined, id),
          task("a", "two", undefined, id),
        ]);
        assert.equal(result.stored, 1);
        const page = await pullAll(store, user, "phone");
        assert.deepEqual(page.serverChanges.map((c) => c.data?.title), ["one"]);
      });

      await t.step("timestamps are echoed byte for byte", async () => {
        const user = crypto.randomUUID();
        const odd = "2024-01-01T12:05:00.1+02:00";
        await push(store, user, "laptop", [
          {
            table: "tasks",
            id: "a",
            op: "update",
            fields: { title: { value: "x", updatedAt: odd } },
          },
          { table: "tasks", id: "a", op: "delete", deletedAt: "2024-01-01T10:07:00Z" },
        ]);
        const [update, del] = (await pullAll(store, user, "phone")).serverChanges;
        assert.equal(update!.fields!.title!.updatedAt, odd);
        assert.equal(del!.deletedAt, "2024-01-01T10:07:00Z");
        assert.equal(del!.op, "delete");
      });

      await t.step("a page sends every stored row the way toWire() shapes it", async () => {
        const user = crypto.randomUUID();
        // Rows as the first version (or a hand edit) may have left them, written past the API.
        const rows: [string, string, string | null, string, number][] = [
          ["i1", "insert", '{"n": 12345678901234567890, "price": 1.50, "s": "a\\"b"}', "{}", 1],
          ["i2", "insert", null, "{}", 0],
          ["u1", "update", '{"title": "x", "done": true}', '{"title": "2024-01-01T10:05:30Z"}', 1],
          ["d1", "delete", '{"deletedAt": "2024-01-01T10:07:00+01:00"}', "{}", 1],
          ["d2", "delete", '{"deletedAt": 17}', "{}", 1],
          ["d3", "delete", null, "{}", 1],
        ];
        const stored = await withUser(db, user, async (tx) => {
          for (const [n, [id, op, data, times, version]] of rows.entries()) {
            await tx.query(
              `INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data,
                                         field_timestamps, client_id, schema_version, created_at)
               VALUES (gen_random_uuid(), 'todo', 'tasks', $1, $2, $3, $4::text::jsonb,
                       $5::text::jsonb, 'go', $6, now() + $7 * interval '1 microsecond')`,
              [id, user, op, data, times, version, n],
            );
          }
          return await tx.query<LogRow>(
            `SELECT ${LOG_COLUMNS} FROM sync_changes ORDER BY created_at`,
          );
        });
        const page = await store.pull({
          userId: user,
          appId: "todo",
          clientId: "phone",
          table: "tasks",
          since: EPOCH_CURSOR,
          pageSize: 1000,
        });
        assert.deepEqual(page.serverChanges.map((c) => JSON.parse(c)), stored.map(toWire));
        // An insert's data goes out as stored: no precision lost to a JavaScript number.
        assert.match(page.serverChanges[0]!, /"n": 12345678901234567890[,}]/);
        assert.match(page.serverChanges[0]!, /"price": 1.50[,}]/);
        assert.equal(JSON.parse(page.serverChanges[3]!).deletedAt, "2024-01-01T10:07:00+01:00");
      });

      await t.step(
        "field-level LWW state follows the seed's examples and reports conflicts",
        async () => {
          const user = crypto.randomUUID();
          const update = (field: string, value: unknown, updatedAt: string): Change | unknown => ({
            table: "tasks",
            id: "t1",
            op: "update",
            fields: { [field]: { value, updatedAt } },
          });
          await push(store, user, "A", [
            update("title", "Buy milk", "2024-01-01T10:05:00Z"),
            update("completed", true, "2024-01-01T10:06:00Z"),
          ]);
          const b = await push(store, user, "B", [
            update("title", "Buy eggs", "2024-01-01T10:05:30Z"),
          ]);
          assert.deepEqual(b.conflicts, []);
          const late = await push(store, user, "A", [
            update("title", "Buy bread", "2024-01-01T10:05:10Z"),
          ]);
          assert.deepEqual(late.conflicts, [{
            table: "tasks",
            id: "t1",
            field: "title",
            clientValue: "Buy bread",
            clientTimestamp: "2024-01-01T10:05:10Z",
            serverValue: "Buy eggs",
            serverTimestamp: "2024-01-01T10:05:30Z",
          }]);
          const [state] = await withUser(
            db,
            user,
            (tx) =>
              tx.query<{ fields: Record<string, { v: unknown }> }>(
                "SELECT fields FROM sync_records WHERE user_id = $1 AND record_id = 't1'",
                [user],
              ),
          );
          assert.equal(state!.fields.title!.v, "Buy eggs");
          assert.equal(state!.fields.completed!.v, true);
          // The log keeps every change, losers included.
          assert.equal(await count(db, user), 4);
        },
      );

      await t.step(
        "stamps are unique and increase across pushes; syncedUntil covers them",
        async () => {
          const user = crypto.randomUUID();
          const cursors: string[] = [];
          for (let i = 0; i < 5; i++) {
            const r = await push(store, user, "laptop", [task(`a${i}`, "x"), task(`b${i}`, "y")]);
            cursors.push(r.syncedUntil);
          }
          const rows = await withUser(db, user, (tx) =>
            tx.query<{ at: string }>(
              `SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at
             FROM sync_changes WHERE user_id = $1 ORDER BY created_at`,
              [user],
            ));
          const stamps = rows.map((r) => r.at);
          assert.equal(new Set(stamps).size, 10);
          assert.deepEqual([...cursors].sort(), cursors);
          for (let i = 0; i < 5; i++) {
            assert.equal(cursors[i], stamps[2 * i + 1], `push ${i} ends at its last stamp`);
          }
        },
      );

      await t.step("pull() pages with hasMore and a cursor at the last row", async () => {
        const user = crypto.randomUUID();
        await push(
          store,
          user,
          "laptop",
          Array.from({ length: 7 }, (_, i) => task(`r${i}`, `t${i}`)),
        );
        const seen: string[] = [];
        let since = EPOCH_CURSOR, pages = 0;
        for (;;) {
          const page = await store.pull({
            userId: user,
            appId: "todo",
            clientId: "phone",
            table: "tasks",
            since,
            pageSize: 3,
          });
          seen.push(...parsedPage(page).serverChanges.map((c) => c.id));
          pages++;
          since = page.syncedUntil;
          if (!page.hasMore) break;
        }
        assert.deepEqual(seen, ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
        assert.equal(pages, 3);
      });

      await t.step(
        "RLS: inside user A's transaction nothing of B is visible or writable",
        async () => {
          const a = crypto.randomUUID(), b = crypto.randomUUID();
          await push(store, a, "laptop", [task("a1", "mine")]);
          await push(store, b, "laptop", [task("b1", "theirs"), task("b2", "theirs")]);
          await withUser(db, a, async (tx) => {
            const [who] = await tx.query<{ role: string }>("SELECT current_user AS role");
            assert.equal(who!.role, "mana_sync_user");
            for (const table of ["sync_changes", "sync_records", "sync_clock"]) {
              const rows = await tx.query<{ user_id: string }>(`SELECT user_id FROM ${table}`);
              assert.ok(rows.length > 0, `${table} shows A's own rows`);
              assert.ok(rows.every((r) => r.user_id === a), `${table} shows only A's rows`);
            }
          });
          await assert.rejects(
            withUser(db, a, (tx) =>
              tx.query(
                `INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, client_id)
               VALUES (gen_random_uuid(), 'todo', 'tasks', 'x', $1, 'insert', 'evil')`,
                [b],
              )),
            /row-level security/,
          );
          await assert.rejects(
            withUser(
              db,
              a,
              (tx) =>
                tx.query(`INSERT INTO sync_clock (user_id, last_at) VALUES ($1, now())`, [
                  crypto.randomUUID(),
                ]),
            ),
            /row-level security/,
          );
          await assert.rejects(
            withUser(
              db,
              a,
              (tx) =>
                tx.query(`UPDATE sync_records SET fields = '{}' WHERE user_id = $1 RETURNING 1`, [
                  b,
                ])
                  .then((rows) => {
                    if (rows.length === 0) {
                      throw new Error("row-level security: no row of B was visible to update");
                    }
                  }),
            ),
            /row-level security/,
          );
          assert.equal(await count(db, b), 2);
        },
      );

      await t.step("RLS holds although the service connects as a superuser", async () => {
        const [row] = await db.query<{ su: string }>(
          "SELECT current_setting('is_superuser') AS su",
        );
        assert.equal(row!.su, "on", "this test is only meaningful for a superuser connection");
        const user = crypto.randomUUID();
        await push(store, user, "laptop", [task("a", "x")]);
        // Without the user setting, the role sees nothing at all.
        const rows = await db.transaction(async (tx) => {
          await tx.query("SELECT set_config('role', 'mana_sync_user', true)");
          return await tx.query("SELECT 1 FROM sync_changes");
        });
        assert.equal(rows.length, 0);
      });
    } finally {
      await db.close();
    }
  });
}

if (POSTGRES_URL) {
  Deno.test("migrate() run by two instances at the same moment applies each migration once", async () => {
    const scratch = await scratchPostgres();
    const a = openPostgres(scratch.url, { max: 1 }), b = openPostgres(scratch.url, { max: 1 });
    try {
      const migrations = await loadMigrations(MIGRATIONS_DIR);
      const [ra, rb] = await Promise.all([migrate(a, migrations), migrate(b, migrations)]);
      assert.deepEqual([...ra, ...rb].sort(), migrations.map((m) => m.version));
      const rows = await a.query<{ version: number }>(
        "SELECT version FROM schema_migrations ORDER BY version",
      );
      assert.deepEqual(rows.map((r) => r.version), migrations.map((m) => m.version));
    } finally {
      await a.close();
      await b.close();
      await scratch.drop();
    }
  });
}
