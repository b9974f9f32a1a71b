/**
 * HTTP behaviour without sockets (`app.request`): routing, the error mapping, health. The store
 * here is a stand-in that fails on purpose; the real store is exercised in tests/store and e2e.
 */
import assert from "node:assert/strict";
import { createApp } from "../src/app.ts";
import { staticKeySource } from "../src/auth/keys.ts";
import { createVerifier } from "../src/auth/verifier.ts";
import { loadDevKeys, mintDevToken } from "../src/auth/dev_keys.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/log.ts";
import { Hub } from "../src/realtime/hub.ts";
import type { BackupStore } from "../src/store/backup_store.ts";
import type { SyncStore } from "../src/store/sync_store.ts";
import { parseMetrics } from "./helpers/metrics.ts";

const dataDir = await Deno.makeTempDir();
const keys = await loadDevKeys(dataDir);
const token = await mintDevToken(keys, "alice");
const source = await staticKeySource(keys.jwks);

function appWith(store: Partial<SyncStore>, database = { kind: "postgres", ok: true }) {
  const lines: Record<string, unknown>[] = [];
  const app = createApp({
    config: loadConfig(() => undefined, { dev: true }),
    store: store as SyncStore,
    backup: {} as BackupStore,
    verifier: createVerifier(source),
    logger: createLogger("debug", (line) => lines.push(JSON.parse(line))),
    checkDatabase: () => Promise.resolve(database),
    hub: new Hub(),
    publish: () => {},
  });
  return { app, lines };
}

const push = (app: ReturnType<typeof appWith>["app"]) =>
  app.request("/sync/todo", {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "x-client-id": "laptop",
      "content-type": "application/json",
    },
    body: JSON.stringify({ changes: [] }),
  });

Deno.test("createApp() maps a lost database connection to 503 with Retry-After", async () => {
  const lost = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
    code: "ECONNREFUSED",
  });
  const { app, lines } = appWith({ push: () => Promise.reject(lost) });
  const res = await push(app);
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "2");
  assert.deepEqual(await res.json(), {
    error: "database_unavailable",
    message: "The database is unavailable, try again shortly",
  });
  assert.ok(lines.some((l) => l.msg === "database unavailable" && l.code === "ECONNREFUSED"));
});

Deno.test("createApp() turns an unexpected error into a logged 500 without details", async () => {
  const bug = new Error('syntax error at or near "SELEC" in SELEC * FROM sync_changes');
  const { app, lines } = appWith({ push: () => Promise.reject(bug) });
  const res = await push(app);
  assert.equal(res.status, 500);
  const body = await res.text();
  assert.equal(body, JSON.stringify({ error: "internal_error", message: "Internal server error" }));
  const logged = lines.find((l) => l.msg === "unhandled error");
  assert.ok(logged && String(logged.message).includes("SELEC"), "the details go to the log only");
});

Deno.test("createApp() never logs the bearer token", async () => {
  const { app, lines } = appWith({ push: () => Promise.reject(new Error("boom")) });
  await push(app);
  const all = JSON.stringify(lines);
  assert.ok(!all.includes(token));
  assert.ok(lines.some((l) => l.msg === "request" && l.status === 500 && l.userId === "alice"));
});

Deno.test("createApp() answers 404 and 405 as JSON", async () => {
  const { app } = appWith({});
  const missing = await app.request("/nothing");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error, "not_found");
  const wrong = await app.request("/sync/todo", { method: "PUT" });
  assert.equal(wrong.status, 405);
  assert.equal(wrong.headers.get("allow"), "POST, OPTIONS");
  assert.equal((await wrong.json()).error, "method_not_allowed");
});

Deno.test("createApp() reports a database that does not answer as degraded health", async () => {
  const { app } = appWith({}, { kind: "postgres", ok: false });
  const res = await app.request("/health");
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.equal(body.status, "degraded");
  assert.deepEqual(body.database, { kind: "postgres", status: "down" });
});

