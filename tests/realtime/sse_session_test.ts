import assert from "node:assert/strict";
import { Hub, type SyncEvent } from "../../src/realtime/hub.ts";
import { runSseStream, type SseStreamOptions } from "../../src/realtime/sse_session.ts";
import type { Page } from "../../src/store/sync_store.ts";
import type { WireChange } from "../../src/sync/wire.ts";

/** Deno 2 runs tests unsanitized by default: opt in, so a leaked timer or socket fails the test. */
const sanitized = { sanitizeOps: true, sanitizeResources: true } as const;

const USER = "alice";
const APP = "todo";
const READER = "reader-device";
const START = "c000000";

/** An in-memory log per table; cursors are opaque, increasing strings. */
class FakeLog {
  #seq = 0;
  #byTable = new Map<string, { cursor: string; change: WireChange }[]>();
  pulls: { table: string; since: string }[] = [];
  /** Runs inside pull(), after the page is read and before it is returned. */
  onPull: ((table: string) => void) | undefined;

  constructor(readonly pageSize: number) {}

  add(table: string, count = 1): WireChange[] {
    const added: WireChange[] = [];
    for (let i = 0; i < count; i++) {
      const cursor = `c${String(++this.#seq).padStart(6, "0")}`;
      const change: WireChange = {
        eventId: `event-${cursor}`,
        schemaVersion: 1,
        table,
        id: `${table}-${this.#seq}`,
        op: "insert",
        data: { n: this.#seq },
      };
      const list = this.#byTable.get(table) ?? [];
      list.push({ cursor, change });
      this.#byTable.set(table, list);
      added.push(change);
    }
    return added;
  }

  latest(): string {
    return `c${String(this.#seq).padStart(6, "0")}`;
  }

  pull = (table: string, since: string): Promise<Page> => {
    this.pulls.push({ table, since });
    const after = (this.#byTable.get(table) ?? []).filter((e) => e.cursor > since);
    const page = after.slice(0, this.pageSize);
    const result: Page = {
      serverChanges: page.map((e) => JSON.stringify(e.change)),
      syncedUntil: page.at(-1)?.cursor ?? since,
      hasMore: after.length > this.pageSize,
    };
    this.onPull?.(table);
    return Promise.resolve(result);
  };
}

interface ChangesData {
  table: string;
  changes: WireChange[];
  syncedUntil: string;
  hasMore: boolean;
}

interface Written {
  event: "changes" | "heartbeat";
  data: unknown;
}

function start(
  log: FakeLog,
  options: Partial<Omit<SseStreamOptions, "pull" | "write" | "signal">> = {},
) {
  const hub = options.hub ?? new Hub();
  const writes: Written[] = [];
  const abort = new AbortController();
  const done = runSseStream({
    hub,
    userId: USER,
    appId: APP,
    clientId: READER,
    collections: ["tasks"],
    since: START,
    heartbeatMs: 60_000,
    ...options,
    pull: log.pull,
    write: (event, data) => {
      assert.ok(!data.includes("\n"), "an event's data is one line");
      writes.push({ event, data: JSON.parse(data) });
      return Promise.resolve();
    },
    signal: abort.signal,
  });
  const changes = () =>
    writes.filter((w) => w.event === "changes").map((w) => w.data as ChangesData);
  return { hub, writes, changes, abort, done };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `ready()`; bounded, so that a hang fails the test instead of stalling the run. */
async function until(ready: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!ready()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Waits for the stream to end; one that never ends fails the test instead of stalling it. */
async function ended(done: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("the stream did not end")), 10_000);
  });
  try {
    await Promise.race([done, hang]);
  } finally {
    clearTimeout(timer);
  }
}

const push = (tables: string[], overrides: Partial<SyncEvent> = {}): SyncEvent => ({
  userId: USER,
  appId: APP,
  tables,
  clientId: "other-device",
  ...overrides,
});

/** Pushes through the hub, then waits for the heartbeat that proves nothing else was written. */
async function nothingAfter(
  s: ReturnType<typeof start>,
  log: FakeLog,
  event: SyncEvent,
): Promise<void> {
  const writes = s.writes.length, pulls = log.pulls.length;
  s.hub.publish(event);
  await until(() => s.writes.length > writes, "the next write");
  assert.deepEqual(s.writes.slice(writes), [{ event: "heartbeat", data: {} }]);
  assert.equal(log.pulls.length, pulls, "nothing pulled");
}

