/**
 * /metrics and the logs of the real server process: requests by route pattern and status, latency
 * histograms, stored changes, conflicts, connections, notifications, the database pool; one JSON
 * access line per request with its id, and never a token or a record's value in the output.
 */
import assert from "node:assert/strict";
import { Device } from "../helpers/client.ts";
import { POSTGRES_URL } from "../helpers/databases.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { eventually, WsClient } from "../helpers/realtime_clients.ts";
import { scrape } from "../helpers/metrics.ts";
import { startServer } from "../helpers/server_process.ts";

const requests = (method: string, route: string, status: number) =>
  `mana_sync_http_requests_total{method="${method}",route="${route}",status="${status}"}`;
const timed = (operation: string, suffix: "count" | "sum") =>
  `mana_sync_request_duration_seconds_${suffix}{operation="${operation}"}`;

Deno.test("metrics and logs end to end", async () => {
  const jwks = await startJwksServer();
  const server = await startServer({ JWKS_URL: jwks.url, DATABASE_POOL_MAX: "5" });
  const user = crypto.randomUUID();
  const token = await jwks.token(user);
  const laptop = new Device(server.url, token, "laptop");
  const phone = new Device(server.url, token, "phone");
  const secret = (n: number) => `secret-value-${n}-${crypto.randomUUID()}`;
  const secrets = [1, 2, 3, 4].map(secret);
  const fakeToken = `not-a-token-${crypto.randomUUID()}`;
  let socket: WsClient | undefined;
  try {
    const before = await scrape(server.url);
    const delta = (after: Map<string, number>, key: string) =>
      (after.get(key) ?? 0) - (before.get(key) ?? 0);

    // The phone listens: it hears the laptop's pushes that stored something, not its own.
    socket = await WsClient.authed(server.url, token, { clientId: "phone" });
    const open = await scrape(server.url);
    assert.equal(open.get("mana_sync_connections_total"), 1);
    assert.equal(open.get("mana_sync_users_connected"), 1);

    const first = [
      {
        eventId: crypto.randomUUID(),
        table: "tasks",
        id: "t1",
        op: "insert",
        data: { id: "t1", title: secrets[0], updatedAt: "2024-01-01T10:00:00.000Z" },
      },
      {
        eventId: crypto.randomUUID(),
        table: "tasks",
        id: "t1",
        op: "update",
        fields: { title: { value: secrets[1], updatedAt: "2024-01-01T10:05:00.000Z" } },
      },
    ];
    const pushed = await laptop.push(first);
    assert.equal(pushed.status, 200);
    assert.deepEqual(pushed.body.conflicts, []);
    assert.deepEqual(await socket.next(), {
      type: "sync-available",
      appId: "todo",
      tables: ["tasks"],
    });
    // A retry stores nothing and tells no one.
    assert.equal((await laptop.push(first)).status, 200);
    // An older value loses: stored in the log, reported as a conflict.
    const stale = await phone.push([{
      eventId: crypto.randomUUID(),
      table: "tasks",
      id: "t1",
      op: "update",
      fields: { title: { value: secrets[2], updatedAt: "2024-01-01T09:00:00.000Z" } },
    }]);
    assert.equal(stale.status, 200);
    assert.equal(stale.body.conflicts.length, 1);

    const pulled = await phone.pull("tasks");
    assert.equal(pulled.status, 200);
    assert.equal(pulled.body.serverChanges.length, 2, "the laptop's two changes");
    const exported = await fetch(`${server.url}/backup/export`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(exported.status, 200);
    assert.ok((await exported.arrayBuffer()).byteLength > 0);

    const anonymous = new Device(server.url, "", "laptop");
    assert.equal((await anonymous.push(first)).status, 401);
    const forged = await anonymous.request("/sync/todo/pull?collection=tasks&since=1970-01-01Z", {
      headers: { authorization: `Bearer ${fakeToken}` },
    });
    assert.equal(forged.status, 401);
    const invalid = await laptop.push([{
      table: "tasks",
      id: "t2",
      op: "insert",
      data: { id: "t2", updatedAt: secrets[3] },
    }]);
    assert.equal(invalid.status, 400);
    assert.match(String(invalid.body.message), /^Cannot apply change 0: /);
    assert.equal((await anonymous.request("/no/such/path")).status, 404);
    await socket.close();
    socket = undefined;
    await eventually(async () =>
      (await scrape(server.url)).get("mana_sync_connections_total") === 0
    );

    const after = await scrape(server.url);
    const pushRoute = "/sync/:appId", pullRoute = "/sync/:appId/pull";
    assert.equal(delta(after, requests("POST", pushRoute, 200)), 3);
    assert.equal(delta(after, requests("POST", pushRoute, 401)), 1);
    assert.equal(delta(after, requests("POST", pushRoute, 400)), 1);
    assert.equal(delta(after, requests("GET", pullRoute, 200)), 1);
    assert.equal(delta(after, requests("GET", pullRoute, 401)), 1);
    assert.equal(delta(after, requests("GET", "/backup/export", 200)), 1);
    assert.equal(delta(after, requests("GET", "/ws", 101)), 1);
    assert.equal(delta(after, requests("GET", "unmatched", 404)), 1);
    assert.ok(
      [...after.keys()].every((k) => !k.includes("/sync/todo") && !k.includes("/no/such")),
      "route patterns only, never raw paths",
    );

    // Push: three answered, one 401, one 400. Pull: one answered, one 401. Export: one.
    for (const [operation, count] of [["push", 5], ["pull", 2], ["export", 1]] as const) {
      assert.equal(delta(after, timed(operation, "count")), count, operation);
      assert.equal(
        after.get(`mana_sync_request_duration_seconds_bucket{operation="${operation}",le="+Inf"}`),
        after.get(timed(operation, "count")),
      );
      assert.ok(delta(after, timed(operation, "sum")) > 0);
    }

    assert.equal(delta(after, 'mana_sync_changes_stored_total{source="push"}'), 3);
    assert.equal(delta(after, "mana_sync_conflicts_total"), 1);
    assert.equal(delta(after, "mana_sync_notifications_sent_total"), 1);
    assert.equal(delta(after, "mana_sync_notifications_dropped_total"), 0);
    assert.equal(after.get("mana_sync_users_connected"), 0);
    assert.equal(after.get("mana_sync_db_pool_max"), POSTGRES_URL ? 5 : 1);
    assert.equal(after.get("mana_sync_db_in_flight"), 0);
    assert.equal(delta(after, 'mana_sync_db_errors_total{kind="transient"}'), 0);
    assert.equal(delta(after, 'mana_sync_db_errors_total{kind="other"}'), 0);
  } finally {
    await socket?.close();
    assert.equal(await server.stop(), 0);
    await jwks.close();
  }

  const output = server.output();
  assert.ok(!output.includes(token), "the bearer token is never logged");
  assert.ok(!output.includes(fakeToken), "nor a forged one");
  for (const value of secrets) assert.ok(!output.includes(value), "nor a record's value");
  const lines = output.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  const accessLines = lines.filter((l) => l.msg === "request");
  assert.ok(accessLines.length >= 13);
  for (const line of accessLines) {
    assert.match(line.requestId, /^[0-9a-f-]{36}$/);
    assert.equal(typeof line.status, "number");
    assert.ok(!("authorization" in line) && !("headers" in line));
  }
  assert.equal(new Set(accessLines.map((l) => l.requestId)).size, accessLines.length);
  assert.ok(accessLines.some((l) => l.status === 401 && l.path === "/sync/todo/pull"));
});
