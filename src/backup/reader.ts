/**
 * The `.mana` reader and verifier, shared by `deno task backup:verify` and the import. Pure: it
 * reads a zip through zip.js from whatever random-access source it is given and never writes.
 *
 * `openBackup()` checks the container (a zip, the two entries in order, a well-formed manifest);
 * `verify()` then streams `events.jsonl` once, through SHA-256, checking every line and every claim
 * of the manifest; `events()` streams the events again for a replay. Every problem is a `SyncError`
 * with a stable code and a message that says precisely what is wrong:
 *
 * | code                         | status | meaning                                              |
 * | ---------------------------- | ------ | ---------------------------------------------------- |
 * | `backup_truncated`           | 400    | the zip or its manifest is missing its end            |
 * | `backup_invalid`             | 400    | not a `.mana` archive, or a line/field is malformed   |
 * | `backup_checksum_mismatch`   | 422    | the content differs from its SHA-256 or CRC-32        |
 * | `backup_manifest_mismatch`   | 422    | the manifest's counts disagree with the events        |
 * | `backup_unsupported_version` | 422    | written by a newer format or schema than this server  |
 */
import {
  ERR_CENTRAL_DIRECTORY_NOT_FOUND,
  ERR_EOCDR_LOCATOR_ZIP64_NOT_FOUND,
  ERR_EOCDR_NOT_FOUND,
  ERR_INVALID_COMPRESSED_DATA,
  ERR_INVALID_CRC32,
  ERR_INVALID_UNCOMPRESSED_SIZE,
  type FileEntry,
  Reader,
  TextWriter,
  Uint8ArrayReader,
  ZipReader,
} from "@zip.js/zip.js";
import { createHash } from "node:crypto";
import { APP_ID, type Change, DEFAULT_LIMITS, type Op, OPS, parseChange } from "../sync/change.ts";
import { SyncError } from "../sync/errors.ts";
import { instantKey, isTime } from "../sync/time.ts";
import { toWire } from "../sync/wire.ts";
import {
  EVENTS_ENTRY,
  FORMAT_VERSION,
  type Manifest,
  MANIFEST_ENTRY,
  SCHEMA_VERSION,
} from "./format.ts";

/** A zip.js reader (e.g. over a file), one buffer, or the chunks of an upload in order. */
export type BackupSource = Reader<unknown> | Uint8Array | readonly Uint8Array[];

/** One event of an archive: where it came from and the change, validated as a push is. */
export interface ArchivedEvent {
  appId: string;
  clientId: string;
  /** When the original server committed it (a cursor). */
  createdAt: string;
  change: Change;
}

export interface BackupSummary {
  manifest: Manifest;
  eventCount: number;
  /** The uncompressed size of `events.jsonl`. */
  eventsBytes: number;
  apps: string[];
  /** Commit times of the first and last event; absent when there are none. */
  firstEventAt?: string;
  lastEventAt?: string;
  schemaVersionMin?: number;
  schemaVersionMax?: number;
}

export interface Backup {
  readonly manifest: Manifest;
  /** Reads `events.jsonl` once and checks it against the manifest; throws what is wrong. */
  verify(): Promise<BackupSummary>;
  /** The events in archive order (verify first: this only checks each line). */
  events(): AsyncGenerator<ArchivedEvent>;
}

const ZIP_OPTIONS = { useWebWorkers: false, checkCrc32: true } as const;
const MAX_MANIFEST_BYTES = 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SHA256_HEX = /^[0-9a-f]{64}$/;

const truncated = (message: string) => new SyncError(400, "backup_truncated", message);
const invalid = (message: string) => new SyncError(400, "backup_invalid", message);
const checksum = (message: string) => new SyncError(422, "backup_checksum_mismatch", message);
const mismatch = (message: string) => new SyncError(422, "backup_manifest_mismatch", message);
const unsupported = (message: string) => new SyncError(422, "backup_unsupported_version", message);

/** Random access over a list of chunks, without copying them into one buffer. */
class ChunksReader extends Reader<readonly Uint8Array[]> {
  readonly #chunks: readonly Uint8Array[];
  readonly #starts: number[] = [];

  constructor(chunks: readonly Uint8Array[]) {
    super(chunks);
    this.#chunks = chunks;
    let size = 0;
    for (const chunk of chunks) {
      this.#starts.push(size);
      size += chunk.length;
    }
    this.size = size;
  }

  override readUint8Array(index: number, length: number): Promise<Uint8Array> {
    const end = Math.min(index + length, this.size);
    const out = new Uint8Array(Math.max(0, end - index));
    // The last chunk that starts at or before `index`.
    let lo = 0, hi = this.#starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= index) lo = mid;
      else hi = mid - 1;
    }
    for (let i = lo, at = index; at < end; i++) {
      const chunk = this.#chunks[i]!, start = this.#starts[i]!;
      const piece = chunk.subarray(at - start, Math.min(chunk.length, end - start));
      out.set(piece, at - index);
      at += piece.length;
    }
    return Promise.resolve(out);
  }
}

