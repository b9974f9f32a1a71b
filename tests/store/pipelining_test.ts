/**
 * Statements a transaction issues without awaiting: they run in the order issued, and a write
 * nobody awaited is committed with the transaction or, when it fails, fails the transaction.
 * The push path relies on both (one round trip for insert, state read and page read; the state
 * save goes out with the COMMIT).
 */
import assert from "node:assert/strict";
import { testDatabases } from "../helpers/databases.ts";

const TABLE = `pipelining_${crypto.randomUUID().replaceAll("-", "")}`;

for (const database of testDatabases) {
  Deno.test(`transactions with statements not awaited on ${database.name}`, async (t) => {
    const db = await database.open();
    await db.exec(`CREATE TABLE ${TABLE} (k text PRIMARY KEY, n int NOT NULL)`);
    const rows = async (k: string) =>
      (await db.query<{ n: number }>(`SELECT n FROM ${TABLE} WHERE k = $1`, [k])).map((r) => r.n);
    try {
      await t.step("statements issued without awaiting run in the order issued", async () => {
        const seen = await db.transaction(async (tx) => {
          const set = tx.query("SELECT set_config('app.pipelining', $1, true)", ["first"]);
          const read = tx.query<{ v: string }>("SELECT current_setting('app.pipelining') AS v");
          const reset = tx.query("SELECT set_config('app.pipelining', $1, true)", ["second"]);
          const again = tx.query<{ v: string }>("SELECT current_setting('app.pipelining') AS v");
          await Promise.all([set, reset]);
          return [(await read)[0]!.v, (await again)[0]!.v];
        });
        assert.deepEqual(seen, ["first", "second"]);
      });

      await t.step("a write not awaited is committed with the transaction", async () => {
        await db.transaction((tx) => {
          tx.query(`INSERT INTO ${TABLE} VALUES ($1, 1)`, ["kept"]).catch(() => {});
          return Promise.resolve();
        });
        assert.deepEqual(await rows("kept"), [1]);
      });

      await t.step(
        "a write not awaited that fails fails the transaction: none of it stays",
        async () => {
          await assert.rejects(
            db.transaction(async (tx) => {
              await tx.query(`INSERT INTO ${TABLE} VALUES ($1, 1)`, ["before"]);
              // NOT NULL violated: the transaction is told only by the COMMIT that follows.
              tx.query(`INSERT INTO ${TABLE} VALUES ($1, NULL)`, ["bad"]).catch(() => {});
              return "returned";
            }),
          );
          assert.deepEqual(await rows("before"), []);
          assert.deepEqual(await rows("bad"), []);
          // The database is usable afterwards.
          await db.transaction((tx) => tx.query(`INSERT INTO ${TABLE} VALUES ($1, 2)`, ["after"]));
          assert.deepEqual(await rows("after"), [2]);
        },
      );
    } finally {
      await db.exec(`DROP TABLE ${TABLE}`);
      await db.close();
    }
  });
}
