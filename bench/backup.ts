/**
 * Backup export benchmark (issue: backup). One run, a ratio against a raw baseline measured in the
 * same run on the same rows:
 * - raw: postgres.js reads the user's log (same query, same columns) through a cursor in this
 *   process, and the same JSON lines go through a `deflate-raw` CompressionStream — no RLS
 *   transaction, no zip framing, no SHA-256, no HTTP;
 * - mana-sync: `GET /backup/export` from the real server process (start task flags), the body read
 *   as fast as loopback allows.
 * Throughput as events/s and MB/s of uncompressed events.jsonl (medians of the runs). Memory: the
 * RSS of a fresh server process (restarted after seeding) when idle, at its peak while exporting a
 * quarter-size account of the same shape first, then before and at the peak of each large export
 * (sampled every 20 ms): flat memory is the same peak for both sizes.
 *
 *   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench deno task bench:backup
 */
import postgres from "postgres";
import { eventLine } from "../src/backup/writer.ts";
import { LOG_COLUMNS } from "../src/store/sync_store.ts";
import type { LogRow } from "../src/sync/wire.ts";
import { startJwksServer } from "../tests/helpers/jwks_server.ts";
import { startServer } from "../tests/helpers/server_process.ts";
import { machine, round, rssBytes, saveResults, sleep, todoChange as change } from "./lib.ts";

const EVENTS = Number(Deno.env.get("BENCH_EVENTS") ?? 200_000);
const RUNS = Number(Deno.env.get("BENCH_RUNS") ?? 5);
const DATABASE_URL = Deno.env.get("DATABASE_URL");
if (!DATABASE_URL) {
  console.error("Set DATABASE_URL to a PostgreSQL database: the raw baseline reads it directly.");
  Deno.exit(2);
}

/** The raw baseline: the user's log through a postgres.js cursor, JSON lines deflated. */
async function rawExport(sql: postgres.Sql, userId: string) {
  const started = performance.now();
  const deflate = new CompressionStream("deflate-raw");
  const counting = (async () => {
    let bytes = 0;
    for await (const chunk of deflate.readable) bytes += chunk.length;
    return bytes;
  })();
  const writer = deflate.writable.getWriter();
  const encoder = new TextEncoder();
  let events = 0, jsonl = 0, text = "";
  const query = `SELECT ${LOG_COLUMNS} FROM sync_changes WHERE user_id = $1 ORDER BY created_at`;
  for await (const rows of sql.unsafe(query, [userId]).cursor(1000)) {
    for (const row of rows) {
      text += eventLine(row as unknown as LogRow) + "\n";
      events++;
    }
    if (text.length >= 64 * 1024) {
      const bytes = encoder.encode(text);
      jsonl += bytes.length;
      await writer.write(bytes);
      text = "";
    }
  }
  const bytes = encoder.encode(text);
  jsonl += bytes.length;
  await writer.write(bytes);
  await writer.close();
  const compressed = await counting;
  return { ms: performance.now() - started, events, jsonl, compressed };
}

/** `GET /backup/export` read to the end, with the server's RSS sampled meanwhile. */
async function serverExport(url: string, token: string, pid: number) {
  const before = await rssBytes(pid);
  let peak = before, running = true;
  const sampling = (async () => {
    while (running) {
      peak = Math.max(peak, await rssBytes(pid));
      await sleep(20);
    }
  })();
  const started = performance.now();
  const res = await fetch(`${url}/backup/export`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (res.status !== 200) throw new Error(`export answered ${res.status}`);
  let compressed = 0;
  for await (const chunk of res.body!) compressed += chunk.length;
  const ms = performance.now() - started;
  running = false;
  await sampling;
  return { ms, compressed, rssBefore: before, rssPeak: peak };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const jwks = await startJwksServer();
let server = await startServer({ JWKS_URL: jwks.url, DATABASE_URL });
const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {}, types: {} });
const userId = `bench-backup-${crypto.randomUUID()}`;
const token = await jwks.token(userId);
// A quarter-size account of the same shape: memory that stays flat is the same for both.
const smallUserId = `bench-backup-small-${crypto.randomUUID()}`;
const smallToken = await jwks.token(smallUserId);

