/** The `.mana` reader and verifier on archives built in memory: no database. */
import assert from "node:assert/strict";
import { openBackup, parseEventLine, parseManifest } from "../../src/backup/reader.ts";
import { eventLine, writeBackup } from "../../src/backup/writer.ts";
import { SyncError } from "../../src/sync/errors.ts";
import { toWire } from "../../src/sync/wire.ts";
import type { LogRow } from "../../src/sync/wire.ts";
import { bytesOf, iterate, logRow, rewrite, sha256Hex, zipOf } from "../helpers/backup.ts";

const meta = { userId: "alice", createdAt: new Date("2026-03-04T05:06:07.890Z") };

function sampleRows(): LogRow[] {
  return [
    logRow({ appId: "todo", id: "t1" }),
    logRow({
      appId: "todo",
      op: "update",
      id: "t1",
      data: { done: true },
      fieldTimestamps: { done: "2024-01-01T10:06:00.000Z" },
      clientId: "phone",
    }),
    logRow({ appId: "calendar", table: "events", id: "e1", schemaVersion: 0 }),
    logRow({ appId: "todo", op: "delete", id: "t1", data: { deletedAt: "2024-01-01T10:07:00Z" } }),
  ];
}

const archiveOf = (rows: LogRow[]) => bytesOf(writeBackup(iterate(rows), meta));

/** Asserts that opening and verifying `bytes` fails with `code`, and returns the message. */
async function refusal(bytes: Uint8Array | Uint8Array[], code: string): Promise<string> {
  let message = "";
  await assert.rejects(
    async () => await (await openBackup(bytes)).verify(),
    (e) => {
      assert.ok(e instanceof SyncError, `a SyncError, got ${e}`);
      assert.equal(e.code, code, e.message);
      message = e.message;
      return true;
    },
  );
  return message;
}

/** A manifest that tells the truth about `events`, with `overrides`. */
async function manifestFor(events: string, overrides: Record<string, unknown> = {}) {
  const lines = events.split("\n").filter(Boolean).map((l) => JSON.parse(l));
  return JSON.stringify({
    formatVersion: 1,
    schemaVersion: 1,
    userId: "alice",
    createdAt: "2026-03-04T05:06:07.890Z",
    eventCount: lines.length,
    eventsSha256: await sha256Hex(events),
    apps: [...new Set(lines.map((l) => l.appId))].sort(),
    producedBy: "mana-sync",
    ...(lines.length ? { schemaVersionMin: 1, schemaVersionMax: 1 } : {}),
    ...overrides,
  });
}

Deno.test("verify() summarizes a writer's archive: user, apps, events, time span, versions", async () => {
  const rows = sampleRows();
  const backup = await openBackup(await archiveOf(rows));
  assert.equal(backup.manifest.userId, "alice");
  const summary = await backup.verify();
  assert.equal(summary.eventCount, 4);
  assert.deepEqual(summary.apps, ["calendar", "todo"]);
  assert.equal(summary.firstEventAt, rows[0]!.createdAt);
  assert.equal(summary.lastEventAt, rows[3]!.createdAt);
  assert.equal(summary.schemaVersionMin, 1);
  assert.equal(summary.schemaVersionMax, 1);
  const empty = await (await openBackup(await archiveOf([]))).verify();
  assert.equal(empty.eventCount, 0);
  assert.equal(empty.firstEventAt, undefined);
});

Deno.test("events() yields each event with its change in wire form, validated", async () => {
  const rows = sampleRows();
  const backup = await openBackup(await archiveOf(rows));
  const events = [];
  for await (const event of backup.events()) events.push(event);
  assert.deepEqual(
    events.map((e) => [e.appId, e.clientId, e.createdAt]),
    rows.map((r) => [r.appId, r.clientId, r.createdAt]),
  );
  assert.deepEqual(events.map((e) => e.change), rows.map((r) => toWire(r)));
});

Deno.test("openBackup() reads an upload split in many small chunks like one buffer", async () => {
  const bytes = await archiveOf(sampleRows());
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += 7) chunks.push(bytes.slice(i, i + 7));
  const summary = await (await openBackup(chunks)).verify();
  assert.equal(summary.eventCount, 4);
});

Deno.test("openBackup() calls a cut archive truncated, wherever it is cut", async () => {
  const bytes = await archiveOf(sampleRows());
  for (const at of [30, Math.floor(bytes.length / 2), bytes.length - 1]) {
    const message = await refusal(bytes.subarray(0, at), "backup_truncated");
    assert.match(message, /truncated/);
  }
});

