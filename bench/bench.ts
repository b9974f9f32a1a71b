/**
 * Performance benchmark (issue: push and pull close to what PostgreSQL itself can do). Starts what
 * it needs — a fresh database, a JWKS server, the real server process with the `start` task's
 * flags — and pairs every figure with a raw baseline measured in the same run on the same
 * database:
 * - push ingest: changes/s through `POST /sync/{appId}` from DEVICES concurrent devices (distinct
 *   users, then one shared user), batches of 200 realistic changes, each device sending the cursor
 *   of its previous reply; raw: the same rows inserted straight through postgres.js in batches of
 *   200 (one transaction: the log rows, then the record rows), as many connections as the server's
 *   pool;
 * - pull / first sync: a new device pulls PULL_CHANGES changes page by page; raw: the same rows
 *   read through a postgres.js cursor in batches of the page size;
 * - cost per change: server CPU time and wall time per 1,000 changes pushed (batches of 200) and
 *   pulled, as one account grows from 1,000 to COST_MAX changes (history seeded in SQL);
 * - latency under a steady mixed load (bench/load.ts, open loop) at half the peak push rate
 *   measured above (or BENCH_LATENCY_RATE pushes/s), against the same schedule replayed straight
 *   into PostgreSQL.
 *
 *   deno task bench          (BENCH_ADMIN_URL: a PostgreSQL server to create the database on)
 */
import postgres from "postgres";
import { parsePush } from "../src/sync/change.ts";
import { mergeChange } from "../src/sync/merge.ts";
import { toStored } from "../src/sync/wire.ts";
import { LOG_COLUMNS } from "../src/store/sync_store.ts";
import { startJwksServer } from "../tests/helpers/jwks_server.ts";
import { startServer } from "../tests/helpers/server_process.ts";
import { cpuMillis, machine, machineCpuMillis, round, saveResults, todoChange } from "./lib.ts";
import { runLoad, runRawLoad } from "./load.ts";

const env = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const DEVICES = env("BENCH_DEVICES", 16);
const BATCHES = env("BENCH_BATCHES", 25); // per device
const BATCH = 200;
const PULL_CHANGES = env("BENCH_PULL_CHANGES", 100_000);
const COST_MAX = env("BENCH_COST_MAX", 1_000_000);
const LATENCY_SECONDS = env("BENCH_LATENCY_SECONDS", 20);
/** Pushes per second of the steady load; default half the peak measured by the push scenario. */
const LATENCY_RATE = env("BENCH_LATENCY_RATE", 0);
if (!(LATENCY_RATE >= 0)) throw new Error("BENCH_LATENCY_RATE must be a number of pushes/s ≥ 0");
const STREAMS = env("BENCH_STREAMS", 0);
/** BENCH_ONLY=push,latency,pull,cost runs a subset (latency measures the peak first, unless
 * BENCH_LATENCY_RATE is set). */
const ONLY = new Set(
  (Deno.env.get("BENCH_ONLY") ?? "push,latency,pull,cost").split(",").map((s) => s.trim()),
);
const POOL = 10; // the server's default DATABASE_POOL_MAX; the raw baseline gets as many
const PAGE = 1000; // the server's default PULL_PAGE_SIZE
const ADMIN_URL = Deno.env.get("BENCH_ADMIN_URL") ??
  "postgresql://postgres@127.0.0.1:5432/postgres";

const ms = () => performance.now();
const perSecond = (n: number, millis: number) => Math.round(n / (millis / 1000));

