/**
 * Read-ahead of pulls: the bookkeeping against a fake store, then the cursor guarantee against the
 * real databases while another device pushes.
 */
import assert from "node:assert/strict";
import { withUser } from "../../src/store/db.ts";
import { withReadAhead } from "../../src/store/read_ahead.ts";
import {
  createSyncStore,
  type Page,
  type PullInput,
  type SyncStore,
} from "../../src/store/sync_store.ts";
import { parsePush } from "../../src/sync/change.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import { testDatabases } from "../helpers/databases.ts";

/** A store whose pages are cursors "c1", "c2", …: page n ends at cursor n; `last` pages exist. */
function fakeStore(last = 3) {
  const calls: PullInput[] = [];
  let fail: string | undefined;
  const store: SyncStore = {
    push: () => Promise.reject(new Error("not used")),
    pull(input) {
      calls.push(input);
      if (input.since === fail) {
        fail = undefined;
        return Promise.reject(new Error("database down"));
      }
      const n = input.since === EPOCH_CURSOR ? 1 : Number(input.since.slice(1)) + 1;
      const page: Page = {
        serverChanges: [JSON.stringify({ n })],
        syncedUntil: `c${n}`,
        hasMore: n < last,
      };
      return Promise.resolve(page);
    },
  };
  /** The next read from `since` fails. */
  return { store, calls, failFrom: (since: string) => (fail = since) };
}

const input = (since = EPOCH_CURSOR, overrides: Partial<PullInput> = {}): PullInput => ({
  userId: "u",
  appId: "todo",
  clientId: "phone",
  table: "tasks",
  since,
  pageSize: 1,
  ...overrides,
});

const settle = () => new Promise((r) => setTimeout(r, 0));

Deno.test("withReadAhead() reads the page after a full one and serves it once", async () => {
  const fake = fakeStore(3);
  const store = withReadAhead(fake.store);
  assert.equal((await store.pull(input())).syncedUntil, "c1");
  assert.deepEqual(fake.calls.map((c) => c.since), [EPOCH_CURSOR, "c1"], "c1 read ahead");
  assert.deepEqual(await store.pull(input("c1")), {
    serverChanges: ['{"n":2}'],
    syncedUntil: "c2",
    hasMore: true,
  });
  assert.deepEqual(fake.calls.map((c) => c.since), [EPOCH_CURSOR, "c1", "c2"]);
  const last = await store.pull(input("c2"));
  assert.equal(last.hasMore, false);
  await settle();
  assert.equal(fake.calls.length, 3, "nothing is read after the last page");
  assert.deepEqual(store.stats(), { hits: 2, wasted: 0, held: 0 });
  await store.pull(input("c2"));
  assert.equal(fake.calls.length, 4, "a page is served once; the same pull again reads");
});

Deno.test("withReadAhead() serves a page only to the same user, app, client, table and cursor", async () => {
  for (
    const other of [
      { userId: "v" },
      { appId: "notes" },
      { clientId: "laptop" },
      { table: "lists" },
      { pageSize: 2 },
    ]
  ) {
    const fake = fakeStore(3);
    const store = withReadAhead(fake.store);
    await store.pull(input());
    await store.pull(input("c1", other));
    assert.deepEqual(fake.calls[2], input("c1", other), `read for ${JSON.stringify(other)}`);
    assert.deepEqual(store.stats(), { hits: 0, wasted: 0, held: 2 });
  }
  const fake = fakeStore(3);
  const store = withReadAhead(fake.store);
  await store.pull(input());
  await store.pull(input("c0"));
  assert.equal(fake.calls.at(-1)!.since, "c0", "not served for another cursor");
});