Deno.test(
  "runSseStream() catches up page after page per table, in order, without duplicates",
  sanitized,
  async () => {
    const log = new FakeLog(2);
    const tasks = log.add("tasks", 5);
    const notes = log.add("notes", 3);
    const s = start(log, { collections: ["tasks", "notes"] });
    try {
      await until(() => s.changes().length === 5, "five pages");
      const pages = s.changes();
      assert.deepEqual(
        pages.map((p) => [p.table, p.changes.length, p.hasMore]),
        [["tasks", 2, true], ["tasks", 2, true], ["tasks", 1, false], ["notes", 2, true], [
          "notes",
          1,
          false,
        ]],
      );
      const streamed = (table: string) =>
        pages.filter((p) => p.table === table).flatMap((p) => p.changes);
      assert.deepEqual(streamed("tasks"), tasks);
      assert.deepEqual(streamed("notes"), notes);
      // Each page resumes at the previous page's syncedUntil.
      assert.deepEqual(log.pulls, [
        { table: "tasks", since: START },
        { table: "tasks", since: "c000002" },
        { table: "tasks", since: "c000004" },
        { table: "notes", since: START },
        { table: "notes", since: "c000007" },
      ]);
      assert.deepEqual(pages.map((p) => p.syncedUntil), [
        "c000002",
        "c000004",
        "c000005",
        "c000007",
        "c000008",
      ]);
    } finally {
      s.abort.abort();
      await ended(s.done);
    }
  },
);

Deno.test("runSseStream() pulls and writes only the requested collections", sanitized, async () => {
  const log = new FakeLog(10);
  log.add("tasks", 2);
  log.add("secrets", 2);
  log.add("notes", 1);
  const s = start(log, { collections: ["tasks", "notes"], heartbeatMs: 30 });
  try {
    await until(() => s.writes.some((w) => w.event === "heartbeat"), "caught up");
    assert.deepEqual(log.pulls.map((p) => p.table), ["tasks", "notes"]);
    assert.deepEqual(s.changes().map((p) => p.table), ["tasks", "notes"]);
    assert.ok(s.changes().every((p) => p.changes.every((c) => c.table === p.table)));
  } finally {
    s.abort.abort();
    await ended(s.done);
  }
});

Deno.test("runSseStream() writes nothing when there is nothing new", sanitized, async (t) => {
  await t.step("empty log", async () => {
    const log = new FakeLog(10);
    const s = start(log, { collections: ["tasks", "notes"], heartbeatMs: 30 });
    try {
      await until(() => s.writes.length > 0, "the first write");
      assert.deepEqual(s.writes[0], { event: "heartbeat", data: {} });
      assert.deepEqual(log.pulls.map((p) => p.table), ["tasks", "notes"]);
    } finally {
      s.abort.abort();
      await ended(s.done);
    }
  });

  await t.step("since already at the end", async () => {
    const log = new FakeLog(10);
    log.add("tasks", 3);
    const s = start(log, { since: log.latest(), heartbeatMs: 30 });
    try {
      await until(() => s.writes.length > 0, "the first write");
      assert.deepEqual(s.writes[0], { event: "heartbeat", data: {} });
      assert.deepEqual(log.pulls, [{ table: "tasks", since: "c000003" }]);
    } finally {
      s.abort.abort();
      await ended(s.done);
    }
  });
});

Deno.test("runSseStream() streams a live push to a requested table", sanitized, async () => {
  const log = new FakeLog(10);
  log.add("tasks", 2);
  const s = start(log, { collections: ["tasks", "notes"] });
  try {
    await until(() => s.changes().length === 1 && log.pulls.length === 2, "caught up");
    const [added] = log.add("tasks");
    s.hub.publish(push(["tasks"]));
    await until(() => s.changes().length === 2, "the live page");
    assert.deepEqual(s.changes()[1], {
      table: "tasks",
      changes: [added],
      syncedUntil: "c000003",
      hasMore: false,
    });
    assert.deepEqual(log.pulls.at(-1), { table: "tasks", since: "c000002" });
    assert.equal(log.pulls.length, 3, "only the pushed table is pulled again");
  } finally {
    s.abort.abort();
    await ended(s.done);
  }
});

Deno.test("runSseStream() ignores events it was not asked for", sanitized, async (t) => {
  const cases: [string, SyncEvent][] = [
    ["an unrequested table", push(["secrets"])],
    ["the reader's own clientId", push(["tasks"], { clientId: READER })],
    ["another app", push(["tasks"], { appId: "notes-app" })],
    ["another user", push(["tasks"], { userId: "bob" })],
  ];
  for (const [name, event] of cases) {
    await t.step(name, async () => {
      const log = new FakeLog(10);
      const s = start(log, { heartbeatMs: 30 });
      try {
        await until(() => s.writes.length > 0, "caught up");
        log.add("secrets");
        log.add("tasks");
        await nothingAfter(s, log, event);
        assert.deepEqual(s.changes(), []);
      } finally {
        s.abort.abort();
        await ended(s.done);
      }
    });
  }
});

