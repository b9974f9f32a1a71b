/**
 * The billing gate against a fake mana-credits the test runs: push, pull and stream are gated;
 * WebSocket and backup export are not; exempt apps are never asked about; trouble fails open.
 */
import assert from "node:assert/strict";
import { unzip } from "../helpers/backup.ts";
import { Device, taskInsert } from "../helpers/client.ts";
import { startCreditsServer } from "../helpers/credits_server.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { WsClient } from "../helpers/realtime_clients.ts";
import { scrape } from "../helpers/metrics.ts";
import { startServer } from "../helpers/server_process.ts";

Deno.test("billing gate end to end", async (t) => {
  const jwks = await startJwksServer();
  const credits = startCreditsServer("active");
  const server = await startServer({
    JWKS_URL: jwks.url,
    MANA_CREDITS_URL: credits.url,
    MANA_SERVICE_KEY: "test-service-key",
    BILLING_EXEMPT_APPS: "calc",
  });
  const asked = (userId: string) => credits.requests.filter((r) => r.userId === userId).length;
  try {
    await t.step("an active user syncs; the answer is cached", async () => {
      const user = crypto.randomUUID();
      const phone = new Device(server.url, await jwks.token(user), "phone");
      assert.equal((await phone.push([taskInsert("a", "x")])).status, 200);
      assert.equal((await phone.pull("tasks")).status, 200);
      assert.equal((await phone.pull("tasks")).status, 200);
      assert.equal(asked(user), 1);
      assert.deepEqual(
        credits.requests.find((r) => r.userId === user)?.serviceKey,
        "test-service-key",
      );
    });

    await t.step(
      "an inactive user gets exactly the 402 body on push, pull and stream",
      async () => {
        const user = crypto.randomUUID();
        credits.answer(user, "inactive");
        const token = await jwks.token(user);
        const phone = new Device(server.url, token, "phone");
        // Spelled out, not taken from the code: the clients match these bytes.
        const expected =
          '{"error":"sync_inactive","message":"Cloud Sync ist nicht aktiv. Aktiviere Sync in den Einstellungen."}';
        for (
          const path of [
            "/sync/todo/pull?collection=tasks&since=1970-01-01T00:00:00Z",
            "/sync/todo/stream?collections=tasks&since=1970-01-01T00:00:00Z",
          ]
        ) {
          const res = await fetch(server.url + path, {
            headers: { authorization: `Bearer ${token}`, "x-client-id": "phone" },
          });
          assert.equal(res.status, 402);
          assert.equal(await res.text(), expected);
        }
        const push = await fetch(`${server.url}/sync/todo`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "x-client-id": "phone",
            "content-type": "application/json",
          },
          body: JSON.stringify({ changes: [taskInsert("b", "refused")] }),
        });
        assert.equal(push.status, 402);
        assert.equal(await push.text(), expected);

        // Not gated: the WebSocket, and taking one's data out — which shows nothing was written.
        const ws = await WsClient.authed(server.url, token);
        await ws.close();
        const exported = await fetch(`${server.url}/backup/export`, {
          headers: { authorization: `Bearer ${token}` },
        });
        assert.equal(exported.status, 200);
        const archive = new Map(await unzip(new Uint8Array(await exported.arrayBuffer())));
        assert.equal(archive.get("events.jsonl"), "", "the refused push stored nothing");
        assert.equal(JSON.parse(archive.get("manifest.json")!).eventCount, 0);
        assert.equal(asked(user), 1, "answered once, then from the cache");
        assert.equal((await phone.push([])).status, 402);
      },
    );

    await t.step("an exempt app is never gated nor asked about", async () => {
      const user = crypto.randomUUID();
      credits.answer(user, "inactive");
      const calc = new Device(server.url, await jwks.token(user), "phone", "calc");
      assert.equal(
        (await calc.push([{ table: "sums", id: "s", op: "insert", data: { id: "s" } }])).status,
        200,
      );
      assert.equal((await calc.pull("sums")).status, 200);
      assert.equal(asked(user), 0);
    });

    await t.step(
      "mana-credits answering nonsense or failing lets sync through, uncached",
      async () => {
        for (const answer of ["garbage", "error"] as const) {
          const user = crypto.randomUUID();
          credits.answer(user, answer);
          const phone = new Device(server.url, await jwks.token(user), "phone");
          assert.equal((await phone.pull("tasks")).status, 200);
          assert.equal((await phone.pull("tasks")).status, 200);
          assert.equal(asked(user), 2, `${answer}: asked every time`);
        }
      },
    );

    await t.step("metrics count cache hits, misses and fail-opens", async () => {
      const series = await scrape(server.url);
      for (const outcome of ["hit", "miss", "fail_open"]) {
        const n = series.get(`mana_sync_billing_checks_total{outcome="${outcome}"}`) ?? 0;
        assert.ok(n > 0, `${outcome} counted`);
      }
    });
  } finally {
    await server.stop();
    await credits.close();
    await jwks.close();
  }
});

Deno.test("billing gate fails open when mana-credits is down", async () => {
  const jwks = await startJwksServer();
  const server = await startServer({
    JWKS_URL: jwks.url,
    MANA_CREDITS_URL: "http://127.0.0.1:9/",
    MANA_SERVICE_KEY: "k",
  });
  try {
    const phone = new Device(server.url, await jwks.token(crypto.randomUUID()), "phone");
    assert.equal((await phone.push([taskInsert("a", "x")])).status, 200);
    assert.match(server.output(), /billing check failed, sync allowed/);
  } finally {
    await server.stop();
    await jwks.close();
  }
});
