/**
 * `Sql.cursor()` on PGlite (DECLARE/FETCH) and on PostgreSQL (postgres.js `.cursor(n)`).
 */
import assert from "node:assert/strict";
import { testDatabases } from "../helpers/databases.ts";

const SERIES = "SELECT g AS n, $2::text AS tag FROM generate_series(1, $1::int) g ORDER BY g";

for (const database of testDatabases) {
  Deno.test(`cursor() on ${database.name}`, async (t) => {
    const db = await database.open();
    try {
      await t.step(
        "cursor() yields every row once, in order, in batches of batchSize",
        async () => {
          const batches = await db.transaction(async (tx) => {
            const seen: { n: number; tag: string }[][] = [];
            for await (const batch of tx.cursor<{ n: number; tag: string }>(SERIES, [10, "x"], 4)) {
              seen.push(batch);
            }
            return seen;
          });
          assert.deepEqual(batches.map((b) => b.length), [4, 4, 2]);
          assert.deepEqual(batches.flat().map((r) => r.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
          assert.ok(batches.flat().every((r) => r.tag === "x"));
        },
      );

      await t.step("cursor() over an empty result yields no batch", async () => {
        const batches = await db.transaction(async (tx) => {
          let count = 0;
          for await (const _ of tx.cursor(SERIES, [0, "x"], 4)) count++;
          return count;
        });
        assert.equal(batches, 0);
      });

      await t.step("cursor() left early leaves the transaction usable", async () => {
        const after = await db.transaction(async (tx) => {
          for await (const batch of tx.cursor<{ n: number }>(SERIES, [100, "x"], 3)) {
            assert.deepEqual(batch.map((r) => r.n), [1, 2, 3]);
            break;
          }
          const [row] = await tx.query<{ one: number }>("SELECT 1 AS one");
          // A second cursor in the same transaction after the first was left.
          let rows = 0;
          for await (const batch of tx.cursor(SERIES, [5, "y"], 2)) rows += batch.length;
          return { one: row!.one, rows };
        });
        assert.deepEqual(after, { one: 1, rows: 5 });
      });

      await t.step("cursor() refuses a batch size that is not a positive integer", async () => {
        await db.transaction((tx) => {
          for (const size of [0, -1, 1.5]) {
            assert.throws(() => tx.cursor(SERIES, [1, "x"], size), RangeError);
          }
          return Promise.resolve();
        });
      });
    } finally {
      await db.close();
    }
  });
}