Deno.test(
  "runSseStream() refreshes every collection on an event with no tables",
  sanitized,
  async () => {
    const log = new FakeLog(10);
    const s = start(log, { collections: ["tasks", "notes"] });
    try {
      await until(() => log.pulls.length === 2, "caught up");
      const [task] = log.add("tasks");
      const [note] = log.add("notes");
      log.add("secrets");
      s.hub.publish(push([]));
      await until(() => s.changes().length === 2, "both tables");
      assert.deepEqual(s.changes().map((p) => [p.table, p.changes]), [
        ["tasks", [task]],
        ["notes", [note]],
      ]);
      assert.ok(!log.pulls.some((p) => p.table === "secrets"));
    } finally {
      s.abort.abort();
      await ended(s.done);
    }
  },
);

Deno.test("runSseStream() does not miss a push made during the catch-up", sanitized, async () => {
  const log = new FakeLog(10);
  log.add("tasks", 2);
  const hub = new Hub();
  let late: WireChange | undefined;
  // After the last catch-up page is read, before it is written, another device pushes.
  log.onPull = () => {
    log.onPull = undefined;
    [late] = log.add("tasks");
    hub.publish(push(["tasks"]));
  };
  const s = start(log, { hub });
  try {
    await until(() => s.changes().length === 2, "the late change");
    assert.equal(s.changes()[0]!.changes.length, 2);
    assert.deepEqual(s.changes()[1]!.changes, [late]);
  } finally {
    s.abort.abort();
    await ended(s.done);
  }
});

Deno.test(
  "runSseStream() writes a heartbeat after heartbeatMs of idleness",
  sanitized,
  async () => {
    const log = new FakeLog(10);
    log.add("tasks", 1);
    const s = start(log, { heartbeatMs: 30 });
    try {
      await until(() => s.writes.filter((w) => w.event === "heartbeat").length >= 2, "heartbeats");
      assert.equal(s.writes[0]!.event, "changes", "catch-up first");
      assert.deepEqual(s.writes[1], { event: "heartbeat", data: {} });
      assert.equal(log.pulls.length, 1, "a heartbeat pulls nothing");
    } finally {
      s.abort.abort();
      await ended(s.done);
    }
  },
);

Deno.test(
  "runSseStream() ends when the signal is aborted and leaves the hub",
  sanitized,
  async () => {
    const log = new FakeLog(10);
    log.add("tasks", 1);
    const s = start(log, { heartbeatMs: 60_000 });
    await until(() => s.changes().length === 1, "caught up");
    assert.deepEqual(s.hub.stats().connections, 1);
    s.abort.abort();
    await ended(s.done); // the 60 s heartbeat timer must not hold it (and the sanitizer checks it is gone)
    assert.deepEqual(s.hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
    const pulls = log.pulls.length;
    s.hub.publish(push(["tasks"]));
    assert.equal(log.pulls.length, pulls);
  },
);

Deno.test("runSseStream() ends on Hub.closeAll()", sanitized, async () => {
  const log = new FakeLog(10);
  const s = start(log, { heartbeatMs: 60_000 });
  await until(() => log.pulls.length === 1, "caught up");
  s.hub.closeAll();
  await ended(s.done);
  assert.deepEqual(s.hub.stats(), { connections: 0, users: 0, delivered: 0, dropped: 0 });
  assert.deepEqual(s.writes, []);
});

Deno.test("runSseStream() rejects when pull fails and leaves the hub", sanitized, async () => {
  const hub = new Hub();
  await assert.rejects(
    runSseStream({
      hub,
      userId: USER,
      appId: APP,
      collections: ["tasks"],
      since: START,
      heartbeatMs: 60_000,
      pull: () => Promise.reject(new Error("database down")),
      write: () => Promise.resolve(),
      signal: new AbortController().signal,
    }),
    /database down/,
  );
  assert.deepEqual(hub.stats().connections, 0);
});

Deno.test(
  "runSseStream() stops pulling other tables once the client has left",
  sanitized,
  async () => {
    const abort = new AbortController();
    const pulls: string[] = [];
    const hub = new Hub();
    await runSseStream({
      hub,
      userId: "u",
      appId: "a",
      collections: ["t1", "t2", "t3"],
      since: "0",
      heartbeatMs: 60_000,
      signal: abort.signal,
      pull: (table) => {
        pulls.push(table);
        abort.abort(); // the client leaves during the first pull
        return Promise.resolve({
          serverChanges: [
            JSON.stringify({ eventId: table, schemaVersion: 1, table, id: "1", op: "insert" }),
          ],
          syncedUntil: "1",
          hasMore: true,
        });
      },
      write: () => Promise.resolve(),
    });
    assert.deepEqual(pulls, ["t1"]);
    assert.deepEqual(hub.stats().connections, 0);
  },
);
