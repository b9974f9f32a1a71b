/**
 * The PostgreSQL pool's bounds and its handling of lost connections, against real PostgreSQL
 * reached through a TCP proxy the test cuts (the shared PostgreSQL is never touched).
 */
import assert from "node:assert/strict";
import { type Db, openPostgres, type Sql } from "../../src/store/db.ts";
import { isTransientDbError } from "../../src/store/errors.ts";
import { POSTGRES_URL, scratchPostgres } from "../helpers/databases.ts";
import { startTcpProxy, type TcpProxy } from "../helpers/tcp_proxy.ts";

const TIMEOUT_MS = 500;
/** Generous: what the bound rules out is a hang (postgres.js alone would wait for TCP). */
const SLACK_MS = 5000;

async function rejection(run: () => Promise<unknown>): Promise<{ error: unknown; ms: number }> {
  const started = performance.now();
  try {
    await run();
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
  throw new Error("Expected a rejection");
}

Deno.test({
  name: "openPostgres() with timeoutMs",
  ignore: !POSTGRES_URL,
  async fn(t) {
    const scratch = await scratchPostgres();
    const target = new URL(scratch.url);
    const proxy: TcpProxy = startTcpProxy({
      hostname: target.hostname,
      port: Number(target.port || 5432),
    });
    const dropped: unknown[] = [];
    const open = (max: number): Db =>
      openPostgres(proxy.via(scratch.url), {
        max,
        connectTimeoutSeconds: 1,
        timeoutMs: TIMEOUT_MS,
        onDrop: (reason) => dropped.push(reason),
      });
    const direct = openPostgres(scratch.url, { max: 1 });
    try {
      await direct.exec("CREATE TABLE t (x int)");

      await t.step(
        "a statement on a silenced connection fails in time; the next gets a new one",
        async () => {
          const db = open(1);
          try {
            await db.query("SELECT 1");
            proxy.cut("blackhole");
            const { error, ms } = await rejection(() => db.query("SELECT 1"));
            assert.equal((error as { code?: string }).code, "DATABASE_TIMEOUT");
            assert.ok(isTransientDbError(error));
            assert.ok(ms <= TIMEOUT_MS + SLACK_MS, `${ms} ms`);
            assert.equal(dropped.length, 1);
            await proxy.restore();
            // The silenced connection stays silent: only a new one can answer.
            assert.deepEqual([...await db.query("SELECT 2 AS n")], [{ n: 2 }]);
          } finally {
            await proxy.restore();
            await db.close();
          }
        },
      );

      await t.step("connecting through a black hole fails in time", async () => {
        const db = open(1);
        try {
          proxy.cut("blackhole");
          const { error, ms } = await rejection(() => db.transaction((tx) => tx.query("SELECT 1")));
          assert.ok(isTransientDbError(error), String(error));
          assert.ok(ms <= TIMEOUT_MS + SLACK_MS, `${ms} ms`);
          await proxy.restore();
          assert.deepEqual([...await db.transaction((tx) => tx.query("SELECT 3 AS n"))], [{
            n: 3,
          }]);
        } finally {
          await proxy.restore();
          await db.close();
        }
      });

      await t.step(
        "a request that waited for most of its budget is shed unsent, its connection kept",
        async () => {
          const db = open(1);
          const droppedBefore = dropped.length;
          let ran = false;
          const held = db.transaction(async (tx) => {
            await tx.query("SELECT 1");
            await new Promise((r) => setTimeout(r, TIMEOUT_MS * 0.9));
          });
          try {
            await new Promise((r) => setTimeout(r, 10));
            const { error } = await rejection(() =>
              db.transaction(async (tx) => {
                ran = true;
                return await tx.query("SELECT 1");
              })
            );
            assert.equal((error as { code?: string }).code, "DATABASE_TIMEOUT");
            assert.equal(ran, false, "nothing was sent");
            await held;
            assert.equal(dropped.length, droppedBefore, "no connection was given up");
            assert.equal((await db.query<{ n: number }>("SELECT 2 AS n"))[0]?.n, 2);
          } finally {
            await held.catch(() => {});
            await db.close();
          }
        },
      );

      await t.step("waiting for a free connection is bounded", async () => {
        const db = open(1);
        let release!: () => void;
        const held = db.transaction(async (tx) => {
          await tx.query("SELECT 1");
          await new Promise<void>((r) => release = r);
        });
        try {
          while (!release) await new Promise((r) => setTimeout(r, 10));
          const { error, ms } = await rejection(() => db.query("SELECT 1"));
          assert.equal((error as { code?: string }).code, "DATABASE_TIMEOUT");
          assert.ok(ms <= TIMEOUT_MS + SLACK_MS, `${ms} ms`);
        } finally {
          release();
          await held;
          await db.close();
        }
      });

      await t.step("no statement of a transaction runs after its connection was lost", async () => {
        const db = open(2);
        try {
          const { error } = await rejection(() =>
            db.transaction(async (tx) => {
              await tx.query("INSERT INTO t VALUES (1)");
              proxy.cut("refuse");
              await proxy.restore(); // a reconnection would succeed now
              await new Promise((r) => setTimeout(r, 100));
              await tx.query("INSERT INTO t VALUES (2)");
            })
          );
          assert.ok(isTransientDbError(error), String(error));
          assert.deepEqual([...await direct.query("SELECT x FROM t")], []);
          // The pool serves again.
          await db.transaction((tx) => tx.query("INSERT INTO t VALUES (3)"));
          assert.deepEqual([...await direct.query("SELECT x FROM t")], [{ x: 3 }]);
        } finally {
          await proxy.restore();
          await db.close();
        }
      });

      await t.step("a transaction's statements are refused once it ended", async () => {
        const db = open(1);
        try {
          let leaked: Sql | undefined;
          await db.transaction(async (tx) => {
            leaked = tx;
            await tx.query("SELECT 1");
          });
          await assert.rejects(leaked!.query("SELECT 1"), /after its transaction ended/);
        } finally {
          await db.close();
        }
      });

      await t.step("a failed statement fails its transaction even when caught", async () => {
        const db = open(1);
        try {
          await direct.exec("TRUNCATE t");
          await assert.rejects(db.transaction(async (tx) => {
            await tx.query("INSERT INTO t VALUES (4)");
            await tx.query("SELECT 1/0").catch(() => {});
          }));
          assert.deepEqual([...await direct.query("SELECT x FROM t")], []);
          // The connection was rolled back, not lost: it serves the next transaction.
          await db.transaction((tx) => tx.query("INSERT INTO t VALUES (5)"));
          assert.deepEqual([...await direct.query("SELECT x FROM t")], [{ x: 5 }]);
        } finally {
          await db.close();
        }
      });
    } finally {
      await direct.close();
      await proxy.close();
      await scratch.drop();
    }
  },
});

Deno.test({
  name: "openPostgres() plans every statement for its parameters (no generic plans)",
  ignore: !POSTGRES_URL,
  async fn() {
    // A generic plan of the state read or the page read does not know the user and scans all of
    // that user's rows (bench/bench.ts, cost per change): the connections must refuse them.
    const db = openPostgres(POSTGRES_URL!, { max: 1 });
    try {
      const [row] = await db.transaction((tx) =>
        tx.query<{ plan_cache_mode: string }>("SHOW plan_cache_mode")
      );
      assert.equal(row?.plan_cache_mode, "force_custom_plan");
    } finally {
      await db.close();
    }
  },
});