Deno.test("openBackup() calls an archive without manifest.json truncated", async () => {
  const events = sampleRows().map(eventLine).join("\n") + "\n";
  const message = await refusal(await zipOf([["events.jsonl", events]]), "backup_truncated");
  assert.match(message, /no manifest\.json/);
});

Deno.test("openBackup() refuses what is not a .mana archive", async (t) => {
  const events = "";
  const manifest = await manifestFor(events);
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty", new Uint8Array(), /empty/],
    ["not a zip", new TextEncoder().encode('{"hello":"world"}'), /not a zip/],
    ["no events", await zipOf([["manifest.json", manifest]]), /no events\.jsonl/],
    [
      "an extra entry",
      await zipOf([["events.jsonl", events], ["notes.txt", "hi"], ["manifest.json", manifest]]),
      /Unexpected entry "notes\.txt"/,
    ],
    [
      "manifest first",
      await zipOf([["manifest.json", manifest], ["events.jsonl", events]]),
      /must come first/,
    ],
  ];
  for (const [name, bytes, message] of cases) {
    await t.step(name, async () => {
      assert.match(await refusal(bytes, "backup_invalid"), message);
    });
  }
});

Deno.test("verify() refuses altered events: SHA-256 mismatch", async () => {
  const bytes = await archiveOf(sampleRows());
  const tampered = await rewrite(bytes, (events, manifest) => [
    ["events.jsonl", events.replace('"done":true', '"done":false')],
    ["manifest.json", JSON.stringify(manifest)],
  ]);
  const message = await refusal(tampered, "backup_checksum_mismatch");
  assert.match(message, /events\.jsonl has SHA-256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}/);
  // A dropped line is caught the same way (before the count).
  const dropped = await rewrite(bytes, (events, manifest) => [
    ["events.jsonl", events.split("\n").slice(1).join("\n")],
    ["manifest.json", JSON.stringify(manifest)],
  ]);
  await refusal(dropped, "backup_checksum_mismatch");
});

Deno.test("verify() refuses a damaged zip entry: CRC-32 or inflate error", async () => {
  const bytes = await archiveOf(Array.from({ length: 200 }, () => logRow()));
  const damaged = bytes.slice();
  // Inside events.jsonl's compressed data: after the 30-byte header, the name and its extra field.
  damaged[200] = damaged[200]! ^ 0xff;
  const message = await refusal(damaged, "backup_checksum_mismatch");
  assert.match(message, /events\.jsonl is damaged or was altered/);
});

Deno.test("verify() refuses a manifest whose claims the events contradict", async (t) => {
  const bytes = await archiveOf(sampleRows());
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ["eventCount", { eventCount: 5 }, /holds 4 events, the manifest says 5/],
    ["apps", { apps: ["todo"] }, /apps \["calendar","todo"\], the manifest says \["todo"\]/],
  ];
  for (const [name, overrides, message] of cases) {
    await t.step(name, async () => {
      const edited = await rewrite(bytes, (events, manifest) => [
        ["events.jsonl", events],
        ["manifest.json", JSON.stringify({ ...manifest, ...overrides })],
      ]);
      assert.match(await refusal(edited, "backup_manifest_mismatch"), message);
    });
  }
});

Deno.test("verify() names the first malformed line of an archive whose checksum holds", async (t) => {
  const good = eventLine(logRow());
  const cases: [string, string, RegExp][] = [
    ["not JSON", "{oops", /line 2 is not valid JSON/],
    ["not an object", "[1,2]", /line 2 is not a JSON object/],
    ["empty line", "", /line 2 is not valid JSON/],
    ["no eventId", JSON.stringify({ ...JSON.parse(good), eventId: undefined }), /line 2: eventId/],
    [
      "bad op",
      JSON.stringify({ ...JSON.parse(good), eventId: crypto.randomUUID(), op: "upsert" }),
      /line 2: op must be insert, update or delete, got "upsert"/,
    ],
    [
      "bad timestamp",
      JSON.stringify({
        ...JSON.parse(good),
        eventId: crypto.randomUUID(),
        op: "update",
        data: { a: 1 },
        fieldTimestamps: { a: "yesterday" },
      }),
      /line 2: field "a" has no ISO-8601 updatedAt/,
    ],
    [
      "more fields than a push may carry",
      JSON.stringify({
        ...JSON.parse(good),
        eventId: crypto.randomUUID(),
        op: "insert",
        data: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`f${i}`, i])),
      }),
      /line 2: data has 1001 fields: at most 1000 are accepted per change/,
    ],
    [
      "more field timestamps than a push may carry",
      JSON.stringify({
        ...JSON.parse(good),
        eventId: crypto.randomUUID(),
        op: "update",
        data: { a: 1 },
        fieldTimestamps: Object.fromEntries(
          Array.from({ length: 1001 }, (_, i) => [`f${i}`, "2024-01-01T10:00:00.000Z"]),
        ),
      }),
      /line 2: fieldTimestamps has 1001 entries: at most 1000 are accepted per change/,
    ],
  ];
  for (const [name, line, message] of cases) {
    await t.step(name, async () => {
      const events = `${good}\n${line}\n${good}\n`;
      // The manifest's checksum matches these exact bytes, so the line itself is what is reported.
      const honest = await zipOf([
        ["events.jsonl", events],
        [
          "manifest.json",
          JSON.stringify({
            ...JSON.parse(await manifestFor(good + "\n")),
            eventCount: 3,
            eventsSha256: await sha256Hex(events),
          }),
        ],
      ]);
      assert.match(await refusal(honest, "backup_invalid"), message);
    });
  }
});