function toReader(source: BackupSource): Reader<unknown> {
  if (source instanceof Reader) return source;
  if (source instanceof Uint8Array) return new Uint8ArrayReader(source);
  return new ChunksReader(source as readonly Uint8Array[]);
}

const messageOf = (error: unknown) => error instanceof Error ? error.message : String(error);

/** Opens an archive and checks its container and manifest. */
export async function openBackup(source: BackupSource): Promise<Backup> {
  const reader = toReader(source);
  await reader.init?.();
  if (reader.size === 0) throw invalid("The archive is empty");
  const head = await reader.readUint8Array(0, 4);
  if (!(head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04)) {
    throw invalid("Not a .mana archive: the data is not a zip file");
  }
  let entries;
  try {
    entries = await new ZipReader(reader, ZIP_OPTIONS).getEntries();
  } catch (error) {
    const message = messageOf(error);
    if (
      [ERR_EOCDR_NOT_FOUND, ERR_EOCDR_LOCATOR_ZIP64_NOT_FOUND, ERR_CENTRAL_DIRECTORY_NOT_FOUND]
        .includes(message)
    ) {
      throw truncated(
        "The archive is truncated: the zip ends before its directory (the export did not finish, or the file was cut)",
      );
    }
    throw invalid(`Not a readable zip archive: ${message}`);
  }
  const events = entries.find((e) => e.filename === EVENTS_ENTRY);
  const manifest = entries.find((e) => e.filename === MANIFEST_ENTRY);
  const stranger = entries.find((e) => e !== events && e !== manifest);
  if (stranger) {
    throw invalid(
      `Unexpected entry "${stranger.filename}": a .mana archive holds ${EVENTS_ENTRY} and ${MANIFEST_ENTRY} only`,
    );
  }
  if (!events || events.directory) throw invalid(`The archive has no ${EVENTS_ENTRY}`);
  if (!manifest || manifest.directory) {
    throw truncated(
      `The archive is truncated: it has no ${MANIFEST_ENTRY} (the export did not finish)`,
    );
  }
  if (entries.length !== 2 || entries[0] !== events || events.offset > manifest.offset) {
    throw invalid(`${EVENTS_ENTRY} must come first and ${MANIFEST_ENTRY} last, once each`);
  }
  if (manifest.uncompressedSize > MAX_MANIFEST_BYTES) {
    throw invalid(`${MANIFEST_ENTRY} is larger than ${MAX_MANIFEST_BYTES} bytes`);
  }
  let text: string;
  try {
    text = await manifest.getData(new TextWriter(), ZIP_OPTIONS);
  } catch (error) {
    throw damaged(MANIFEST_ENTRY, error);
  }
  const parsed = parseManifest(text);
  return {
    manifest: parsed,
    verify: () => verify(events, parsed),
    events: () => readEvents(events),
  };
}

function damaged(entry: string, error: unknown): SyncError {
  const message = messageOf(error);
  if (
    [ERR_INVALID_CRC32, ERR_INVALID_COMPRESSED_DATA, ERR_INVALID_UNCOMPRESSED_SIZE].includes(
      message,
    )
  ) {
    return checksum(`${entry} is damaged or was altered: ${message}`);
  }
  return invalid(`Cannot read ${entry}: ${message}`);
}

type Json = Record<string, unknown>;
const isObject = (x: unknown): x is Json =>
  typeof x === "object" && x !== null && !Array.isArray(x);
const isCount = (x: unknown): x is number => Number.isInteger(x) && (x as number) >= 0;
const show = (x: unknown) => JSON.stringify(x) ?? String(x);

/** A schema version must be an integer ≥ 1 this server supports (the manifest's and each line's). */
function checkSchemaVersion(
  where: string,
  schemaVersion: unknown,
  field: (name: string, ok: boolean, want: string) => void,
): void {
  field(
    "schemaVersion",
    Number.isInteger(schemaVersion) && (schemaVersion as number) >= 1,
    "an integer ≥ 1",
  );
  if ((schemaVersion as number) > SCHEMA_VERSION) {
    throw unsupported(
      `${where}: schemaVersion ${schemaVersion} is newer than this server supports (${SCHEMA_VERSION})`,
    );
  }
}

