/** Building, reading and tampering with `.mana` archives in tests, with zip.js directly. */
import {
  TextReader,
  TextWriter,
  Uint8ArrayReader,
  Uint8ArrayWriter,
  ZipReader,
  ZipWriter,
} from "@zip.js/zip.js";
import type { LogRow } from "../../src/sync/wire.ts";

export async function bytesOf(
  stream: ReadableStream<Uint8Array>,
): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

export function concat(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A zip of the given entries, in order, with zip.js (not our writer). */
export async function zipOf(
  entries: [name: string, text: string][],
): Promise<Uint8Array<ArrayBuffer>> {
  const zip = new ZipWriter(new Uint8ArrayWriter(), { useWebWorkers: false });
  for (const [name, text] of entries) await zip.add(name, new TextReader(text));
  return await zip.close();
}

/** The entries of a zip as text, in order, read with zip.js (not our reader). */
export async function unzip(bytes: Uint8Array): Promise<[name: string, text: string][]> {
  const entries = await new ZipReader(new Uint8ArrayReader(bytes), { useWebWorkers: false })
    .getEntries();
  const out: [string, string][] = [];
  for (const entry of entries) {
    if (entry.directory) throw new Error(`Unexpected directory ${entry.filename}`);
    out.push([entry.filename, await entry.getData(new TextWriter())]);
  }
  return out;
}

/**
 * Rewrites an archive: `edit` receives the events text and the parsed manifest and returns the
 * entries of the new zip (the manifest is not recomputed unless `edit` does it).
 */
export async function rewrite(
  bytes: Uint8Array,
  edit: (events: string, manifest: Record<string, unknown>) => [string, string][],
): Promise<Uint8Array<ArrayBuffer>> {
  const entries = new Map(await unzip(bytes));
  return await zipOf(edit(entries.get("events.jsonl")!, JSON.parse(entries.get("manifest.json")!)));
}

let clock = 0;

/** A log row as the store reads it; every call is one microsecond after the previous one. */
export function logRow(overrides: Partial<LogRow> = {}): LogRow {
  clock++;
  const id = overrides.id ?? `r${clock}`;
  const micros = String(clock % 1_000_000).padStart(6, "0");
  return {
    eventId: crypto.randomUUID(),
    schemaVersion: 1,
    appId: "todo",
    table: "tasks",
    id,
    op: "insert",
    data: { id, title: `task ${clock}`, updatedAt: "2024-01-01T10:00:00.000Z" },
    fieldTimestamps: {},
    clientId: "laptop",
    createdAt: `2024-01-01T10:00:${String(10 + Math.floor(clock / 1_000_000) % 50)}.${micros}Z`,
    ...overrides,
  };
}

export async function* iterate<T>(items: Iterable<T>): AsyncGenerator<T> {
  for (const item of items) yield item;
}