// ─── setup ──────────────────────────────────────────────────────────────────────────────────────
const dbName = `mana_bench_${Date.now()}`;
const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
await admin.unsafe(`CREATE DATABASE ${dbName}`);
const url = new URL(ADMIN_URL);
url.pathname = `/${dbName}`;
const DATABASE_URL = url.href;
const jwks = await startJwksServer();
const PROFILE = Deno.env.get("BENCH_CPU_PROF"); // a directory: the server writes a .cpuprofile
/** BENCH_DENO_FLAGS: more flags for the server's `deno run` (e.g. `--v8-flags=…`), space-separated. */
const EXTRA_FLAGS = (Deno.env.get("BENCH_DENO_FLAGS") ?? "").split(/\s+/).filter((f) => f !== "");
const server = await startServer({ JWKS_URL: jwks.url, DATABASE_URL }, {
  denoFlags: [...(PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE}`] : []), ...EXTRA_FLAGS],
});
const sql = postgres(DATABASE_URL, { max: POOL, onnotice: () => {} });

interface Client {
  userId: string;
  clientId: string;
  token: string;
  since: string;
}

async function client(userId: string, clientId: string): Promise<Client> {
  return { userId, clientId, token: await jwks.token(userId), since: "1970-01-01T00:00:00.000Z" };
}

async function post(c: Client, body: string) {
  const res = await fetch(`${server.url}/sync/todo`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${c.token}`,
      "x-client-id": c.clientId,
      "content-type": "application/json",
    },
    body,
  });
  const reply = await res.json();
  if (res.status !== 200) throw new Error(`push answered ${res.status}: ${JSON.stringify(reply)}`);
  c.since = reply.syncedUntil;
  return reply as { serverChanges: unknown[]; hasMore: boolean; syncedUntil: string };
}

async function pull(c: Client, collection: string) {
  let rows = 0;
  for (;;) {
    const q = new URLSearchParams({ collection, since: c.since });
    const res = await fetch(`${server.url}/sync/todo/pull?${q}`, {
      headers: { authorization: `Bearer ${c.token}`, "x-client-id": c.clientId },
    });
    const reply = await res.json();
    if (res.status !== 200) throw new Error(`pull answered ${res.status}`);
    rows += reply.serverChanges.length;
    c.since = reply.syncedUntil;
    if (!reply.hasMore) return rows;
  }
}

/** Device `d`'s batches: its own records, realistic todo changes, timestamps of today. */
function batches(d: number, count: number, offset = 0) {
  return Array.from({ length: count }, (_, b) =>
    Array.from(
      { length: BATCH },
      (_, k) => todoChange((offset + b) * BATCH + k, { prefix: `d${d}-`, base }),
    ));
}

/** Changes are timed from two days ago, a second apart: never ahead of the server's clock. */
const base = Date.now() - 2 * 86_400_000;

// ─── raw baseline: the same rows straight through postgres.js ──────────────────────────────────
let stampCounter = 0;
const STAMP_BASE = Date.UTC(2025, 0, 1);
/** Distinct timestamps (a millisecond apart: postgres.js sends them through a `Date`). */
const stamp = () => new Date(STAMP_BASE + stampCounter++).toISOString();

/** The rows the server would write for one batch: log rows, and the record rows (last wins). */
function rawRows(userId: string, clientId: string, changes: unknown[]) {
  const receivedAt = new Date().toISOString();
  const request = parsePush({ clientId, changes }, {});
  const log = request.changes.map((c) => {
    const { data, fieldTimestamps } = toStored(c);
    return {
      id: crypto.randomUUID(),
      app_id: "todo",
      table_name: c.table,
      record_id: c.id,
      user_id: userId,
      op: c.op,
      data: data === null ? null : JSON.stringify(data),
      field_timestamps: JSON.stringify(fieldTimestamps),
      client_id: clientId,
      created_at: stamp(),
      schema_version: c.schemaVersion,
    };
  });
  const records = new Map<string, Record<string, unknown>>();
  for (const c of request.changes) {
    const { state } = mergeChange(undefined, c, { clientId, receivedAt });
    records.set(`${c.table}\0${c.id}`, {
      user_id: userId,
      app_id: "todo",
      table_name: c.table,
      record_id: c.id,
      fields: JSON.stringify(state),
    });
  }
  return { log, records: [...records.values()] };
}

async function rawInsert(rows: ReturnType<typeof rawRows>) {
  await sql.begin(async (tx) => {
    await tx`INSERT INTO sync_changes ${tx(rows.log)}`;
    await tx`INSERT INTO sync_records ${tx(rows.records)}
      ON CONFLICT (user_id, app_id, table_name, record_id)
      DO UPDATE SET fields = EXCLUDED.fields, updated_at = now()`;
  });
}

/** Runs `work(d, b)` for every device and batch, devices concurrently; returns the elapsed ms. */
async function concurrently(work: (d: number, b: number) => Promise<unknown>) {
  const started = ms();
  await Promise.all(
    Array.from({ length: DEVICES }, async (_, d) => {
      for (let b = 0; b < BATCHES; b++) await work(d, b);
    }),
  );
  return ms() - started;
}