/** Parses and checks `manifest.json` on its own (its claims about the events are checked later). */
export function parseManifest(text: string): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw invalid(`${MANIFEST_ENTRY} is not valid JSON`);
  }
  if (!isObject(raw)) throw invalid(`${MANIFEST_ENTRY} is not a JSON object`);
  const field = (name: string, ok: boolean, want: string) => {
    if (!ok) throw invalid(`${MANIFEST_ENTRY}: ${name} must be ${want}, got ${show(raw[name])}`);
  };
  const { formatVersion, schemaVersion, userId, createdAt, eventCount, eventsSha256, apps } = raw;
  field(
    "formatVersion",
    Number.isInteger(formatVersion) && (formatVersion as number) >= 1,
    "an integer ≥ 1",
  );
  if (formatVersion !== FORMAT_VERSION) {
    throw unsupported(
      `${MANIFEST_ENTRY}: formatVersion ${formatVersion} is newer than this server reads (${FORMAT_VERSION})`,
    );
  }
  checkSchemaVersion(MANIFEST_ENTRY, schemaVersion, field);
  field("userId", typeof userId === "string" && userId !== "", "a non-empty string");
  field("createdAt", isTime(createdAt), "an ISO-8601 time");
  field("eventCount", isCount(eventCount), "a non-negative integer");
  field(
    "eventsSha256",
    typeof eventsSha256 === "string" && SHA256_HEX.test(eventsSha256),
    "64 lowercase hex digits",
  );
  field(
    "apps",
    Array.isArray(apps) && apps.every((a) => typeof a === "string"),
    "an array of app ids",
  );
  const appList = apps as string[];
  if (appList.some((a, i) => i > 0 && !(appList[i - 1]! < a))) {
    throw invalid(`${MANIFEST_ENTRY}: apps must be sorted and distinct, got ${show(apps)}`);
  }
  field("producedBy", typeof raw.producedBy === "string", "a string");
  const manifest: Manifest = {
    formatVersion,
    schemaVersion: schemaVersion as number,
    userId: userId as string,
    createdAt: createdAt as string,
    eventCount: eventCount as number,
    eventsSha256: eventsSha256 as string,
    apps: appList,
    producedBy: raw.producedBy as string,
  };
  const { schemaVersionMin: min, schemaVersionMax: max } = raw;
  if (eventCount === 0) {
    if (min !== undefined || max !== undefined) {
      throw invalid(
        `${MANIFEST_ENTRY}: schemaVersionMin/Max must be absent when there are no events`,
      );
    }
    return manifest;
  }
  field("schemaVersionMin", Number.isInteger(min) && (min as number) >= 1, "an integer ≥ 1");
  field(
    "schemaVersionMax",
    Number.isInteger(max) && (max as number) >= (min as number),
    "an integer ≥ schemaVersionMin",
  );
  if ((max as number) > SCHEMA_VERSION) {
    throw unsupported(
      `${MANIFEST_ENTRY}: events up to schemaVersion ${max}, this server supports ${SCHEMA_VERSION}`,
    );
  }
  return { ...manifest, schemaVersionMin: min as number, schemaVersionMax: max as number };
}

/**
 * Parses one line of `events.jsonl` (`n` counts from 1) into an event whose change passed the same
 * validation as a push.
 */
export function parseEventLine(line: string, n: number): ArchivedEvent {
  const where = `${EVENTS_ENTRY} line ${n}`;
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw invalid(`${where} is not valid JSON`);
  }
  if (!isObject(raw)) throw invalid(`${where} is not a JSON object`);
  const { eventId, schemaVersion, appId, op, data, fieldTimestamps, clientId, createdAt } = raw;
  const field = (name: string, ok: boolean, want: string) => {
    if (!ok) throw invalid(`${where}: ${name} must be ${want}, got ${show(raw[name])}`);
  };
  field("eventId", typeof eventId === "string" && UUID.test(eventId), "a UUID");
  checkSchemaVersion(where, schemaVersion, field);
  field("appId", typeof appId === "string" && APP_ID.test(appId), "an app id");
  field("op", OPS.includes(op as Op), "insert, update or delete");
  field("data", data === undefined || isObject(data), "an object when present");
  field(
    "fieldTimestamps",
    fieldTimestamps === undefined ||
      (isObject(fieldTimestamps) &&
        Object.values(fieldTimestamps).every((t) => typeof t === "string")),
    "an object of strings when present",
  );
  const timestamps = Object.keys(fieldTimestamps ?? {}).length;
  if (timestamps > DEFAULT_LIMITS.maxFields) {
    throw invalid(
      `${where}: fieldTimestamps has ${timestamps} entries: at most ${DEFAULT_LIMITS.maxFields} are accepted per change`,
    );
  }
  field(
    "clientId",
    typeof clientId === "string" && clientId !== "" &&
      clientId.length <= DEFAULT_LIMITS.maxIdLength && clientId.isWellFormed() &&
      !clientId.includes("\0"),
    `a non-empty string of at most ${DEFAULT_LIMITS.maxIdLength} characters`,
  );
  field("createdAt", isTime(createdAt), "an ISO-8601 time");
  // The stored form back to the wire form a client would push, then the push's own validation.
  const wire = toWire({
    eventId: eventId as string,
    schemaVersion: schemaVersion as number,
    table: raw.table as string,
    id: raw.id as string,
    op: op as Op,
    data: (data ?? null) as Json | null,
    fieldTimestamps: (fieldTimestamps ?? null) as Record<string, string> | null,
    createdAt: createdAt as string,
  });
  let change: Change;
  try {
    change = parseChange(wire, SCHEMA_VERSION, DEFAULT_LIMITS);
  } catch (error) {
    if (error instanceof SyncError) throw invalid(`${where}: ${error.message}`);
    throw error;
  }
  return {
    appId: appId as string,
    clientId: clientId as string,
    createdAt: createdAt as string,
    change,
  };
}

