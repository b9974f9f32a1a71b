/** The pure `.mana` writer, read back with zip.js's own reader: no database. */
import assert from "node:assert/strict";
import { openBackup } from "../../src/backup/reader.ts";
import { eventLine, writeBackup } from "../../src/backup/writer.ts";
import { SyncError } from "../../src/sync/errors.ts";
import type { LogRow } from "../../src/sync/wire.ts";
import { bytesOf, concat, iterate, logRow, sha256Hex, unzip } from "../helpers/backup.ts";

const createdAt = new Date("2026-03-04T05:06:07.890Z");
const meta = { userId: "alice", createdAt };

async function archive(rows: LogRow[]) {
  const entries = await unzip(await bytesOf(writeBackup(iterate(rows), meta)));
  return {
    names: entries.map(([name]) => name),
    events: entries[0]![1],
    manifest: JSON.parse(entries[1]![1]) as Record<string, unknown>,
  };
}

Deno.test("writeBackup() round-trips through zip.js: events.jsonl first, manifest.json last", async () => {
  const rows = [
    logRow({ eventId: "00000000-0000-4000-8000-000000000001", id: "t1" }),
    logRow({
      op: "update",
      id: "t1",
      data: { title: "Buy eggs", done: true },
      fieldTimestamps: { title: "2024-01-01T10:05:30.000Z", done: "2024-01-01T10:06:00Z" },
      clientId: "phone",
    }),
    logRow({ op: "delete", id: "t1", data: { deletedAt: "2024-01-01T10:07:00.000Z" } }),
    logRow({ op: "delete", id: "t2", data: null, fieldTimestamps: null }),
  ];
  const { names, events, manifest } = await archive(rows);
  assert.deepEqual(names, ["events.jsonl", "manifest.json"]);
  const lines = events.split("\n");
  assert.equal(lines.pop(), "", "every line ends with a newline");
  assert.deepEqual(lines.map((l) => JSON.parse(l)), [
    {
      eventId: "00000000-0000-4000-8000-000000000001",
      schemaVersion: 1,
      appId: "todo",
      table: "tasks",
      id: "t1",
      op: "insert",
      data: rows[0]!.data,
      clientId: "laptop",
      createdAt: rows[0]!.createdAt,
    },
    {
      eventId: rows[1]!.eventId,
      schemaVersion: 1,
      appId: "todo",
      table: "tasks",
      id: "t1",
      op: "update",
      data: { title: "Buy eggs", done: true },
      fieldTimestamps: { title: "2024-01-01T10:05:30.000Z", done: "2024-01-01T10:06:00Z" },
      clientId: "phone",
      createdAt: rows[1]!.createdAt,
    },
    {
      eventId: rows[2]!.eventId,
      schemaVersion: 1,
      appId: "todo",
      table: "tasks",
      id: "t1",
      op: "delete",
      data: { deletedAt: "2024-01-01T10:07:00.000Z" },
      clientId: "laptop",
      createdAt: rows[2]!.createdAt,
    },
    {
      eventId: rows[3]!.eventId,
      schemaVersion: 1,
      appId: "todo",
      table: "tasks",
      id: "t2",
      op: "delete",
      clientId: "laptop",
      createdAt: rows[3]!.createdAt,
    },
  ]);
  // The protocol's key order, byte for byte.
  assert.ok(lines[1]!.startsWith('{"eventId":'));
  assert.match(
    lines[1]!,
    /"op":"update","data":\{.*\},"fieldTimestamps":\{.*\},"clientId":"phone"/,
  );
  assert.deepEqual(manifest, {
    formatVersion: 1,
    schemaVersion: 1,
    userId: "alice",
    createdAt: "2026-03-04T05:06:07.890Z",
    eventCount: 4,
    eventsSha256: await sha256Hex(events),
    apps: ["todo"],
    producedBy: "mana-sync",
    schemaVersionMin: 1,
    schemaVersionMax: 1,
  });
});

Deno.test("writeBackup() of an empty account: no lines, SHA-256 of nothing, no min/max", async () => {
  const { names, events, manifest } = await archive([]);
  assert.deepEqual(names, ["events.jsonl", "manifest.json"]);
  assert.equal(events, "");
  assert.deepEqual(manifest, {
    formatVersion: 1,
    schemaVersion: 1,
    userId: "alice",
    createdAt: "2026-03-04T05:06:07.890Z",
    eventCount: 0,
    eventsSha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    apps: [],
    producedBy: "mana-sync",
  });
});

Deno.test("writeBackup() exports legacy schemaVersion 0 as 1", async () => {
  const { events, manifest } = await archive([logRow({ schemaVersion: 0 }), logRow()]);
  const versions = events.trim().split("\n").map((l) => JSON.parse(l).schemaVersion);
  assert.deepEqual(versions, [1, 1]);
  assert.equal(manifest.schemaVersionMin, 1);
  assert.equal(manifest.schemaVersionMax, 1);
  assert.equal(JSON.parse(eventLine(logRow({ schemaVersion: -3 }))).schemaVersion, 1);
});

Deno.test("writeBackup() lists apps sorted and distinct", async () => {
  const apps = ["todo", "calendar", "todo", "contacts", "calendar", "Zitare"];
  const { manifest } = await archive(apps.map((appId) => logRow({ appId })));
  assert.deepEqual(manifest.apps, ["Zitare", "calendar", "contacts", "todo"]);
  assert.equal(manifest.eventCount, 6);
});

Deno.test("writeBackup() ends without a manifest when the rows fail mid-stream", async () => {
  const failure = new Error("connection lost");
  async function* failing() {
    for (let i = 0; i < 20_000; i++) yield logRow({ data: { n: i, noise: crypto.randomUUID() } });
    throw failure;
  }
  const chunks: Uint8Array[] = [];
  const reader = writeBackup(failing(), meta).getReader();
  await assert.rejects(async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
  }, (e) => e === failure);
  const bytes = concat(chunks);
  assert.ok(bytes.length > 1000, "events were streamed before the failure");
  assert.ok(!new TextDecoder("latin1").decode(bytes).includes("manifest.json"));
  await assert.rejects(
    openBackup(bytes),
    (e) => e instanceof SyncError && e.code === "backup_truncated",
  );
});

Deno.test("writeBackup() reads rows only as its output is read, and stops when cancelled", async () => {
  let pulled = 0, released = false;
  async function* endless() {
    try {
      for (;;) {
        pulled++;
        yield logRow();
      }
    } finally {
      released = true;
    }
  }
  const reader = writeBackup(endless(), meta).getReader();
  let read = 0;
  while (read < 256 * 1024) read += (await reader.read()).value!.length;
  await reader.cancel(new Error("client went away"));
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(released, "the source was returned");
  const settled = pulled;
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(pulled, settled, "nothing is read after the cancel");
  assert.ok(pulled < 200_000, `an endless source was read ${pulled} rows deep, not to its end`);
});