// ─── push ingest ────────────────────────────────────────────────────────────────────────────────
async function pushIngest(shared: boolean, run: number) {
  const users = Array.from(
    { length: DEVICES },
    (_, d) => `bench-${run}-${shared ? "shared" : `user${d}`}`,
  );
  const plans = Array.from({ length: DEVICES }, (_, d) => batches(d, BATCHES));
  const changes = DEVICES * BATCHES * BATCH;

  const rawPlans = plans.map((p, d) =>
    p.map((changes) => rawRows(`raw-${users[d]}`, `device-${d}`, changes))
  );
  const rawMs = await concurrently((d, b) => rawInsert(rawPlans[d]![b]!));

  const clients = await Promise.all(users.map((u, d) => client(u, `device-${d}`)));
  const bodies = plans.map((p, d) =>
    p.map((changes) => JSON.stringify({ clientId: `device-${d}`, changes }))
  );
  let received = 0;
  const syncMs = await concurrently(async (d, b) => {
    const c = clients[d]!;
    const body = JSON.parse(bodies[d]![b]!);
    body.since = c.since;
    // Not `received += await …`: that reads `received` before awaiting and loses the other
    // devices' additions made meanwhile (it reported 75,000 where 1.1 million arrived).
    const reply = await post(c, JSON.stringify(body));
    received += reply.serverChanges.length;
  });
  return {
    changes,
    rawPerSecond: perSecond(changes, rawMs),
    perSecond: perSecond(changes, syncMs),
    ratio: round(rawMs / syncMs),
    serverChangesReceived: received,
  };
}

/** Pulls the server answered from its read-ahead so far (`/metrics`). */
async function readAheadHits(): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const hits = /^mana_sync_pull_read_ahead_total\{result="hit"\} (\d+)$/m.exec(text)?.[1];
  if (hits === undefined) throw new Error("/metrics has no mana_sync_pull_read_ahead_total");
  return Number(hits);
}

// ─── pull / first sync ──────────────────────────────────────────────────────────────────────────
async function firstSync() {
  const userId = "bench-pull";
  const writer = await client(userId, "writer");
  for (let i = 0; i < PULL_CHANGES; i += 1000) {
    const changes = Array.from(
      { length: Math.min(1000, PULL_CHANGES - i) },
      (_, k) => todoChange(i + k, { base }),
    );
    await post(writer, JSON.stringify({ clientId: "writer", changes }));
  }
  // As in the cost scenario: measure reads, not autovacuum catching up with the writes above.
  await sql.unsafe(`VACUUM ANALYZE sync_changes, sync_records`);
  await sql.unsafe(`CHECKPOINT`);
  const collections = ["lists", "tasks"];
  const results: { rawMs: number; syncMs: number; cpuMs: number; pagesReadAhead: number }[] = [];
  for (let run = 0; run < 3; run++) {
    let started = ms();
    let rawRows = 0;
    await sql.begin(async (tx) => {
      for (const collection of collections) {
        const query = `SELECT ${LOG_COLUMNS} FROM sync_changes
          WHERE user_id = $1 AND app_id = 'todo' AND table_name = $2 AND client_id <> 'reader'
          ORDER BY created_at`;
        for await (const rows of tx.unsafe(query, [userId, collection]).cursor(PAGE)) {
          rawRows += rows.length;
        }
      }
    });
    const rawMs = ms() - started;

    const reader = await client(userId, `reader-${run}`);
    const hits = await readAheadHits();
    const cpu = await cpuMillis(server.pid);
    started = ms();
    let rows = 0;
    for (const collection of collections) {
      reader.since = "1970-01-01T00:00:00.000Z";
      rows += await pull(reader, collection);
    }
    const syncMs = ms() - started;
    const cpuMs = await cpuMillis(server.pid) - cpu;
    const pagesReadAhead = await readAheadHits() - hits;
    if (rows !== PULL_CHANGES || rawRows !== PULL_CHANGES) {
      throw new Error(`pulled ${rows} and read ${rawRows} changes, not ${PULL_CHANGES}`);
    }
    results.push({ rawMs, syncMs, cpuMs, pagesReadAhead });
  }
  const best = (k: "rawMs" | "syncMs" | "cpuMs") => Math.min(...results.map((r) => r[k]));
  return {
    changes: PULL_CHANGES,
    rawPerSecond: perSecond(PULL_CHANGES, best("rawMs")),
    perSecond: perSecond(PULL_CHANGES, best("syncMs")),
    ratio: round(best("rawMs") / best("syncMs")),
    /** The server's own CPU time (user + system) per 1,000 changes pulled, best run. */
    serverCpuMsPer1k: round(best("cpuMs") / (PULL_CHANGES / 1000), 1),
    /** Pages served from the read-ahead, per run (of about PULL_CHANGES / PAGE). */
    pagesReadAhead: results.map((r) => r.pagesReadAhead).join("/"),
  };
}

