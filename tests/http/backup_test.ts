/**
 * The backup handlers over `app.request` with stand-in stores: headers, bounds, the order of the
 * checks, what reaches the store and the notifications. The real store runs in tests/store and e2e.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { loadDevKeys, mintDevToken } from "../../src/auth/dev_keys.ts";
import { staticKeySource } from "../../src/auth/keys.ts";
import { createVerifier } from "../../src/auth/verifier.ts";
import { openBackup } from "../../src/backup/reader.ts";
import { writeBackup } from "../../src/backup/writer.ts";
import { loadConfig } from "../../src/config.ts";
import { silentLogger } from "../../src/log.ts";
import { Hub, type SyncEvent } from "../../src/realtime/hub.ts";
import type { BackupStore, ImportResult } from "../../src/store/backup_store.ts";
import type { ChangeEntry, SyncStore } from "../../src/store/sync_store.ts";
import type { LogRow } from "../../src/sync/wire.ts";
import { bytesOf, iterate, logRow } from "../helpers/backup.ts";

const keys = await loadDevKeys(await Deno.makeTempDir());
const source = await staticKeySource(keys.jwks);
const alice = await mintDevToken(keys, "alice");
const NOW = Date.parse("2026-03-04T05:06:07.890Z");

function appWith(backup: Partial<BackupStore>, env: Record<string, string> = {}) {
  const published: SyncEvent[] = [];
  const app = createApp({
    config: loadConfig((name) => env[name], { dev: true }),
    store: {} as SyncStore,
    backup: backup as BackupStore,
    verifier: createVerifier(source),
    logger: silentLogger,
    checkDatabase: () => Promise.resolve({ kind: "postgres", ok: true }),
    hub: new Hub(),
    publish: (event) => published.push(event),
    now: () => NOW,
  });
  return { app, published };
}

/** A store whose log is `rows`. */
const logOf = (rows: AsyncIterable<LogRow>): Partial<BackupStore> => ({
  readLog: (_userId, fn) => fn(rows),
});

const auth = { authorization: `Bearer ${alice}` };

async function archiveFor(userId: string, rows: LogRow[]) {
  return await bytesOf(writeBackup(iterate(rows), { userId, createdAt: new Date(NOW) }));
}

Deno.test("exportBackup() streams the log as an attachment named after the user and the time", async () => {
  const rows = [logRow({ appId: "todo" }), logRow({ appId: "calendar" })];
  const { app } = appWith(logOf(iterate(rows)));
  const res = await app.request("/backup/export", { headers: auth });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/zip");
  assert.equal(
    res.headers.get("content-disposition"),
    'attachment; filename="mana-backup-alice-20260304-050607.mana"',
  );
  const summary = await (await openBackup(new Uint8Array(await res.arrayBuffer()))).verify();
  assert.equal(summary.manifest.userId, "alice");
  assert.equal(summary.manifest.createdAt, "2026-03-04T05:06:07.890Z");
  assert.deepEqual(summary.apps, ["calendar", "todo"]);
  assert.equal(summary.eventCount, 2);
});

Deno.test("exportBackup() answers 503 when the database fails before the first row", async () => {
  const lost = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
  const { app } = appWith({ readLog: () => Promise.reject(lost) });
  const res = await app.request("/backup/export", { headers: auth });
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error, "database_unavailable");
});

Deno.test("exportBackup() aborts the download when the log fails mid-stream", async () => {
  async function* failing() {
    for (let i = 0; i < 20_000; i++) yield logRow({ data: { noise: crypto.randomUUID() } });
    throw Object.assign(new Error("connection lost"), { code: "ECONNRESET" });
  }
  const { app } = appWith(logOf(failing()));
  const res = await app.request("/backup/export", { headers: auth });
  assert.equal(res.status, 200, "the answer started before the failure");
  await assert.rejects(res.arrayBuffer(), "the body ends in an error, not in a clean end");
});

Deno.test("exportBackup() answers 503 export_busy beyond the concurrent exports allowed", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let calls = 0;
  const { app } = appWith({
    readLog: (_userId, fn) => {
      calls++;
      async function* rows() {
        yield logRow();
        if (calls === 1) await held;
      }
      return fn(rows());
    },
  }, { DATABASE_POOL_MAX: "2" }); // one export at a time
  const first = await app.request("/backup/export", { headers: auth });
  assert.equal(first.status, 200);
  const busy = await app.request("/backup/export", { headers: auth });
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get("retry-after"), "5");
  assert.equal((await busy.json()).error, "export_busy");
  release();
  await first.arrayBuffer();
  await new Promise((resolve) => setTimeout(resolve, 0));
  const third = await app.request("/backup/export", { headers: auth });
  assert.equal(third.status, 200);
  await third.arrayBuffer();
  assert.equal(calls, 2);
});

