/**
 * The backup store on PGlite and PostgreSQL: the log read through a cursor in the user's
 * transaction, and the import through the push's write path.
 */
import assert from "node:assert/strict";
import { type ArchivedEvent, parseEventLine } from "../../src/backup/reader.ts";
import { eventLine } from "../../src/backup/writer.ts";
import { createBackupStore } from "../../src/store/backup_store.ts";
import { type Db, withUser } from "../../src/store/db.ts";
import { type ChangeEntry, createSyncStore } from "../../src/store/sync_store.ts";
import { parsePush } from "../../src/sync/change.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import type { LogRow } from "../../src/sync/wire.ts";
import { countRows, testDatabases } from "../helpers/databases.ts";
import { parsedPage } from "../helpers/pages.ts";

const RECEIVED_AT = "2026-01-01T00:00:00.000Z";

const insert = (id: string, title: string, updatedAt = "2024-01-01T10:00:00.000Z") => ({
  table: "tasks",
  id,
  op: "insert",
  data: { id, title, updatedAt },
});
const update = (id: string, field: string, value: unknown, updatedAt: string) => ({
  table: "tasks",
  id,
  op: "update",
  fields: { [field]: { value, updatedAt } },
});

const count = countRows;

async function stateOf(db: Db, userId: string) {
  return await withUser(
    db,
    userId,
    (tx) =>
      tx.query<{ app: string; table: string; id: string; fields: unknown }>(
        `SELECT app_id AS app, table_name AS "table", record_id AS id, fields FROM sync_records
       WHERE user_id = $1 ORDER BY app_id, table_name, record_id`,
        [userId],
      ),
  );
}

/** A log row as an import entry, through the archive's own line format. */
function entryOf(row: LogRow, eventId = row.eventId): ChangeEntry {
  const event: ArchivedEvent = parseEventLine(eventLine({ ...row, eventId }), 1);
  return {
    appId: event.appId,
    clientId: event.clientId,
    receivedAt: event.createdAt,
    change: event.change,
  };
}

async function* iterate<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const item of items) yield item;
}

