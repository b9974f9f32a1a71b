/**
 * `deno task backup:verify <file.mana>`: checks an archive (entries, manifest, event count,
 * SHA-256, schema versions, one JSON object per line). Prints a summary and exits 0, or says what
 * is wrong and exits 1 (2 for usage errors). The file is read with random access, never whole.
 */
import { Reader } from "@zip.js/zip.js";
import { openBackup } from "../src/backup/reader.ts";
import { SyncError } from "../src/sync/errors.ts";

/** zip.js reads byte ranges; this serves them from a file (reads are serialized). */
class FileReader extends Reader<Deno.FsFile> {
  #queue: Promise<unknown> = Promise.resolve();

  constructor(readonly file: Deno.FsFile) {
    super(file);
  }

  override async init(): Promise<void> {
    this.size = (await this.file.stat()).size;
  }

  override readUint8Array(index: number, length: number): Promise<Uint8Array> {
    const read = this.#queue.then(async () => {
      await this.file.seek(index, Deno.SeekMode.Start);
      const data = new Uint8Array(Math.max(0, Math.min(length, this.size - index)));
      let filled = 0;
      while (filled < data.length) {
        const n = await this.file.read(data.subarray(filled));
        if (n === null) return data.subarray(0, filled);
        filled += n;
      }
      return data;
    });
    this.#queue = read.catch(() => {});
    return read;
  }
}

const [path, ...rest] = Deno.args;
if (!path || rest.length > 0) {
  console.error("Usage: deno task backup:verify <file.mana>");
  Deno.exit(2);
}

let file: Deno.FsFile;
try {
  file = await Deno.open(path);
} catch (error) {
  console.error(`Cannot open ${path}: ${error instanceof Error ? error.message : error}`);
  Deno.exit(2);
}

try {
  const summary = await (await openBackup(new FileReader(file))).verify();
  const { manifest } = summary;
  const versions = summary.schemaVersionMin === summary.schemaVersionMax
    ? `${summary.schemaVersionMin}`
    : `${summary.schemaVersionMin}–${summary.schemaVersionMax}`;
  console.log(
    [
      `${path}: OK`,
      `  user      ${manifest.userId}`,
      `  exported  ${manifest.createdAt} by ${manifest.producedBy}`,
      `  apps      ${summary.apps.length ? summary.apps.join(", ") : "(none)"}`,
      `  events    ${summary.eventCount}${
        summary.eventCount ? ` (schema version ${versions})` : ""
      }, ${summary.eventsBytes} bytes uncompressed`,
      `  span      ${
        summary.firstEventAt ? `${summary.firstEventAt} → ${summary.lastEventAt}` : "(empty)"
      }`,
      `  sha256    ${manifest.eventsSha256}`,
    ].join("\n"),
  );
} catch (error) {
  if (!(error instanceof SyncError)) throw error;
  console.error(`${path}: ${error.message} (${error.code})`);
  Deno.exit(1);
} finally {
  file.close();
}
