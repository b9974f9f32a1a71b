/**
 * PostgreSQL goes away under load and comes back: the server (a real process) reaches its own
 * fresh database through a TCP proxy on loopback that the test cuts and restores; the shared
 * PostgreSQL itself is never touched. Devices push steadily throughout. During the cut every
 * request fails fast with 503 + Retry-After and a JSON body; after the restore pushes succeed,
 * /health is ok and notifications cross instances again, without a restart; read straight from
 * the database at the end, every batch is there whole or not at all.
 */
import assert from "node:assert/strict";
import { openPostgres } from "../../src/store/db.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import { Device, type PageBody, taskInsert } from "../helpers/client.ts";
import { POSTGRES_URL, scratchPostgres } from "../helpers/databases.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { eventually, WsClient } from "../helpers/realtime_clients.ts";
import { startServer } from "../helpers/server_process.ts";
import { type CutMode, startTcpProxy } from "../helpers/tcp_proxy.ts";

/** The server's DATABASE_TIMEOUT_SECONDS in this test. */
const TIMEOUT_SECONDS = 2;
/**
 * Added to the configured timeout for the fail-fast bound: a loaded two-core machine, JSON, HTTP.
 * What the bound rules out is a hang: postgres.js's default connect_timeout is 30 s, and a
 * statement on a silently dropped connection waits for TCP retransmission (minutes).
 */
const SLACK_MS = 6000;
const DEVICES = 6, BATCH = 5;

interface Outcome {
  device: number;
  eventIds: string[];
  titles: Map<string, string>;
  sentAt: number;
  answeredAt: number;
  status: number;
  retryAfter: string | null;
  body: Record<string, unknown>;
}