Deno.test("createApp() echoes a sane X-Request-Id and replaces an insane one", async () => {
  const { app } = appWith({});
  assert.equal(
    (await app.request("/health", { headers: { "x-request-id": "abc-123" } })).headers.get(
      "x-request-id",
    ),
    "abc-123",
  );
  const replaced = (await app.request("/health", { headers: { "x-request-id": "a b\u0001" } }))
    .headers.get("x-request-id");
  assert.match(replaced ?? "", /^[0-9a-f-]{36}$/);
});

Deno.test("createApp() checks the token before touching the store", async () => {
  let called = false;
  const { app } = appWith({
    push: () => (called = true, Promise.reject(new Error("unreachable"))),
  });
  const res = await app.request("/sync/todo", { method: "POST", body: "{}" });
  assert.equal(res.status, 401);
  assert.equal(called, false);
});

/** `/metrics` of `app` as series → value. */
async function series(app: ReturnType<typeof appWith>["app"]): Promise<Map<string, number>> {
  return parseMetrics(await (await app.request("/metrics")).text());
}

Deno.test("createApp() labels requests with the route pattern, a fixed label when none matched", async () => {
  const { app } = appWith({});
  await app.request("/sync/todo", { method: "PUT" });
  await app.request("/sync/notes", { method: "PUT" });
  await app.request("/sync/todo", {
    method: "OPTIONS",
    headers: { origin: "http://localhost:5173", "access-control-request-method": "POST" },
  });
  await app.request("/nothing/here");
  await app.request("/health", { method: "PROPFIND" });
  await app.request("/sync/todo/pull?collection=tasks&since=1970-01-01T00:00:00Z");
  const s = await series(app);
  const key = (method: string, route: string, status: number) =>
    `mana_sync_http_requests_total{method="${method}",route="${route}",status="${status}"}`;
  assert.equal(s.get(key("PUT", "/sync/:appId", 405)), 2);
  assert.equal(s.get(key("OPTIONS", "/sync/:appId", 204)), 1, "a preflight names its route");
  assert.equal(s.get(key("GET", "unmatched", 404)), 1);
  assert.equal(s.get(key("other", "/health", 405)), 1, "unknown methods share one label");
  assert.equal(s.get(key("GET", "/sync/:appId/pull", 401)), 1);
  assert.equal(s.get('mana_sync_request_duration_seconds_count{operation="pull"}'), 1);
  assert.equal(s.get('mana_sync_request_duration_seconds_count{operation="push"}'), 0, "a 405");
  assert.equal(s.get('mana_sync_request_duration_seconds_count{operation="export"}'), 0);
  assert.ok([...s.keys()].every((k) => !k.includes("todo") && !k.includes("nothing")));
  assert.ok(![...s.keys()].some((k) => k.startsWith("mana_sync_db_")), "no database stats given");
});

Deno.test("createApp() counts the changes a push stored and the conflicts it reported", async () => {
  const conflict = {
    table: "tasks",
    id: "t1",
    field: "title",
    clientValue: "old",
    clientTimestamp: "2024-01-01T09:00:00.000Z",
    serverValue: "new",
    serverTimestamp: "2024-01-01T10:00:00.000Z",
  };
  let fail = false;
  const { app } = appWith({
    push: () =>
      fail ? Promise.reject(new Error("boom")) : Promise.resolve({
        serverChanges: [],
        syncedUntil: "2024-01-01T10:00:00.000000Z",
        hasMore: false,
        tables: ["tasks"],
        stored: 2,
        conflicts: [conflict, conflict],
      }),
  });
  assert.equal((await push(app)).status, 200);
  assert.equal((await push(app)).status, 200);
  fail = true;
  assert.equal((await push(app)).status, 500);
  const s = await series(app);
  assert.equal(s.get('mana_sync_changes_stored_total{source="push"}'), 4);
  assert.equal(s.get("mana_sync_conflicts_total"), 4);
  assert.equal(s.get('mana_sync_request_duration_seconds_count{operation="push"}'), 3);
  assert.equal(
    s.get('mana_sync_http_requests_total{method="POST",route="/sync/:appId",status="500"}'),
    1,
  );
});
