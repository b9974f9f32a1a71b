/**
 * Soak (issue: measured). One server process (start-task flags, rate limits off) on a fresh
 * PostgreSQL database, a steady open-loop mix from many simulated devices for BENCH_SECONDS
 * (default 60): pushes, pulls, authenticated WebSockets receiving `sync-available`, SSE streams,
 * and sockets and streams reconnecting (bench/load.ts). Reported:
 * - throughput and p50/p99/max latency per kind (push, pull, socket and stream reconnects),
 *   latency measured from each operation's scheduled time (no coordinated omission);
 * - errors (any non-2xx, network error, unexpected close or error event): must be 0, the bench
 *   exits 1 otherwise; open connections left in `/health` after every client closed: must be 0;
 * - the server's RSS every BENCH_RSS_SECONDS (default 2), at start and end, and a growth verdict:
 *   the mean of the last third of the window against the mean of the middle third;
 * - the raw baseline, measured in the same run, half before and half after the soak: the same
 *   push and pull schedule and batches straight into PostgreSQL through postgres.js
 *   (`runRawLoad`: the log INSERT of each batch, the page SELECT of each pull), hence the ratios
 *   of push and pull latency;
 * - CPU used by the server and by this process (the load generator), and the machine's load
 *   average before and after: others' work on the machine shows in the latencies.
 *
 * DATABASE_URL names any database of the PostgreSQL server to use: the soak creates a fresh
 * database next to it and drops it afterwards.
 *
 *   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres deno task bench:soak
 */
import postgres from "postgres";
import { startJwksServer } from "../tests/helpers/jwks_server.ts";
import { startServer } from "../tests/helpers/server_process.ts";
import { cpuMillis, machine, round, rssBytes, saveResults, sleep } from "./lib.ts";
import { type Kind, type LoadResult, mergeResults, runLoad, runRawLoad, windows } from "./load.ts";

const env = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const SECONDS = env("BENCH_SECONDS", 60);
const WARMUP_SECONDS = env("BENCH_WARMUP_SECONDS", 10);
const RAW_SECONDS = env("BENCH_RAW_SECONDS", 20);
const RSS_SECONDS = env("BENCH_RSS_SECONDS", 2);
const workload = {
  users: env("BENCH_USERS", 200),
  devicesPerUser: env("BENCH_DEVICES", 3),
  pushesPerSecond: env("BENCH_PUSH_RATE", 40),
  pullsPerSecond: env("BENCH_PULL_RATE", 80),
  batchSize: env("BENCH_BATCH", 20),
};
const connections = {
  sockets: env("BENCH_SOCKETS", 400),
  streams: env("BENCH_STREAMS", 100),
  reconnectsPerSecond: env("BENCH_RECONNECT_RATE", 2),
};
const DATABASE_URL = Deno.env.get("DATABASE_URL");
if (!DATABASE_URL) {
  console.error(
    "Set DATABASE_URL to a database of the PostgreSQL server to soak against, e.g.\n" +
      "  DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres deno task bench:soak\n" +
      "The soak creates a fresh database next to it (and drops it afterwards); the raw baseline " +
      "writes to that database directly, so the user must be a superuser (row-level security).",
  );
  Deno.exit(2);
}

const MiB = 2 ** 20;
const mib = (bytes: number) => round(bytes / MiB, 1);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** CPU time all cores have spent busy (not idle, not waiting for I/O) since boot, in ms (Linux). */
async function machineBusyMillis(): Promise<number> {
  const stat = await Deno.readTextFile("/proc/stat");
  const ticks = stat.slice(0, stat.indexOf("\n")).trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = ticks;
  return (user! + nice! + system! + irq! + softirq! + steal!) * 10; // USER_HZ is 100
}

/** Least-squares slope of y over x. */
function slope(points: { x: number; y: number }[]): number {
  const mx = mean(points.map((p) => p.x)), my = mean(points.map((p) => p.y));
  const num = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0);
  const den = points.reduce((s, p) => s + (p.x - mx) ** 2, 0);
  return den === 0 ? 0 : num / den;
}

