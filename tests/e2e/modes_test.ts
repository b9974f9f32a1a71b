/**
 * The two ways to run the service: `deno task dev` (embedded everything, a local key pair and the
 * token task) and `deno task start` (production: refuses to run without JWKS_URL).
 */
import assert from "node:assert/strict";
import { Device, taskInsert } from "../helpers/client.ts";
import { runTaskOnce, startServer } from "../helpers/server_process.ts";

Deno.test("dev mode: a token from `deno task token` pushes and pulls, with nothing else running", async () => {
  const dataDir = `.data/test-dev-${crypto.randomUUID()}`;
  // No DATABASE_URL, no JWKS_URL: the embedded database and the dev key pair.
  const server = await startServer({ DATABASE_URL: "", JWKS_URL: "" }, { task: "dev", dataDir });
  try {
    const minted = await runTaskOnce("token", ["alice"], { DATA_DIR: dataDir });
    assert.equal(minted.code, 0, minted.stderr);
    const token = minted.stdout.trim();
    assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);

    const laptop = new Device(server.url, token, "laptop"),
      phone = new Device(server.url, token, "phone");
    assert.equal((await laptop.push([taskInsert("t1", "Buy milk")])).status, 200);
    const pulled = await phone.pull("tasks");
    assert.equal(pulled.status, 200);
    assert.deepEqual(pulled.body.serverChanges.map((c) => c.data?.title), ["Buy milk"]);
    assert.match(server.output(), /"kind":"pglite"/);

    const health = await phone.request("/health");
    assert.deepEqual(health.body.database, { kind: "pglite", status: "ok" });
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

Deno.test("dev mode: the token task refuses to run without a user id", async () => {
  const result = await runTaskOnce("token", [], { DATA_DIR: `.data/test-${crypto.randomUUID()}` });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /Usage: deno task token <userId>/);
});

Deno.test("start mode refuses to run without JWKS_URL and says why", async () => {
  const result = await runTaskOnce("start", [], { JWKS_URL: "", DATABASE_URL: "", PORT: "0" });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /JWKS_URL is required/);
});

Deno.test("start mode refuses a bad variable, naming it", async () => {
  const result = await runTaskOnce("start", [], {
    JWKS_URL: "http://127.0.0.1:1/jwks",
    PORT: "not-a-port",
  });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /PORT="not-a-port"/);
});
