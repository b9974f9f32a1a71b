/** Per-user rate limits against the real server process: 429 with Retry-After, per user. */
import assert from "node:assert/strict";
import { Device } from "../helpers/client.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { WsClient } from "../helpers/realtime_clients.ts";
import { startServer } from "../helpers/server_process.ts";

Deno.test("rate limits answer 429 with Retry-After, per user and per kind", async () => {
  const jwks = await startJwksServer();
  const server = await startServer({
    JWKS_URL: jwks.url,
    RATE_LIMIT_PULL_PER_MINUTE: "3",
    RATE_LIMIT_PUSH_PER_MINUTE: "2",
    RATE_LIMIT_WS_PER_MINUTE: "1",
  });
  try {
    const user = crypto.randomUUID();
    const phone = new Device(server.url, await jwks.token(user), "phone");
    for (let i = 0; i < 3; i++) assert.equal((await phone.pull("tasks")).status, 200);
    const limited = await phone.pull("tasks");
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error, "rate_limited");
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);

    assert.equal((await phone.push([])).status, 200, "pushes have their own bucket");
    assert.equal((await phone.push([])).status, 200);
    assert.equal((await phone.push([])).status, 429);

    const other = new Device(server.url, await jwks.token(crypto.randomUUID()), "phone");
    assert.equal((await other.pull("tasks")).status, 200, "another user has their own buckets");

    const first = await WsClient.authed(server.url, phone.token);
    const second = await WsClient.open(server.url);
    second.send({ type: "auth", token: phone.token });
    assert.deepEqual(await second.next(), {
      type: "error",
      message: "rate limited",
      tables: ["rate limited"],
    });
    assert.equal((await second.closed).code, 1013);
    await first.close();
  } finally {
    await server.stop();
    await jwks.close();
  }
});