for (const database of testDatabases) {
  Deno.test(`backup store on ${database.name}`, async (t) => {
    const db = await database.open();
    const sync = createSyncStore(db);
    const backup = createBackupStore(db, { batchSize: 3 });
    const push = (userId: string, clientId: string, changes: unknown[], appId = "todo") =>
      sync.push({
        userId,
        appId,
        request: parsePush({ clientId, since: EPOCH_CURSOR, changes }, {}),
        receivedAt: RECEIVED_AT,
        pageSize: 10,
      });
    const readAll = (userId: string) =>
      backup.readLog(userId, async (rows) => {
        const all: LogRow[] = [];
        for await (const row of rows) all.push(row);
        return all;
      });

    try {
      await t.step(
        "readLog() yields only the user's log, in commit order, timestamps as text",
        async () => {
          const [alice, bob] = [crypto.randomUUID(), crypto.randomUUID()];
          await push(alice, "laptop", [insert("a1", "one"), insert("a2", "two")]);
          await push(bob, "laptop", [insert("b1", "bob's")]);
          await push(alice, "phone", [{ table: "events", id: "e1", op: "delete" }], "calendar");
          await push(alice, "laptop", [
            update("a1", "done", true, "2024-01-01T10:06:00.123456Z"),
            insert("a3", "three"),
          ]);
          const rows = await readAll(alice);
          assert.deepEqual(rows.map((r) => [r.appId, r.clientId, r.id, r.op]), [
            ["todo", "laptop", "a1", "insert"],
            ["todo", "laptop", "a2", "insert"],
            ["calendar", "phone", "e1", "delete"],
            ["todo", "laptop", "a1", "update"],
            ["todo", "laptop", "a3", "insert"],
          ]);
          assert.ok(
            rows.every((r) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(r.createdAt)),
          );
          assert.deepEqual(
            rows.map((r) => r.createdAt),
            rows.map((r) => r.createdAt).toSorted(),
          );
          assert.deepEqual(rows[3]!.fieldTimestamps, { done: "2024-01-01T10:06:00.123456Z" });
          assert.deepEqual((await readAll(bob)).map((r) => r.id), ["b1"]);
          assert.deepEqual(await readAll(crypto.randomUUID()), []);
        },
      );

      await t.step(
        "readLog() returns legacy rows with the schema version they were stored with",
        async () => {
          const user = crypto.randomUUID();
          await withUser(db, user, (tx) =>
            tx.query(
              `INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data,
                                       client_id, schema_version)
             VALUES (gen_random_uuid(), 'todo', 'tasks', 'old', $1, 'insert', '{"id":"old"}', 'go', 0)`,
              [user],
            ));
          const [row] = await readAll(user);
          assert.equal(row!.schemaVersion, 0);
          assert.equal(JSON.parse(eventLine(row!)).schemaVersion, 1);
        },
      );

      await t.step("readLog() left early closes its cursor and ends the transaction", async () => {
        const user = crypto.randomUUID();
        await push(user, "laptop", Array.from({ length: 10 }, (_, i) => insert(`r${i}`, "x")));
        const first = await backup.readLog(user, async (rows) => {
          for await (const row of rows) return row.id;
        });
        assert.equal(first, "r0");
        // The database is free for the next transaction (PGlite has one connection).
        assert.equal((await readAll(user)).length, 10);
      });

      await t.step(
        "importChanges() replays a log under its eventIds, apps and clients, once",
        async () => {
          const [source, target] = [crypto.randomUUID(), crypto.randomUUID()];
          await push(source, "laptop", [insert("t1", "Buy milk"), insert("t2", "Walk")]);
          await push(source, "phone", [
            update("t1", "title", "Buy eggs", "2024-01-01T10:05:30.000Z"),
            { table: "tasks", id: "t2", op: "delete", deletedAt: "2024-01-01T10:07:00.000Z" },
          ]);
          await push(source, "phone", [insert("n1", "note")], "notes");
          const log = await readAll(source);
          // eventIds are unique across users: the target gets fresh ones (as a fresh database would).
          const ids = log.map(() => crypto.randomUUID());
          const entries = log.map((row, i) => entryOf(row, ids[i]));

          const result = await backup.importChanges(target, iterate(entries));
          assert.equal(result.read, 5);
          assert.equal(result.stored, 5);
          assert.deepEqual(Object.fromEntries(result.touched), {
            todo: ["tasks"],
            notes: ["tasks"],
          });
          const imported = await readAll(target);
          assert.deepEqual(imported.map((r) => r.eventId), ids);
          assert.deepEqual(
            imported.map((r) => [r.appId, r.clientId, r.op, r.data, r.fieldTimestamps]),
            log.map((r) => [r.appId, r.clientId, r.op, r.data, r.fieldTimestamps]),
          );
          assert.ok(imported[0]!.createdAt > log.at(-1)!.createdAt, "restamped at import time");
          // The LWW state is the one the pushes built (same values, times and client ids).
          assert.deepEqual(
            (await stateOf(db, target)).map((r) => [r.app, r.table, r.id, r.fields]),
            (await stateOf(db, source)).map((r) => [r.app, r.table, r.id, r.fields]),
          );
          // Devices see the replayed changes as other clients' changes.
          const page = await sync.pull({
            userId: target,
            appId: "todo",
            clientId: "laptop",
            table: "tasks",
            since: EPOCH_CURSOR,
            pageSize: 100,
          });
          assert.deepEqual(
            parsedPage(page).serverChanges.map((c) => c.eventId),
            ids.slice(2, 4),
          );

          const again = await backup.importChanges(target, iterate(entries));
          assert.deepEqual([again.read, again.stored, again.touched.size], [5, 0, 0]);
          assert.equal(await count(db, target), 5);
        },
      );

      await t.step(
        "importChanges() is one transaction: a change that fails leaves nothing",
        async () => {
          const user = crypto.randomUUID();
          const entries = Array.from({ length: 8 }, (_, i) => ({
            appId: "todo",
            clientId: "laptop",
            receivedAt: RECEIVED_AT,
            change: parsePush({ clientId: "x", changes: [insert(`r${i}`, "x")] }, {}).changes[0]!,
          }));
          // Past two full batches of 3; the CHECK constraint on op refuses it.
          (entries[7]!.change as { op: string }).op = "upsert";
          await assert.rejects(backup.importChanges(user, iterate(entries)));
          for (const table of ["sync_changes", "sync_records", "sync_clock"]) {
            assert.equal(await count(db, user, table), 0, table);
          }
        },
      );
    } finally {
      await db.close();
    }
  });
}
