/**
 * Real-time benchmark (issue: WebSocket hubs and SSE). One run, ratios against raw baselines
 * measured in the same run:
 * - memory per idle authenticated WebSocket with SOCKETS open on one mana-sync instance, against a
 *   bare Deno.serve WebSocket server holding as many idle sockets;
 * - notification latency (push response received → sync-available at the other device) with
 *   USERS connected and a steady push rate, on one instance and across two instances on one
 *   PostgreSQL, against the round trip of a message on a bare Deno WebSocket.
 *
 *   DATABASE_URL=postgresql://postgres@127.0.0.1:5432/bench deno task bench:realtime
 */
import { startJwksServer } from "../tests/helpers/jwks_server.ts";
import { startServer } from "../tests/helpers/server_process.ts";
import { machine, round, rssBytes, saveResults, sleep, summarize } from "./lib.ts";

const SOCKETS = Number(Deno.env.get("BENCH_SOCKETS") ?? 5000);
const USERS = Number(Deno.env.get("BENCH_USERS") ?? 1000);
const RATE = Number(Deno.env.get("BENCH_PUSH_RATE") ?? 50); // pushes per second
const SECONDS = Number(Deno.env.get("BENCH_SECONDS") ?? 10);
const DATABASE_URL = Deno.env.get("DATABASE_URL");
if (!DATABASE_URL) {
  console.error(
    "Set DATABASE_URL to an empty PostgreSQL database: the cross-instance run needs one.",
  );
  Deno.exit(2);
}

async function startRawServer() {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", new URL("./raw_ws_server.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!/"port":(\d+)/.test(out)) out += (await reader.read()).value ?? "";
  const port = Number(/"port":(\d+)/.exec(out)![1]);
  return {
    url: `ws://127.0.0.1:${port}`,
    pid: child.pid,
    stop: async () => (child.kill(), await child.status),
  };
}

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
}

/** Opens `count` sockets, `parallel` at a time, running `setup` on each. */
async function openMany(count: number, parallel: number, make: (i: number) => Promise<WebSocket>) {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += parallel) {
    sockets.push(
      ...await Promise.all(
        Array.from({ length: Math.min(parallel, count - i) }, (_, j) => make(i + j)),
      ),
    );
  }
  return sockets;
}

function firstMessage(ws: WebSocket): Promise<string> {
  return new Promise((resolve) =>
    ws.addEventListener("message", (e) => resolve(e.data), { once: true })
  );
}

async function settle(pid: number): Promise<number> {
  await sleep(2000);
  return await rssBytes(pid);
}

const jwks = await startJwksServer();
const a = await startServer({ JWKS_URL: jwks.url, DATABASE_URL });
const b = await startServer({ JWKS_URL: jwks.url, DATABASE_URL });
const raw = await startRawServer();
const users = Array.from({ length: USERS }, (_, i) => `bench-user-${i}-${crypto.randomUUID()}`);
const tokens = await Promise.all(users.map((u) => jwks.token(u)));

