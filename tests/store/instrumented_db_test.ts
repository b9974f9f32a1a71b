/**
 * instrumentDb() over real databases: work in flight, and errors by kind (a refused connection is
 * transient, a failed statement is not, an error thrown by the caller is not the database's).
 */
import assert from "node:assert/strict";
import { openPostgres } from "../../src/store/db.ts";
import { dbErrorKind, instrumentDb } from "../../src/store/instrumented_db.ts";
import { badRequest } from "../../src/sync/errors.ts";
import { testDatabases } from "../helpers/databases.ts";

for (const database of testDatabases) {
  Deno.test(`instrumentDb() counts work in flight and errors by kind (${database.name})`, async () => {
    const raw = await database.open();
    const { db, stats } = instrumentDb(raw, 3);
    try {
      assert.deepEqual(stats(), { poolMax: 3, inFlight: 0, errors: { transient: 0, other: 0 } });

      const inside = Promise.withResolvers<void>();
      const release = Promise.withResolvers<void>();
      const tx = db.transaction(async (tx) => {
        await tx.query("SELECT 1");
        inside.resolve();
        await release.promise;
        return 42;
      });
      await inside.promise;
      assert.equal(stats().inFlight, 1, "the open transaction");
      const query = db.query("SELECT 1 AS one");
      assert.equal(stats().inFlight, 2, "a statement waiting next to it");
      release.resolve();
      assert.equal(await tx, 42);
      assert.deepEqual([...await query], [{ one: 1 }]);
      assert.equal(stats().inFlight, 0);

      await assert.rejects(db.query("SELEC 1"), (e) => dbErrorKind(e) === "other");
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query("SELECT 1/0");
        }),
        (e: { code?: string }) => e.code === "22012",
      );
      // A client error thrown inside a transaction rolls it back, but is no database error.
      await assert.rejects(
        db.transaction(() => Promise.reject(badRequest("invalid_change", "Cannot apply change 0"))),
        /Cannot apply change 0/,
      );
      assert.deepEqual(stats(), { poolMax: 3, inFlight: 0, errors: { transient: 0, other: 2 } });
      assert.equal(db.kind, raw.kind);
    } finally {
      await db.close();
    }
  });
}

Deno.test("instrumentDb() counts a refused connection as transient", async () => {
  // Nothing listens on port 1: postgres.js fails with ECONNREFUSED.
  const { db, stats } = instrumentDb(
    openPostgres("postgresql://postgres@127.0.0.1:1/none", { max: 1 }),
    1,
  );
  try {
    await assert.rejects(db.query("SELECT 1"), (e) => dbErrorKind(e) === "transient");
    await assert.rejects(db.transaction((tx) => tx.query("SELECT 1")));
    assert.deepEqual(stats().errors, { transient: 2, other: 0 });
    assert.equal(stats().inFlight, 0);
  } finally {
    await db.close();
  }
});

Deno.test("dbErrorKind() tells transient, other and not-the-database's apart", () => {
  assert.equal(dbErrorKind(Object.assign(new Error("x"), { code: "57P01" })), "transient");
  assert.equal(
    dbErrorKind(Object.assign(new Error("x"), { code: "CONNECTION_CLOSED" })),
    "transient",
  );
  assert.equal(dbErrorKind(Object.assign(new Error("x"), { code: "23505" })), "other");
  assert.equal(dbErrorKind(badRequest("invalid_change", "no")), undefined);
  assert.equal(dbErrorKind(new Error("plain")), undefined);
  assert.equal(dbErrorKind(undefined), undefined);
});
