/**
 * The `.mana` writer: rows of the log in, zip bytes out, in one pass. Pure: it knows nothing of
 * databases or HTTP, so it is tested with plain arrays.
 *
 * `events.jsonl` is written as the rows arrive, through an incremental SHA-256, and pulled only as
 * fast as the output is read (backpressure end to end), so memory stays flat however many rows
 * there are. `manifest.json` is written after the last row, from what was actually written. When the
 * rows fail mid-way the output stream errors instead: the bytes already sent end without a manifest
 * (and without the zip's directory), which a reader reports as truncated.
 */
import { TextReader, ZipWriter } from "@zip.js/zip.js";
import { createHash } from "node:crypto";
import type { LogRow } from "../sync/wire.ts";
import {
  EVENTS_ENTRY,
  FORMAT_VERSION,
  type Manifest,
  MANIFEST_ENTRY,
  PRODUCED_BY,
  SCHEMA_VERSION,
} from "./format.ts";

export interface BackupMeta {
  userId: string;
  /** When the export started: the manifest's `createdAt` and the entries' modification time. */
  createdAt: Date;
}

/** `events.jsonl` is handed to the zip in pieces of about this many characters. */
const PIECE = 64 * 1024;

function hasKeys(x: Record<string, unknown> | null | undefined): x is Record<string, unknown> {
  for (const _ in x) return true;
  return false;
}

/**
 * One line of `events.jsonl` (without the newline). Legacy rows with schema version 0 go out as 1;
 * `data` and `fieldTimestamps` are left out when empty.
 */
export function eventLine(row: LogRow): string {
  return JSON.stringify({
    eventId: row.eventId,
    schemaVersion: Math.max(row.schemaVersion, 1),
    appId: row.appId,
    table: row.table,
    id: row.id,
    op: row.op,
    data: hasKeys(row.data) ? row.data : undefined,
    fieldTimestamps: hasKeys(row.fieldTimestamps) ? row.fieldTimestamps : undefined,
    clientId: row.clientId,
    createdAt: row.createdAt,
  });
}

/** What the manifest says about the events, gathered while they are written. */
class Tally {
  count = 0;
  readonly apps = new Set<string>();
  min = Infinity;
  max = -Infinity;
  readonly hash = createHash("sha256");

  add(row: LogRow): void {
    const version = Math.max(row.schemaVersion, 1);
    this.count++;
    this.apps.add(row.appId);
    if (version < this.min) this.min = version;
    if (version > this.max) this.max = version;
  }

  manifest(meta: BackupMeta): Manifest {
    return {
      formatVersion: FORMAT_VERSION,
      schemaVersion: SCHEMA_VERSION,
      userId: meta.userId,
      createdAt: meta.createdAt.toISOString(),
      eventCount: this.count,
      eventsSha256: this.hash.digest("hex"),
      apps: [...this.apps].sort(),
      producedBy: PRODUCED_BY,
      ...(this.count > 0 ? { schemaVersionMin: this.min, schemaVersionMax: this.max } : {}),
    };
  }
}

/**
 * The archive of `rows` (a user's log in commit order) as a stream of zip bytes. The rows are read
 * only as the stream is read; cancelling the stream stops reading them (`return()` is called).
 */
export function writeBackup(
  rows: AsyncIterable<LogRow>,
  meta: BackupMeta,
): ReadableStream<Uint8Array> {
  let fail!: (error: unknown) => void;
  const output = new TransformStream<Uint8Array, Uint8Array>({
    start: (controller) => {
      fail = (error) => controller.error(error);
    },
  });
  const tally = new Tally();
  const source = rows[Symbol.asyncIterator]();
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    await source.return?.();
  };
  const encoder = new TextEncoder();
  const events = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let text = "", done = false;
      while (text.length < PIECE) {
        const next = await source.next();
        if (next.done) {
          done = released = true;
          break;
        }
        tally.add(next.value);
        text += eventLine(next.value) + "\n";
      }
      if (text !== "") {
        const bytes = encoder.encode(text);
        tally.hash.update(bytes);
        controller.enqueue(bytes);
      }
      if (done) controller.close();
    },
    cancel: release,
  }, { highWaterMark: 0 });

  const zip = new ZipWriter(output.writable, {
    useWebWorkers: false,
    lastModDate: meta.createdAt,
  });
  (async () => {
    try {
      await zip.add(EVENTS_ENTRY, events);
      await zip.add(MANIFEST_ENTRY, new TextReader(JSON.stringify(tally.manifest(meta))));
      await zip.close();
    } catch (error) {
      fail(error);
      await release().catch(() => {});
    }
  })();
  return output.readable;
}