// ─── cost per change as the account grows ───────────────────────────────────────────────────────
/** Adds history to `userId` straight in SQL until it holds `size` changes (and records). */
async function grow(userId: string, from: number, size: number) {
  await sql.unsafe(
    `INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data,
       field_timestamps, client_id, created_at)
     SELECT gen_random_uuid(), 'todo', 'tasks', 'h' || g, $1, 'insert',
       jsonb_build_object('id', 'h' || g, 'title', 'task ' || g, 'done', false, 'priority', g % 3),
       '{}', 'history', timestamptz '2024-01-01' + g * interval '1 millisecond'
     FROM generate_series($2::int, $3::int - 1) g`,
    [userId, from, size],
  );
  await sql.unsafe(
    `INSERT INTO sync_records (user_id, app_id, table_name, record_id, fields)
     SELECT $1, 'todo', 'tasks', 'h' || g, jsonb_build_object('title',
       jsonb_build_object('v', 'task ' || g, 't', '2024-01-01T00:00:00.000Z', 'c', 'history'))
     FROM generate_series($2::int, $3::int - 1) g`,
    [userId, from, size],
  );
  await sql.unsafe(
    `INSERT INTO sync_clock (user_id, last_at) VALUES ($1, now()) ON CONFLICT (user_id) DO NOTHING`,
    [userId],
  );
  // Measure the steady state, not PostgreSQL catching up with the bulk load above.
  await sql.unsafe(`VACUUM ANALYZE sync_changes, sync_records`);
  await sql.unsafe(`CHECKPOINT`);
}

async function costPerChange() {
  const userId = "bench-cost";
  const writer = await client(userId, "writer");
  const reader = await client(userId, "reader");
  const sizes = [1_000, 10_000, 100_000, 1_000_000].filter((s) => s <= COST_MAX);
  const rows: Record<string, number>[] = [];
  let size = 0, offset = 0;
  for (const target of sizes) {
    await grow(userId, size, target);
    size = target;
    // Both devices are up to date before each measurement: each receives what the other sends.
    writer.since = reader.since = (await sql`SELECT to_char(last_at AT TIME ZONE 'UTC',
      'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS c FROM sync_clock WHERE user_id = ${userId}`)[0]!.c;
    const plan = batches(0, 25, offset);
    offset += plan.length;
    const cpu0 = await cpuMillis(server.pid), t0 = ms();
    for (const changes of plan) {
      await post(writer, JSON.stringify({ clientId: "writer", since: writer.since, changes }));
    }
    const cpu1 = await cpuMillis(server.pid), t1 = ms();
    let pulled = 0;
    for (const collection of ["lists", "tasks"]) pulled += await pull(reader, collection);
    const cpu2 = await cpuMillis(server.pid), t2 = ms();
    const pushed = plan.length * BATCH;
    rows.push({
      accountChanges: size,
      pushCpuMsPer1k: round((cpu1 - cpu0) / (pushed / 1000), 1),
      pushWallMsPer1k: round((t1 - t0) / (pushed / 1000), 1),
      pullCpuMsPer1k: round((cpu2 - cpu1) / (pulled / 1000), 1),
      pullWallMsPer1k: round((t2 - t1) / (pulled / 1000), 1),
    });
  }
  return rows;
}

// ─── latency under a steady mixed load ──────────────────────────────────────────────────────────
/**
 * Open-loop load (bench/load.ts) at half the peak push rate measured above (or
 * BENCH_LATENCY_RATE), with as many pulls
 * per second, sockets and streams held open; the raw baseline replays the same schedule straight
 * into PostgreSQL (insert of the log rows, one SELECT per pull page).
 */
