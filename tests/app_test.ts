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