Deno.test("importBackup() answers 413 beyond MAX_IMPORT_BYTES, declared or streamed", async (t) => {
  let imported = false;
  const { app } = appWith({
    importChanges: () => {
      imported = true;
      return Promise.reject(new Error("not reached"));
    },
  }, { MAX_IMPORT_BYTES: "1000" });
  await t.step("Content-Length over the bound", async () => {
    const res = await app.request("/backup/import", {
      method: "POST",
      headers: { ...auth, "content-length": "1001" },
      body: new Uint8Array(1001),
    });
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error, "backup_too_large");
  });
  await t.step("a chunked body that grows past the bound", async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent += 300;
        controller.enqueue(new Uint8Array(300));
        if (sent > 100_000) controller.close();
      },
    });
    const res = await app.request("/backup/import", { method: "POST", headers: auth, body });
    assert.equal(res.status, 413);
    assert.ok(sent < 10_000, `stopped reading after ${sent} bytes`);
  });
  assert.equal(imported, false);
});

Deno.test("importBackup() answers 415 to a form upload", async () => {
  const form = new FormData();
  form.append("file", new Blob([await archiveFor("alice", [])]), "backup.mana");
  const res = await appWith({}).app.request("/backup/import", {
    method: "POST",
    headers: auth,
    body: form,
  });
  assert.equal(res.status, 415);
  assert.equal((await res.json()).error, "unsupported_media_type");
});

Deno.test("importBackup() refuses another user's archive with 403 and stores nothing", async () => {
  let imported = false;
  const { app, published } = appWith({
    importChanges: () => {
      imported = true;
      return Promise.reject(new Error("not reached"));
    },
  });
  const res = await app.request("/backup/import", {
    method: "POST",
    headers: auth,
    body: await archiveFor("bob", [logRow()]),
  });
  assert.equal(res.status, 403);
  assert.deepEqual(await res.json(), {
    error: "backup_foreign_user",
    message: 'The archive belongs to user "bob", not to the caller',
  });
  assert.equal(imported, false);
  assert.deepEqual(published, []);
});

Deno.test("importBackup() replays every event at its commit time and notifies once per app", async () => {
  const rows = [
    logRow({ appId: "todo", table: "tasks" }),
    logRow({ appId: "calendar", table: "events", clientId: "phone" }),
    logRow({ appId: "todo", table: "lists" }),
  ];
  const received: ChangeEntry[] = [];
  const { app, published } = appWith({
    importChanges: async (userId, changes): Promise<ImportResult> => {
      assert.equal(userId, "alice");
      for await (const entry of changes) received.push(entry);
      return {
        read: received.length,
        stored: 2,
        touched: new Map([["todo", ["tasks", "lists"]], ["calendar", ["events"]]]),
      };
    },
  });
  const res = await app.request("/backup/import", {
    method: "POST",
    headers: { ...auth, "x-client-id": "laptop", "content-type": "application/zip" },
    body: await archiveFor("alice", rows),
  });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    eventCount: 3,
    imported: 2,
    alreadyStored: 1,
    apps: ["calendar", "todo"],
  });
  assert.deepEqual(
    received.map((e) => [e.appId, e.clientId, e.receivedAt, e.change.eventId]),
    rows.map((r) => [r.appId, r.clientId, r.createdAt, r.eventId]),
  );
  assert.deepEqual(published, [
    { userId: "alice", appId: "todo", tables: ["tasks", "lists"], clientId: "laptop" },
    { userId: "alice", appId: "calendar", tables: ["events"], clientId: "laptop" },
  ]);
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^mana_sync_changes_stored_total\{source="import"\} 2$/m);
});

Deno.test("the backup routes need a token and answer 405 to other methods", async () => {
  const { app } = appWith({});
  for (const [method, path] of [["GET", "/backup/export"], ["POST", "/backup/import"]] as const) {
    const res = await app.request(path, { method });
    assert.equal(res.status, 401, `${method} ${path}`);
  }
  const wrong = await app.request("/backup/export", { method: "POST", headers: auth });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get("allow"), "GET");
  const wrong2 = await app.request("/backup/import", { headers: auth });
  assert.equal(wrong2.status, 405);
});