// A fresh database next to DATABASE_URL's, dropped at the end (and on Ctrl-C).
const admin = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
const dbName = `mana_sync_soak_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
await admin.unsafe(`CREATE DATABASE ${dbName}`);
const dbUrl = new URL(DATABASE_URL);
dbUrl.pathname = `/${dbName}`;
const dropDatabase = () => admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);

const jwks = await startJwksServer();
const server = await startServer({
  JWKS_URL: jwks.url,
  DATABASE_URL: dbUrl.toString(),
  RATE_LIMIT_PUSH_PER_MINUTE: "0",
  RATE_LIMIT_PULL_PER_MINUTE: "0",
  RATE_LIMIT_STREAM_PER_MINUTE: "0",
  RATE_LIMIT_WS_PER_MINUTE: "0",
});
// The server's default pool size, so the baseline gets as many connections as the server.
const sql = postgres(dbUrl.toString(), { max: 10, onnotice: () => {} });
const cleanUp = async () => {
  await sql.end();
  await server.stop();
  await jwks.close();
  await dropDatabase();
  await admin.end();
};
const onInterrupt = () => {
  console.error("interrupted: stopping the server and dropping the soak database");
  cleanUp().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onInterrupt);

const token = (userId: string) => jwks.token(userId, { expiresIn: "2h" });
const health = async () => await (await fetch(`${server.url}/health`)).json();

let exitCode = 0;
try {
  const rssFresh = await rssBytes(server.pid);
  const loadAverage = async () => (await Deno.readTextFile("/proc/loadavg")).split(" ")[0];
  const loadBefore = await loadAverage();

  // Warm-up, not measured: JIT, both pools, the plans of every statement.
  console.log(`warming up for ${WARMUP_SECONDS} s …`);
  await runLoad({ ...workload, ...connections, url: server.url, token, seconds: WARMUP_SECONDS });
  await runRawLoad(sql, { ...workload, seconds: WARMUP_SECONDS });
  // Half the raw baseline before the soak and half after, so that a change in what else the
  // machine runs weighs on both sides alike.
  console.log(`raw baseline for ${RAW_SECONDS / 2} s …`);
  const rawBefore = await runRawLoad(sql, { ...workload, seconds: RAW_SECONDS / 2 });
  await sleep(1000);
  const rssIdle = await rssBytes(server.pid);

  // The soak, with the server's RSS sampled throughout.
  console.log(
    `soaking for ${SECONDS} s: ${workload.pushesPerSecond} pushes/s of ${workload.batchSize} ` +
      `changes, ${workload.pullsPerSecond} pulls/s, ${connections.sockets} sockets, ` +
      `${connections.streams} streams, ${connections.reconnectsPerSecond} reconnects/s, ` +
      `${workload.users} users × ${workload.devicesPerUser} devices …`,
  );
  // RSS of the server, and CPU time of the server and of this process (the load generator).
  const rss: {
    at: number;
    bytes: number;
    serverCpu: number;
    clientCpu: number;
    machineBusyCpu: number;
  }[] = [];
  const sample = async () =>
    void rss.push({
      at: performance.now(),
      bytes: await rssBytes(server.pid),
      serverCpu: await cpuMillis(server.pid),
      clientCpu: await cpuMillis(Deno.pid),
      machineBusyCpu: await machineBusyMillis(),
    });
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sample();
      await sleep(RSS_SECONDS * 1000);
    }
  })();
  const soak = await runLoad({
    ...workload,
    ...connections,
    url: server.url,
    token,
    seconds: SECONDS,
  });
  await sample();
  sampling = false;
  await sampler;

  // Every client closed: the server must hold no connection any more.
  let leftOpen = -1;
  for (let i = 0; i < 50; i++) {
    leftOpen = (await health()).connections;
    if (leftOpen === 0) break;
    await sleep(200);
  }
  await sleep(1000);
  const rssAfterClose = await rssBytes(server.pid);

  console.log(`raw baseline for another ${RAW_SECONDS / 2} s …`);
  const raw = mergeResults(
    rawBefore,
    await runRawLoad(sql, { ...workload, seconds: RAW_SECONDS / 2 }),
  );

  const loadAfter = await loadAverage();

  // --- memory -----------------------------------------------------------------------------
  const inWindow = rss.filter((s) => s.at >= soak.startedAt && s.at <= soak.endedAt + 1);
  const series = inWindow.map((s) => ({
    second: round((s.at - soak.startedAt) / 1000, 1),
    mib: mib(s.bytes),
  }));
  const third = (i: number) =>
    series.filter((s) => s.second >= (i * SECONDS) / 3 && s.second < ((i + 1) * SECONDS) / 3)
      .map((s) => s.mib);
  const middle = mean(third(1)),
    last = mean([...third(2), ...series.filter((s) => s.second >= SECONDS).map((s) => s.mib)]);
  const growthMiB = round(last - middle, 1);
  const growthPercent = round((100 * (last - middle)) / middle, 1);
  const secondHalf = series.filter((s) => s.second >= SECONDS / 3);
  const slopeMiBPerMinute = round(
    slope(secondHalf.map((s) => ({ x: s.second / 60, y: s.mib }))),
    1,
  );
  // Garbage collection makes RSS a saw: within 5 % is flat for a run this short.
  const verdict = growthPercent <= 5 ? "flat" : "growing";
  // Share of one core used over the window (between its first and last samples).
  const first = inWindow[0]!, end = inWindow.at(-1)!;
  const share = (key: "serverCpu" | "clientCpu" | "machineBusyCpu") =>
    round((100 * (end[key] - first[key])) / (end.at - first.at));
  const cpu = {
    serverPercentOfOneCore: share("serverCpu"),
    loadGeneratorPercentOfOneCore: share("clientCpu"),
    /** PostgreSQL, and whatever else ran on the machine meanwhile. */
    restOfMachinePercentOfOneCore: round(
      share("machineBusyCpu") - share("serverCpu") - share("clientCpu"),
    ),
    cores: navigator.hardwareConcurrency,
  };
  const memory = {
    freshMiB: mib(rssFresh),
    afterWarmupMiB: mib(rssIdle),
    startMiB: series[0]?.mib ?? NaN,
    endMiB: series.at(-1)?.mib ?? NaN,
    peakMiB: Math.max(...series.map((s) => s.mib)),
    afterCloseMiB: mib(rssAfterClose),
    middleThirdMeanMiB: round(middle, 1),
    lastThirdMeanMiB: round(last, 1),
    growthMiB,
    growthPercent,
    slopeMiBPerMinuteAfterFirstThird: slopeMiBPerMinute,
    verdict,
    series,
  };

  // --- report -----------------------------------------------------------------------------
  const strip = (r: LoadResult) =>
    Object.fromEntries(
      (Object.entries(r.kinds) as [Kind, LoadResult["kinds"][Kind]][]).map((
        [k, { samples: _, ...rest }],
      ) => [k, { ...rest, perSecond: round(rest.perSecond, 1) }]),
    );
  const ratio = (kind: "push" | "pull", p: "p50" | "p99") =>
    round(soak.kinds[kind].latencyMs[p] / raw.kinds[kind].latencyMs[p]);
  const results = {
    machine: { ...await machine(), loadAverageBefore: loadBefore, loadAverageAfter: loadAfter },
    settings: {
      seconds: SECONDS,
      rawSeconds: RAW_SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      rssSampleSeconds: RSS_SECONDS,
      ...workload,
      ...connections,
    },
    manaSync: {
      kinds: strip(soak),
      windowsOf10s: {
        push: windows(soak.kinds.push.samples, 10),
        pull: windows(soak.kinds.pull.samples, 10),
      },
      errors: soak.errors,
      hints: soak.hints,
      changes: soak.changes,
      client: soak.client,
      setup: { ...soak.setup, ms: Math.round(soak.setup.ms) },
      cpu,
      connectionsLeftOpen: leftOpen,
    },
    raw: { kinds: strip(raw), errors: raw.errors, changes: raw.changes, client: raw.client },
    latencyRatioToRaw: {
      pushP50: ratio("push", "p50"),
      pushP99: ratio("push", "p99"),
      pullP50: ratio("pull", "p50"),
      pullP99: ratio("pull", "p99"),
    },
    memory,
  };

  const row = (kind: "push" | "pull", p: "p50" | "p99") => ({
    "mana-sync": round(soak.kinds[kind].latencyMs[p]),
    raw: round(raw.kinds[kind].latencyMs[p]),
    ratio: ratio(kind, p),
  });
  console.table({
    "push/s": {
      "mana-sync": round(soak.kinds.push.perSecond, 1),
      raw: round(raw.kinds.push.perSecond, 1),
      ratio: "",
    },
    "push p50 ms": row("push", "p50"),
    "push p99 ms": row("push", "p99"),
    "pull/s": {
      "mana-sync": round(soak.kinds.pull.perSecond, 1),
      raw: round(raw.kinds.pull.perSecond, 1),
      ratio: "",
    },
    "pull p50 ms": row("pull", "p50"),
    "pull p99 ms": row("pull", "p99"),
  });
  const { ws, sse } = soak.kinds;
  console.log(
    `reconnects: ${ws.ok} sockets (${round(ws.perSecond, 1)}/s), p50/p99 ${
      round(ws.latencyMs.p50)
    }/${round(ws.latencyMs.p99)} ms; ${sse.ok} streams (${round(sse.perSecond, 1)}/s), ` +
      `p50/p99 ${round(sse.latencyMs.p50)}/${round(sse.latencyMs.p99)} ms; setup opened ` +
      `${soak.setup.sockets.opened} sockets, ${soak.setup.streams.opened} streams in ` +
      `${round(soak.setup.ms / 1000, 1)} s`,
  );
  console.log(
    `hints: ${soak.hints.wsSyncAvailable} sync-available, ${soak.hints.sseEvents} SSE pages ` +
      `(${soak.hints.sseChanges} changes); pushed ${soak.changes.pushed} changes, received ` +
      `${soak.changes.receivedByPush} with pushes and ${soak.changes.receivedByPull} by pulls`,
  );
  console.log(
    `client: at most ${soak.client.maxInFlight} in flight, scheduler lag p99 ${
      round(soak.client.schedulerLagMs.p99)
    } ms, max ${round(soak.client.schedulerLagMs.max)} ms; open at the end ` +
      `${soak.client.openAtEnd.sockets}/${connections.sockets} sockets, ` +
      `${soak.client.openAtEnd.streams}/${connections.streams} streams; left open on the ` +
      `server after closing: ${leftOpen}`,
  );
  const perWindow = (kind: "push" | "pull") =>
    windows(soak.kinds[kind].samples, 10).map((w) => round(w.p99, 1)).join(", ");
  console.log(`p99 ms per 10 s: push ${perWindow("push")}; pull ${perWindow("pull")}`);
  console.log(
    `CPU (share of one core): server ${cpu.serverPercentOfOneCore} %, load generator ` +
      `${cpu.loadGeneratorPercentOfOneCore} %, rest of the machine (PostgreSQL, other work) ` +
      `${cpu.restOfMachinePercentOfOneCore} % (${cpu.cores} cores)`,
  );
  console.log(
    `server RSS: fresh ${memory.freshMiB} MiB, after warm-up ${memory.afterWarmupMiB}, soak start ` +
      `${memory.startMiB}, end ${memory.endMiB}, peak ${memory.peakMiB}, after closing ` +
      `${memory.afterCloseMiB}; middle third ${memory.middleThirdMeanMiB} → last third ` +
      `${memory.lastThirdMeanMiB} MiB (${growthMiB >= 0 ? "+" : ""}${growthMiB} MiB, ` +
      `${growthPercent} %), slope ${slopeMiBPerMinute} MiB/min: ${verdict}`,
  );
  console.log(`RSS series (s: MiB): ${series.map((s) => `${s.second}: ${s.mib}`).join(", ")}`);
  console.log(`machine load average (1 min): ${loadBefore} before, ${loadAfter} after`);
  console.log(`errors: ${soak.errors.total} (raw baseline: ${raw.errors.total})`);
  if (soak.errors.total > 0 || raw.errors.total > 0) {
    console.log(JSON.stringify({ soak: soak.errors, raw: raw.errors }, null, 2));
    exitCode = 1;
  }
  // What the server complained about, by message, to tell overload from a bug.
  const complaints = new Map<string, number>();
  for (const line of server.output().split("\n")) {
    if (!/"level":"(warn|error)"/.test(line)) continue;
    const { level, msg, message } = JSON.parse(line);
    const key = `${level}: ${msg}${message ? ` (${message})` : ""}`;
    complaints.set(key, (complaints.get(key) ?? 0) + 1);
  }
  if (complaints.size > 0) {
    console.log("server warnings and errors:");
    for (const [key, n] of complaints) console.log(`  ${n} × ${key}`);
  }
  if (leftOpen !== 0) {
    console.log(`the server still counts ${leftOpen} connections after every client closed`);
    exitCode = 1;
  }
  console.log(`results: ${await saveResults("soak", results)}`);
} finally {
  Deno.removeSignalListener("SIGINT", onInterrupt);
  await cleanUp();
}
Deno.exit(exitCode);