async function latency(peakChangesPerSecond: number) {
  const pushesPerSecond = LATENCY_RATE ||
    Math.max(1, Math.round(peakChangesPerSecond / 2 / BATCH));
  const workload = {
    users: 100,
    devicesPerUser: 2,
    pushesPerSecond,
    pullsPerSecond: pushesPerSecond,
    seconds: LATENCY_SECONDS,
    batchSize: BATCH,
  };
  const token = (userId: string) => jwks.token(userId);
  const cpu0 = await cpuMillis(server.pid), machine0 = await machineCpuMillis(), t0 = ms();
  const load = await runLoad({
    ...workload,
    url: server.url,
    token,
    sockets: 200,
    streams: STREAMS,
  });
  const cpu1 = await cpuMillis(server.pid), machine1 = await machineCpuMillis(), t1 = ms();
  const raw = await runRawLoad(sql, workload);
  const machine2 = await machineCpuMillis();
  const busy = (a: { busy: number; total: number }, b: { busy: number; total: number }) =>
    round((b.busy - a.busy) / (b.total - a.total), 2);
  if (load.errors.total > 0) {
    console.warn(`${load.errors.total} errors under load, e.g. ${load.errors.examples[0]}`);
  }
  const row = (kind: "push" | "pull") => ({
    perSecond: round(load.kinds[kind].perSecond, 1),
    p50Ms: round(load.kinds[kind].latencyMs.p50, 1),
    p99Ms: round(load.kinds[kind].latencyMs.p99, 1),
    rawP50Ms: round(raw.kinds[kind].latencyMs.p50, 1),
    rawP99Ms: round(raw.kinds[kind].latencyMs.p99, 1),
    errors: load.kinds[kind].errors,
  });
  return {
    pushesPerSecond,
    batch: BATCH,
    push: row("push"),
    pull: row("pull"),
    /** Share of all cores busy (server, PostgreSQL and this generator together), and the server's. */
    cpu: {
      machineBusy: busy(machine0, machine1),
      rawMachineBusy: busy(machine1, machine2),
      serverCores: round((cpu1 - cpu0) / (t1 - t0), 2),
    },
  };
}

// ─── run ────────────────────────────────────────────────────────────────────────────────────────
try {
  const results: Record<string, unknown> = {
    machine: await machine(),
    settings: {
      devices: DEVICES,
      batches: BATCHES,
      batch: BATCH,
      pool: POOL,
      page: PAGE,
      only: [...ONLY],
      latencyRate: LATENCY_RATE || "half the peak",
      denoFlags: EXTRA_FLAGS,
    },
  };
  // Warm-up (JIT, prepared statements, caches), not reported.
  await pushIngest(false, -1);
  let peak = 0;
  if (ONLY.has("push") || (ONLY.has("latency") && !LATENCY_RATE)) {
    const distinct = await pushIngest(false, 0);
    const shared = await pushIngest(true, 0);
    results.pushIngest = { distinctUsers: distinct, sharedUser: shared };
    console.table({
      "push, distinct users": distinct,
      "push, one shared user": shared,
    });
    peak = distinct.perSecond;
  }
  if (ONLY.has("latency")) {
    const steady = await latency(peak);
    results.latency = steady;
    console.log(
      `steady load: ${steady.pushesPerSecond} pushes/s of ${BATCH} changes` +
        (LATENCY_RATE ? "" : " (half the peak)"),
    );
    console.table({ push: steady.push, pull: steady.pull });
    console.log(
      `CPU busy (all cores): ${steady.cpu.machineBusy} under the server's load, ` +
        `${steady.cpu.rawMachineBusy} under the raw replay; server ${steady.cpu.serverCores} cores`,
    );
  }
  if (ONLY.has("pull")) {
    const pulled = await firstSync();
    results.firstSync = pulled;
    console.table({ "first sync pull": pulled });
  }
  if (ONLY.has("cost")) {
    const cost = await costPerChange();
    results.costPerChange = cost;
    console.table(cost);
  }
  console.log(`results: ${await saveResults("bench", results)}`);
} finally {
  await sql.end();
  await server.stop();
  await jwks.close();
  await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
}
