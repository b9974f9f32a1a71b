/**
 * The plans of the per-push and per-page reads, inside a user's RLS transaction, on a table much
 * larger than the user's share: index scans whose conditions reach the record key and the cursor,
 * never a scan of everything. (The state read once filtered with `->>`, which is not leakproof, so
 * row-level security kept it out of the index condition: 0.9 s per push at a million changes.)
 */
import assert from "node:assert/strict";
import { withUser } from "../../src/store/db.ts";
import { READS } from "../../src/store/sync_store.ts";
import { testDatabases } from "../helpers/databases.ts";

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Index Cond"?: string;
  Plans?: PlanNode[];
}

/** A node without its children, for failure messages. */
const brief = ({ Plans: _, ...node }: PlanNode) => node;

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

const USERS = 50, RECORDS = 40_000, CHANGES = 40_000;

for (const database of testDatabases) {
  Deno.test(`reads use their indexes under row-level security on ${database.name}`, async (t) => {
    const db = await database.open();
    const run = crypto.randomUUID().slice(0, 8);
    const user = `plans-${run}-7`;
    try {
      // Written past RLS (the test connects as a superuser, as the service does): many users;
      // ours has about half of the log and of the records, far more than a page or a push touches.
      await db.exec(`
        INSERT INTO sync_records (user_id, app_id, table_name, record_id, fields)
        SELECT 'plans-${run}-' || CASE WHEN g % 2 = 0 THEN 7 ELSE g % ${USERS} END, 'todo',
               'tasks', 'r' || g, '{}'
        FROM generate_series(1, ${RECORDS}) g;
        INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data, client_id,
                                  created_at)
        SELECT gen_random_uuid(), 'todo', CASE WHEN g % 10 = 0 THEN 'lists' ELSE 'tasks' END,
               'r' || g, 'plans-${run}-' || CASE WHEN g % 2 = 0 THEN 7 ELSE g % ${USERS} END,
               'insert', '{}', 'laptop', now() + g * interval '1 microsecond'
        FROM generate_series(1, ${CHANGES}) g;
        ANALYZE sync_records;
        ANALYZE sync_changes;`);

      const explain = (sql: string, params: unknown[]) =>
        withUser(db, user, async (tx) => {
          const [row] = await tx.query<Record<string, unknown>>(
            `EXPLAIN (FORMAT JSON) ${sql}`,
            params,
          );
          const raw = Object.values(row!)[0];
          const parsed = (typeof raw === "string" ? JSON.parse(raw) : raw) as { Plan: PlanNode }[];
          return nodes(parsed[0]!.Plan);
        });
      const on = (plan: PlanNode[], table: string) =>
        plan.filter((n) => n["Relation Name"] === table);

      await t.step("the state read probes sync_records by the whole key", async () => {
        const keys = Array.from(
          { length: 200 },
          (_, i) => ({ a: "todo", t: "tasks", i: `r${i * 50 + 2}` }),
        );
        const plan = await explain(READS.loadState, [user, JSON.stringify(keys)]);
        // A plain index scan, or a bitmap scan whose index node carries the condition.
        const scans = plan.filter((n) =>
          n["Relation Name"] === "sync_records" || n["Index Name"]?.startsWith("sync_records")
        );
        assert.ok(scans.length > 0, JSON.stringify(plan.map(brief)));
        assert.ok(
          !scans.some((n) => n["Node Type"] === "Seq Scan"),
          JSON.stringify(plan.map(brief)),
        );
        const conditions = scans.flatMap((n) => n["Index Cond"] ?? []);
        assert.ok(conditions.length > 0, JSON.stringify(plan.map(brief)));
        for (const condition of conditions) assert.match(condition, /record_id/);
      });

      for (
        const [name, sql, extra] of [
          ["all tables", READS.pageAllTables, []],
          ["one table", READS.pageOneTable, ["tasks"]],
        ] as const
      ) {
        await t.step(
          `the page read (${name}) walks an index from the cursor, unsorted`,
          async () => {
            const since = "2000-01-01T00:00:00.000000Z";
            const plan = await explain(sql, [user, "todo", "phone", since, 1001, ...extra]);
            const scans = on(plan, "sync_changes");
            assert.ok(scans.length > 0, JSON.stringify(plan.map(brief)));
            for (const scan of scans) {
              assert.match(
                scan["Node Type"],
                /^Index (Only )?Scan$/,
                JSON.stringify(plan.map(brief)),
              );
              assert.match(scan["Index Cond"] ?? "", /created_at/, JSON.stringify(brief(scan)));
            }
            assert.ok(
              !plan.some((n) => n["Node Type"] === "Sort"),
              JSON.stringify(plan.map(brief)),
            );
          },
        );
      }
    } finally {
      try {
        await db.exec(`DELETE FROM sync_records WHERE user_id LIKE 'plans-${run}-%';
                       DELETE FROM sync_changes WHERE user_id LIKE 'plans-${run}-%'`);
      } finally {
        await db.close();
      }
    }
  });
}