/** Devices of one user pushing batches back to back, every answer recorded. */
function startLoad(url: string, token: string) {
  const outcomes: Outcome[] = [];
  const failures: string[] = [];
  let running = true;
  const devices = Array.from({ length: DEVICES }, async (_, d) => {
    const device = new Device(url, token, `device-${d}`);
    let since = EPOCH_CURSOR;
    for (let b = 0; running; b++) {
      const changes = Array.from({ length: BATCH }, (_, i) => {
        const id = `d${d}-b${b}-${i}`;
        return taskInsert(id, `title ${id}`);
      });
      const sentAt = performance.now();
      try {
        const reply = await device.request<PageBody>(`/sync/todo`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ clientId: device.clientId, since, changes }),
          // Far beyond the bound asserted below: a hang shows as a failure, not a stuck test.
          signal: AbortSignal.timeout(60_000),
        });
        outcomes.push({
          device: d,
          eventIds: changes.map((c) => c.eventId),
          titles: new Map(changes.map((c) => [c.id, c.data.title])),
          sentAt,
          answeredAt: performance.now(),
          status: reply.status,
          retryAfter: reply.headers.get("retry-after"),
          body: reply.body,
        });
        if (reply.status === 200) since = reply.body.syncedUntil;
        else await new Promise((r) => setTimeout(r, 50));
      } catch (error) {
        failures.push(`device ${d}, batch ${b}: ${error}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });
  return {
    outcomes,
    failures,
    /** Answers of each device sent after `since` with this status. */
    countsAfter(since: number, status: number): number[] {
      const counts = Array<number>(DEVICES).fill(0);
      for (const o of outcomes) if (o.sentAt >= since && o.status === status) counts[o.device]!++;
      return counts;
    },
    async stop() {
      running = false;
      await Promise.all(devices);
    },
  };
}

Deno.test({
  name:
    "a server cut off from PostgreSQL under load fails fast, writes nothing by halves and recovers",
  ignore: !POSTGRES_URL,
  async fn(t) {
    const scratch = await scratchPostgres();
    const target = new URL(scratch.url);
    const proxy = startTcpProxy({
      hostname: target.hostname,
      port: Number(target.port || 5432),
    });
    const jwks = await startJwksServer();
    const settings = {
      JWKS_URL: jwks.url,
      DATABASE_TIMEOUT_SECONDS: String(TIMEOUT_SECONDS),
      DATABASE_POOL_MAX: "4",
    };
    const server = await startServer({ ...settings, DATABASE_URL: proxy.via(scratch.url) });
    // A second instance straight on the database: its pushes reach the first one's sockets only
    // through the first one's LISTEN connection, which goes through the proxy.
    const direct = await startServer({ ...settings, DATABASE_URL: scratch.url });
    const user = crypto.randomUUID();
    const load = startLoad(server.url, await jwks.token(user));
    let stopped = false;
    try {
      for (const mode of ["refuse", "blackhole"] as CutMode[]) {
        await t.step(`${mode}: pushes succeed before the cut`, async () => {
          const since = performance.now();
          await eventually(() => load.countsAfter(since, 200).every((n) => n >= 2), 30_000);
        });

        const cutAt = performance.now();
        proxy.cut(mode);

        await t.step(`${mode}: during the cut every push fails fast with 503`, async () => {
          await eventually(() => load.countsAfter(cutAt, 503).every((n) => n >= 2), 60_000);
          const health = await timed(() => fetch(`${server.url}/health`));
          assert.equal(health.response.status, 503);
          const body = await health.response.json();
          assert.equal(body.status, "degraded");
          assert.deepEqual(body.database, { kind: "postgres", status: "down" });
          assert.ok(health.ms <= TIMEOUT_SECONDS * 1000 + SLACK_MS, `/health took ${health.ms} ms`);
        });

        const restoredAt = performance.now();
        await proxy.restore();

        await t.step(`${mode}: after the restore pushes succeed again, no restart`, async () => {
          await eventually(() => load.countsAfter(restoredAt, 200).every((n) => n >= 2), 60_000);
          const health = await fetch(`${server.url}/health`);
          assert.equal(health.status, 200);
          assert.equal((await health.json()).database.status, "ok");
        });

        await t.step(`${mode}: every answer during the cut was a 503 within the bound`, () => {
          const during = load.outcomes.filter((o) =>
            o.answeredAt >= cutAt && o.sentAt < restoredAt && o.status !== 200
          );
          assert.ok(during.length >= DEVICES * 2);
          for (const o of during) {
            assert.equal(o.status, 503, JSON.stringify(o.body));
            assert.equal(o.retryAfter, "2");
            assert.equal(o.body.error, "database_unavailable");
            assert.equal(typeof o.body.message, "string");
            const waited = o.answeredAt - Math.max(o.sentAt, cutAt);
            assert.ok(
              waited <= TIMEOUT_SECONDS * 1000 + SLACK_MS,
              `a push answered ${Math.round(waited)} ms into the cut`,
            );
          }
          assert.deepEqual(load.failures, []);
        });

        await t.step(`${mode}: notifications from another instance arrive again`, async () => {
          const listener = crypto.randomUUID();
          const token = await jwks.token(listener);
          const ws = await WsClient.authed(server.url, token);
          const other = new Device(direct.url, token, "other");
          try {
            // Notifications are hints, lost while the listener reconnects: push until one arrives.
            await eventually(async () => {
              assert.equal((await other.push([taskInsert(crypto.randomUUID(), "x")])).status, 200);
              try {
                return (await ws.next(1000)).type === "sync-available";
              } catch {
                return false;
              }
            }, 60_000);
          } finally {
            await ws.close();
          }
        });
      }

      await load.stop();
      stopped = true;

      await t.step("read straight from the database, every batch is whole or absent", async () => {
        assert.deepEqual(load.failures, []);
        const db = openPostgres(scratch.url, { max: 1 });
        try {
          const changes = await db.query<{ eventId: string; id: string }>(
            `SELECT id::text AS "eventId", record_id AS id FROM sync_changes WHERE user_id = $1`,
            [user],
          );
          const records = await db.query<{ id: string; title: string }>(
            `SELECT record_id AS id, fields->'title'->>'v' AS title FROM sync_records
              WHERE user_id = $1`,
            [user],
          );
          const stored = new Set(changes.map((c) => c.eventId));
          const sent = new Set<string>();
          const expected = new Map<string, string>();
          let whole = 0, absent = 0;
          for (const o of load.outcomes) {
            const present = o.eventIds.filter((id) => stored.has(id)).length;
            assert.ok(present === 0 || present === BATCH, `a batch has ${present} of ${BATCH}`);
            if (o.status === 200) assert.equal(present, BATCH, "an acknowledged batch is stored");
            if (present === BATCH) {
              whole++;
              for (const [id, title] of o.titles) expected.set(id, title);
            } else absent++;
            o.eventIds.forEach((id) => sent.add(id));
          }
          assert.ok(whole > 0 && absent > 0, `${whole} batches stored, ${absent} not`);
          assert.deepEqual(changes.filter((c) => !sent.has(c.eventId)), [], "nothing unsent");
          // The LWW state follows the log exactly: a record for every stored change, none other.
          assert.equal(records.length, expected.size);
          for (const r of records) assert.equal(r.title, expected.get(r.id), r.id);
          const [clock] = await db.query<{ behind: boolean }>(
            `SELECT k.last_at < (SELECT max(created_at) FROM sync_changes WHERE user_id = $1)
                AS behind
               FROM sync_clock k WHERE k.user_id = $1`,
            [user],
          );
          assert.equal(clock?.behind, false, "the clock is not behind the log");
        } finally {
          await db.close();
        }
      });

      await t.step("the server still stops cleanly", async () => {
        assert.equal(await server.stop(), 0);
        assert.doesNotMatch(server.output(), /"unhandled error"|Uncaught/);
      });
    } finally {
      if (!stopped) await load.stop();
      await server.stop();
      await direct.stop();
      await proxy.close();
      await jwks.close();
      await scratch.drop();
    }
  },
});

async function timed(run: () => Promise<Response>): Promise<{ response: Response; ms: number }> {
  const started = performance.now();
  const response = await run();
  return { response, ms: performance.now() - started };
}