async function seed(url: string, bearer: string, events: number) {
  for (let i = 0; i < events; i += 1000) {
    const changes = Array.from({ length: Math.min(1000, events - i) }, (_, k) => change(i + k));
    const res = await fetch(`${url}/sync/todo`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${bearer}`,
        "x-client-id": `device-${(i / 1000) % 3}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({ changes }),
    });
    await res.body?.cancel();
    if (res.status !== 200) throw new Error(`push answered ${res.status}`);
  }
}

try {
  const seeding = performance.now();
  await seed(server.url, token, EVENTS);
  await seed(server.url, smallToken, EVENTS / 4);
  console.log(
    `seeded ${EVENTS} + ${EVENTS / 4} events in ${
      round((performance.now() - seeding) / 1000, 1)
    } s`,
  );
  // Measure a fresh process: its memory owes nothing to the seeding.
  await server.stop();
  server = await startServer({ JWKS_URL: jwks.url, DATABASE_URL });
  const rssIdle = await rssBytes(server.pid);
  const small = await serverExport(server.url, smallToken, server.pid);

  // One warm-up of each path (JIT, pools, page cache), then alternating measured runs.
  const warm = await rawExport(sql, userId);
  await serverExport(server.url, token, server.pid);
  const raw: Awaited<ReturnType<typeof rawExport>>[] = [];
  const sync: Awaited<ReturnType<typeof serverExport>>[] = [];
  for (let run = 0; run < RUNS; run++) {
    raw.push(await rawExport(sql, userId));
    sync.push(await serverExport(server.url, token, server.pid));
  }
  if (warm.events !== EVENTS) throw new Error(`raw read ${warm.events} events, not ${EVENTS}`);

  const rawMs = median(raw.map((r) => r.ms)), syncMs = median(sync.map((r) => r.ms));
  const jsonlMB = warm.jsonl / 1e6;
  const perSecond = (ms: number) => ({
    eventsPerSecond: Math.round(EVENTS / (ms / 1000)),
    jsonlMBPerSecond: round(jsonlMB / (ms / 1000), 1),
  });
  const results = {
    machine: await machine(),
    settings: { events: EVENTS, runs: RUNS, jsonlMB: round(jsonlMB, 1) },
    raw: {
      medianMs: Math.round(rawMs),
      deflatedMB: round(warm.compressed / 1e6, 1),
      ...perSecond(rawMs),
    },
    manaSync: {
      medianMs: Math.round(syncMs),
      zipMB: round(sync[0]!.compressed / 1e6, 1),
      ...perSecond(syncMs),
      rssIdleMiB: round(rssIdle / 2 ** 20, 1),
      rssPeakQuarterAccountMiB: round(small.rssPeak / 2 ** 20, 1),
      rssBeforeMiB: round(median(sync.map((r) => r.rssBefore)) / 2 ** 20, 1),
      rssPeakMiB: round(Math.max(...sync.map((r) => r.rssPeak)) / 2 ** 20, 1),
      rssGrowthMiB: round(Math.max(...sync.map((r) => r.rssPeak - r.rssBefore)) / 2 ** 20, 1),
    },
    throughputRatioToRaw: round(rawMs / syncMs),
  };
  console.table({
    "events/s": {
      "mana-sync": results.manaSync.eventsPerSecond,
      raw: results.raw.eventsPerSecond,
      ratio: results.throughputRatioToRaw,
    },
    "MB/s (events.jsonl)": {
      "mana-sync": results.manaSync.jsonlMBPerSecond,
      raw: results.raw.jsonlMBPerSecond,
      ratio: results.throughputRatioToRaw,
    },
  });
  console.log(
    `${EVENTS} events, events.jsonl ${results.settings.jsonlMB} MB → zip ${results.manaSync.zipMB} MB; ` +
      `server RSS: ${results.manaSync.rssIdleMiB} MiB fresh; peak ${results.manaSync.rssPeakQuarterAccountMiB} MiB ` +
      `exporting a quarter-size account first, then ${results.manaSync.rssPeakMiB} MiB exporting this one ` +
      `(${results.manaSync.rssBeforeMiB} MiB before each, +${results.manaSync.rssGrowthMiB} MiB at most)`,
  );
  console.log(`results: ${await saveResults("backup", results)}`);
} finally {
  await sql.end();
  await server.stop();
  await jwks.close();
}