Deno.test("withReadAhead() lets go of a page nobody takes within maxAgeMs", async () => {
  const fake = fakeStore(5);
  const store = withReadAhead(fake.store, { maxAgeMs: 20 });
  await store.pull(input());
  assert.deepEqual(store.stats(), { hits: 0, wasted: 0, held: 1 });
  await new Promise((r) => setTimeout(r, 60));
  assert.deepEqual(store.stats(), { hits: 0, wasted: 1, held: 0 });
  await store.pull(input("c1"));
  assert.deepEqual(
    fake.calls.map((c) => c.since),
    [EPOCH_CURSOR, "c1", "c1", "c2"],
    "the page older than maxAgeMs is not served: c1 is read again",
  );
  assert.deepEqual(store.stats(), { hits: 0, wasted: 1, held: 1 });
});

Deno.test("withReadAhead() never serves a failed read", async () => {
  const fake = fakeStore(3);
  const store = withReadAhead(fake.store);
  fake.failFrom("c1"); // the read ahead after the first page
  await store.pull(input());
  assert.equal((await store.pull(input("c1"))).syncedUntil, "c2");
  assert.deepEqual(fake.calls.map((c) => c.since), [EPOCH_CURSOR, "c1", "c1", "c2"]);
  assert.deepEqual(store.stats(), { hits: 0, wasted: 1, held: 1 });
});

Deno.test("withReadAhead() reads nothing ahead while busy, and keeps at most maxPages", async () => {
  let busy = true;
  const fake = fakeStore(10);
  const store = withReadAhead(fake.store, { busy: () => busy, maxPages: 2 });
  await store.pull(input());
  assert.equal(fake.calls.length, 1, "busy: nothing read ahead");
  busy = false;
  for (const clientId of ["a", "b", "c"]) await store.pull(input(EPOCH_CURSOR, { clientId }));
  assert.equal(fake.calls.length, 7, "three pulls, three reads ahead");
  assert.deepEqual(store.stats(), { hits: 0, wasted: 1, held: 2 }, "a's page dropped for c's");
  await store.pull(input("c1", { clientId: "c" }));
  assert.equal(store.stats().hits, 1, "c's page was kept");
  const reads = fake.calls.length;
  await store.pull(input("c1", { clientId: "a" }));
  assert.deepEqual(fake.calls[reads], input("c1", { clientId: "a" }), "a's page is read again");
});

for (const database of testDatabases) {
  Deno.test(
    `withReadAhead() on ${database.name}: a device paging while another pushes sees every change once`,
    async () => {
      const db = await database.open();
      const store = withReadAhead(createSyncStore(db), { maxAgeMs: 60_000 });
      const user = crypto.randomUUID();
      const push = (n: number) =>
        store.push({
          userId: user,
          appId: "todo",
          request: parsePush({
            clientId: "laptop",
            changes: Array.from({ length: 7 }, (_, i) => ({
              table: "tasks",
              id: `r${n}-${i}`,
              op: "insert",
              data: { n, i },
            })),
          }, {}),
          receivedAt: new Date().toISOString(),
          pageSize: 1,
        });
      try {
        for (let n = 0; n < 5; n++) await push(n);
        const seen: string[] = [];
        let since = EPOCH_CURSOR, pushes = 5;
        for (let pulls = 0; pulls < 1000; pulls++) {
          const page = await store.pull({
            userId: user,
            appId: "todo",
            clientId: "phone",
            table: "tasks",
            since,
            pageSize: 4,
          });
          seen.push(...page.serverChanges.map((c) => JSON.parse(c).eventId as string));
          since = page.syncedUntil;
          // The laptop keeps pushing while the phone pages (and while pages are read ahead).
          if (pushes < 15) await push(pushes++);
          else if (!page.hasMore) break;
        }
        const stored = await withUser(
          db,
          user,
          (tx) => tx.query<{ id: string }>(`SELECT id::text FROM sync_changes ORDER BY created_at`),
        );
        assert.equal(stored.length, 105);
        assert.deepEqual(seen, stored.map((r) => r.id), "every change once, in commit order");
        assert.ok(store.stats().hits > 0, "pages were read ahead and served");
      } finally {
        await db.close();
      }
    },
  );
}