Deno.test("verify() refuses events out of commit order", async () => {
  const [a, b] = [logRow(), logRow()];
  const events = `${eventLine(b)}\n${eventLine(a)}\n`;
  const bytes = await zipOf([["events.jsonl", events], [
    "manifest.json",
    await manifestFor(events),
  ]]);
  assert.match(await refusal(bytes, "backup_invalid"), /line 2: createdAt goes back in time/);
});

Deno.test("openBackup() and verify() refuse newer formats and schema versions with 422", async (t) => {
  const events = eventLine(logRow()) + "\n";
  await t.step("formatVersion 2", async () => {
    const bytes = await zipOf([
      ["events.jsonl", events],
      ["manifest.json", await manifestFor(events, { formatVersion: 2 })],
    ]);
    assert.match(await refusal(bytes, "backup_unsupported_version"), /formatVersion 2 is newer/);
  });
  await t.step("events of schemaVersion 2", async () => {
    const newer = JSON.stringify({ ...JSON.parse(events), schemaVersion: 2 }) + "\n";
    const bytes = await zipOf([
      ["events.jsonl", newer],
      ["manifest.json", await manifestFor(newer, { schemaVersionMax: 2 })],
    ]);
    assert.match(
      await refusal(bytes, "backup_unsupported_version"),
      /events up to schemaVersion 2, this server supports 1/,
    );
    // A manifest that hides it does not help: the line itself is checked.
    const hidden = await zipOf([["events.jsonl", newer], [
      "manifest.json",
      await manifestFor(newer),
    ]]);
    assert.match(
      await refusal(hidden, "backup_unsupported_version"),
      /line 1: schemaVersion 2 is newer than this server supports \(1\)/,
    );
  });
});

Deno.test("parseManifest() names the field that is wrong", async (t) => {
  const good = JSON.parse(await manifestFor(eventLine(logRow()) + "\n"));
  const cases: [string, unknown, RegExp][] = [
    ["not JSON", "{", /manifest\.json is not valid JSON/],
    ["userId", { ...good, userId: "" }, /userId must be a non-empty string, got ""/],
    ["eventCount", { ...good, eventCount: "1" }, /eventCount must be a non-negative integer/],
    ["eventsSha256", { ...good, eventsSha256: "abc" }, /eventsSha256 must be 64 lowercase hex/],
    ["apps unsorted", { ...good, apps: ["todo", "calendar"] }, /apps must be sorted and distinct/],
    ["apps repeated", { ...good, apps: ["todo", "todo"] }, /apps must be sorted and distinct/],
    ["createdAt", { ...good, createdAt: "soon" }, /createdAt must be an ISO-8601 time/],
    ["min/max missing", { ...good, schemaVersionMin: undefined }, /schemaVersionMin must be/],
    [
      "min/max on an empty archive",
      { ...good, eventCount: 0, apps: [] },
      /must be absent when there are no events/,
    ],
  ];
  for (const [name, manifest, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => parseManifest(typeof manifest === "string" ? manifest : JSON.stringify(manifest)),
        (e) => e instanceof SyncError && e.code === "backup_invalid" && message.test(e.message),
      );
    });
  }
});

Deno.test("parseEventLine() turns a stored row back into the change a client pushed", () => {
  const row = logRow({
    op: "update",
    data: { title: "x", done: true },
    fieldTimestamps: { title: "2024-01-01T10:05:00.000Z" },
  });
  const event = parseEventLine(eventLine(row), 1);
  assert.deepEqual(event.change, {
    eventId: row.eventId,
    schemaVersion: 1,
    table: "tasks",
    id: row.id,
    op: "update",
    fields: {
      title: { value: "x", updatedAt: "2024-01-01T10:05:00.000Z" },
      done: { value: true, updatedAt: row.createdAt },
    },
  });
});