/** The lines of `events.jsonl` as they are inflated; `onBytes` sees the raw bytes first. */
async function* readLines(
  entry: FileEntry,
  onBytes?: (bytes: Uint8Array) => void,
): AsyncGenerator<string> {
  let fail!: (error: unknown) => void;
  const pipe = new TransformStream<Uint8Array, Uint8Array>({
    start: (controller) => {
      fail = (error) => controller.error(error);
    },
    transform: (chunk, controller) => {
      onBytes?.(chunk);
      controller.enqueue(chunk);
    },
  });
  const reading = entry.getData(pipe.writable, ZIP_OPTIONS).then(() => undefined, (error) => {
    fail(error);
    return error;
  });
  const decoder = new TextDecoder();
  let rest = "";
  try {
    for await (const chunk of pipe.readable) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop()!;
      yield* lines;
    }
  } catch (error) {
    throw damaged(EVENTS_ENTRY, (await reading) ?? error);
  }
  const error = await reading;
  if (error !== undefined) throw damaged(EVENTS_ENTRY, error);
  rest += decoder.decode();
  if (rest !== "") yield rest;
}

async function* readEvents(entry: FileEntry): AsyncGenerator<ArchivedEvent> {
  let n = 0;
  for await (const line of readLines(entry)) yield parseEventLine(line, ++n);
}

async function verify(entry: FileEntry, manifest: Manifest): Promise<BackupSummary> {
  const hash = createHash("sha256");
  const apps = new Set<string>();
  let bytes = 0, count = 0, min = Infinity, max = -Infinity, previous = "";
  let first: string | undefined, last: string | undefined;
  // The first malformed line is reported after the checksum: if the bytes are not the ones the
  // manifest describes, that is what went wrong.
  let problem: SyncError | undefined;
  const onBytes = (chunk: Uint8Array) => {
    hash.update(chunk);
    bytes += chunk.length;
  };
  for await (const line of readLines(entry, onBytes)) {
    count++;
    if (problem) continue;
    try {
      const event = parseEventLine(line, count);
      const key = instantKey(event.createdAt)!;
      if (key < previous) {
        throw invalid(
          `${EVENTS_ENTRY} line ${count}: createdAt goes back in time (not in commit order)`,
        );
      }
      previous = key;
      first ??= event.createdAt;
      last = event.createdAt;
      apps.add(event.appId);
      min = Math.min(min, event.change.schemaVersion);
      max = Math.max(max, event.change.schemaVersion);
    } catch (error) {
      if (!(error instanceof SyncError)) throw error;
      problem = error;
    }
  }
  const sha = hash.digest("hex");
  if (sha !== manifest.eventsSha256) {
    throw checksum(
      `${EVENTS_ENTRY} has SHA-256 ${sha}, the manifest says ${manifest.eventsSha256}: the events were altered or damaged`,
    );
  }
  if (problem) throw problem;
  if (count !== manifest.eventCount) {
    throw mismatch(
      `${EVENTS_ENTRY} holds ${count} events, the manifest says ${manifest.eventCount}`,
    );
  }
  const sorted = [...apps].sort();
  if (show(sorted) !== show(manifest.apps)) {
    throw mismatch(
      `The events belong to apps ${show(sorted)}, the manifest says ${show(manifest.apps)}`,
    );
  }
  if (count > 0 && (min !== manifest.schemaVersionMin || max !== manifest.schemaVersionMax)) {
    throw mismatch(
      `The events have schema versions ${min}–${max}, the manifest says ${manifest.schemaVersionMin}–${manifest.schemaVersionMax}`,
    );
  }
  return {
    manifest,
    eventCount: count,
    eventsBytes: bytes,
    apps: sorted,
    ...(first !== undefined && last !== undefined
      ? { firstEventAt: first, lastEventAt: last }
      : {}),
    ...(count > 0 ? { schemaVersionMin: min, schemaVersionMax: max } : {}),
  };
}