try {
  // --- memory per idle socket -------------------------------------------------------------
  const rawBefore = await settle(raw.pid);
  const rawSockets = await openMany(SOCKETS, 250, () => open(raw.url));
  const rawAfter = await settle(raw.pid);

  const aBefore = await settle(a.pid);
  const wsUrl = a.url.replace("http", "ws") + "/ws";
  const syncSockets = await openMany(SOCKETS, 250, async (i) => {
    const ws = await open(wsUrl);
    const ok = firstMessage(ws);
    ws.send(JSON.stringify({ type: "auth", token: tokens[i % USERS] }));
    if (!(await ok).includes("auth-ok")) throw new Error("auth failed");
    return ws;
  });
  const aAfter = await settle(a.pid);
  const health = await (await fetch(`${a.url}/health`)).json();

  const memory = {
    sockets: SOCKETS,
    users: USERS,
    rawPerSocketBytes: Math.round((rawAfter - rawBefore) / SOCKETS),
    syncPerSocketBytes: Math.round((aAfter - aBefore) / SOCKETS),
    syncRssWithSocketsMiB: round(aAfter / 2 ** 20, 1),
    syncRssIdleMiB: round(aBefore / 2 ** 20, 1),
    healthConnections: health.connections,
  };

  // --- notification latency ---------------------------------------------------------------
  // One listening socket per user (the first of its five) on instance A.
  const listeners = syncSockets.slice(0, USERS);
  const notificationLatency = async (pushUrl: string, seconds = SECONDS) => {
    const latencies: number[] = [], fromSent: number[] = [];
    let early = 0;
    const pending = new Map<number, { sent: number; response?: number; notified?: number }>();
    const record = (i: number) => {
      const p = pending.get(i)!;
      if (p.response === undefined || p.notified === undefined) return;
      pending.delete(i);
      if (p.notified < p.response) early++;
      latencies.push(Math.max(0, p.notified - p.response));
      fromSent.push(p.notified - p.sent);
    };
    const handlers = listeners.map((ws, i) => {
      const h = () => {
        const p = pending.get(i);
        if (p && p.notified === undefined) (p.notified = performance.now(), record(i));
      };
      ws.addEventListener("message", h);
      return h;
    });
    const total = RATE * seconds, inflight: Promise<void>[] = [];
    const start = performance.now();
    for (let k = 0; k < total; k++) {
      await sleep(Math.max(0, start + (k * 1000) / RATE - performance.now()));
      const i = k % USERS;
      pending.set(i, { sent: performance.now() });
      inflight.push((async () => {
        const res = await fetch(`${pushUrl}/sync/bench`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${tokens[i]}`,
            "x-client-id": "pusher",
            "content-type": "application/json",
          },
          body: JSON.stringify({
            changes: [{ table: "items", id: `r${k}`, op: "insert", data: { id: `r${k}`, n: k } }],
          }),
        });
        await res.body?.cancel();
        if (res.status !== 200) throw new Error(`push answered ${res.status}`);
        pending.get(i)!.response = performance.now();
        record(i);
      })());
    }
    await Promise.all(inflight);
    await sleep(1000);
    listeners.forEach((ws, i) => ws.removeEventListener("message", handlers[i]!));
    return {
      ...summarize(latencies),
      lost: pending.size,
      notifiedBeforeResponse: early,
      fromRequestSent: summarize(fromSent),
    };
  };

  const rawRoundTrip = async () => {
    const ws = rawSockets[0]!;
    const samples: number[] = [];
    const total = RATE * SECONDS, start = performance.now();
    for (let k = 0; k < total; k++) {
      await sleep(Math.max(0, start + (k * 1000) / RATE - performance.now()));
      const sent = performance.now();
      const echoed = firstMessage(ws);
      ws.send(`ping ${k}`);
      await echoed;
      samples.push(performance.now() - sent);
    }
    return summarize(samples);
  };

  const rawLatency = await rawRoundTrip();
  // A short warm-up of each path first (JIT, connection pools), not measured.
  await notificationLatency(a.url, 2);
  const oneInstance = await notificationLatency(a.url);
  await notificationLatency(b.url, 2);
  const twoInstances = await notificationLatency(b.url);

  const results = {
    machine: await machine(),
    settings: { sockets: SOCKETS, users: USERS, pushesPerSecond: RATE, seconds: SECONDS },
    memory: { ...memory, ratioToRaw: round(memory.syncPerSocketBytes / memory.rawPerSocketBytes) },
    latencyMs: {
      rawWebSocketRoundTrip: rawLatency,
      oneInstance: { ...oneInstance, p99RatioToRaw: round(oneInstance.p99 / rawLatency.p99) },
      twoInstances: { ...twoInstances, p99RatioToRaw: round(twoInstances.p99 / rawLatency.p99) },
    },
  };
  console.table({
    "bytes per idle socket": {
      "mana-sync": memory.syncPerSocketBytes,
      raw: memory.rawPerSocketBytes,
      ratio: results.memory.ratioToRaw,
    },
    [`RSS with ${SOCKETS} sockets (MiB)`]: {
      "mana-sync": memory.syncRssWithSocketsMiB,
      raw: round(rawAfter / 2 ** 20, 1),
      ratio: round(aAfter / rawAfter),
    },
    "latency p50 ms, one instance": {
      "mana-sync": round(oneInstance.p50),
      raw: round(rawLatency.p50),
      ratio: round(oneInstance.p50 / rawLatency.p50),
    },
    "latency p99 ms, one instance": {
      "mana-sync": round(oneInstance.p99),
      raw: round(rawLatency.p99),
      ratio: results.latencyMs.oneInstance.p99RatioToRaw,
    },
    "latency p50 ms, two instances": {
      "mana-sync": round(twoInstances.p50),
      raw: round(rawLatency.p50),
      ratio: round(twoInstances.p50 / rawLatency.p50),
    },
    "latency p99 ms, two instances": {
      "mana-sync": round(twoInstances.p99),
      raw: round(rawLatency.p99),
      ratio: results.latencyMs.twoInstances.p99RatioToRaw,
    },
  });
  const sent = (x: typeof oneInstance) =>
    `${round(x.fromRequestSent.p50)}/${round(x.fromRequestSent.p99)}`;
  console.log(
    `push request sent → notified, p50/p99 ms: one instance ${sent(oneInstance)}, two ${
      sent(twoInstances)
    }`,
  );
  console.log(
    `notified before the push response arrived: ${oneInstance.notifiedBeforeResponse}/${oneInstance.n} (one instance), ` +
      `${twoInstances.notifiedBeforeResponse}/${twoInstances.n} (two); lost: ${oneInstance.lost}, ${twoInstances.lost}`,
  );
  console.log(`results: ${await saveResults("realtime", results)}`);
  for (const ws of [...rawSockets, ...syncSockets]) ws.close();
} finally {
  await a.stop();
  await b.stop();
  await raw.stop();
  await jwks.close();
}
