/**
 * SIGTERM against the real server process: it stops accepting, lets the request in flight finish,
 * closes WebSockets with 1001 and ends SSE streams, closes its pool and exits 0; a request that
 * never finishes is cut at SHUTDOWN_TIMEOUT_SECONDS. On both databases (PostgreSQL when the tests
 * have one, in a database of its own).
 */
import assert from "node:assert/strict";
import { openPostgres } from "../../src/store/db.ts";
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import { Device, taskInsert } from "../helpers/client.ts";
import { POSTGRES_URL, scratchPostgres } from "../helpers/databases.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { eventually, SseClient, WsClient } from "../helpers/realtime_clients.ts";
import { startServer } from "../helpers/server_process.ts";

const encoder = new TextEncoder(), decoder = new TextDecoder();

/**
 * A push over a raw HTTP/1.1 connection whose body the test sends when it likes. `started`
 * resolves on the server's `100 Continue`, sent once the handler reads the body: from then on the
 * request is in flight inside the server.
 */
async function pushByHand(port: number, token: string, body: string) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const bytes = encoder.encode(body);
  await write(
    conn,
    encoder.encode(
      `POST /sync/todo HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\n` +
        `X-Client-Id: laptop\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${bytes.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    ),
  );
  let received = "";
  const chunk = new Uint8Array(64 * 1024);
  const readMore = async () => {
    const n = await conn.read(chunk);
    if (n === null) return false;
    received += decoder.decode(chunk.subarray(0, n), { stream: true });
    return true;
  };
  while (!received.includes("\r\n\r\n")) {
    if (!(await readMore())) throw new Error(`Closed before 100 Continue: ${received}`);
  }
  assert.match(received, /^HTTP\/1\.1 100 Continue\r\n\r\n/);
  received = received.slice(received.indexOf("\r\n\r\n") + 4);
  return {
    /** Sends bytes [from, to) of the body. */
    send: (from: number, to = bytes.length) => write(conn, bytes.subarray(from, to)),
    length: bytes.length,
    /** Reads to the end: the status and body, or the error that ended the connection. */
    async response(): Promise<{ status: number; body: string } | { error: string }> {
      try {
        while (await readMore()) { /* until the server closes */ }
      } catch (error) {
        return { error: String(error) };
      } finally {
        conn.close();
      }
      const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(received);
      if (!m) return { error: `no response (${JSON.stringify(received)})` };
      const chunked = /^transfer-encoding: chunked/im.test(m[2]!);
      return { status: Number(m[1]), body: chunked ? unchunk(m[3]!) : m[3]! };
    },
  };
}

async function write(conn: Deno.Conn, bytes: Uint8Array) {
  for (let written = 0; written < bytes.length;) {
    written += await conn.write(bytes.subarray(written));
  }
}

function unchunk(text: string): string {
  let out = "";
  for (;;) {
    const end = text.indexOf("\r\n");
    const size = parseInt(text.slice(0, end), 16);
    if (!size) return out;
    out += text.slice(end + 2, end + 2 + size);
    text = text.slice(end + 2 + size + 2);
  }
}

async function refused(port: number): Promise<boolean> {
  try {
    (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    return false;
  } catch (error) {
    return error instanceof Deno.errors.ConnectionRefused;
  }
}

Deno.test("SIGTERM drains: the request in flight finishes, sockets get 1001, the pool closes, exit 0", async (t) => {
  const jwks = await startJwksServer();
  const scratch = POSTGRES_URL ? await scratchPostgres() : undefined;
  const server = await startServer({
    JWKS_URL: jwks.url,
    SSE_HEARTBEAT_SECONDS: "1",
    ...(scratch ? { DATABASE_URL: scratch.url } : {}),
  });
  try {
    const user = crypto.randomUUID(), token = await jwks.token(user);
    const earlier = Array.from({ length: 3 }, (_, i) => taskInsert(`phone-${i}`, "from the phone"));
    assert.equal((await new Device(server.url, token, "phone").push(earlier)).status, 200);

    const ws = await WsClient.authed(server.url, token);
    const sse = await SseClient.open(
      `${server.url}/sync/todo/stream?collections=tasks&since=${EPOCH_CURSOR}`,
      { authorization: `Bearer ${token}`, "x-client-id": "tablet" },
    );
    assert.equal((await sse.next()).event, "changes"); // caught up: it is being served

    const changes = Array.from({ length: 200 }, (_, i) => taskInsert(`laptop-${i}`, `title ${i}`));
    const push = await pushByHand(
      server.port,
      token,
      JSON.stringify({ clientId: "laptop", since: EPOCH_CURSOR, changes }),
    );
    await push.send(0, push.length / 2);

    server.kill("SIGTERM");

    await t.step("WebSocket closed with 1001, SSE stream ended", async () => {
      assert.equal((await ws.closed).code, 1001);
      await assert.rejects(async () => {
        for (;;) await sse.next(10_000);
      }, /Connection closed/);
    });

    await t.step("while the push is in flight, new requests get 503 + Retry-After", async () => {
      const reply = await new Device(server.url, token, "late").pull("tasks");
      assert.equal(reply.status, 503);
      assert.equal(reply.body.error, "shutting_down");
      assert.equal(reply.headers.get("retry-after"), "1");
      assert.match(server.output(), /"msg":"shutting down"/);
      assert.doesNotMatch(server.output(), /"msg":"stopped"/);
    });

    await t.step("the push in flight completes with 200 and its reply", async () => {
      await push.send(push.length / 2);
      const reply = await push.response();
      assert.ok("status" in reply, JSON.stringify(reply));
      assert.equal(reply.status, 200, reply.body);
      const body = JSON.parse(reply.body);
      assert.deepEqual(
        body.serverChanges.map((c: { eventId: string }) => c.eventId),
        earlier.map((c) => c.eventId),
      );
      assert.deepEqual(body.conflicts, []);
    });

    await t.step("then new connections are refused; the pool closes; exit 0", async () => {
      await eventually(() => refused(server.port), 10_000);
      assert.equal(await server.stop(), 0);
      assert.match(server.output(), /"msg":"stopped"/);
      assert.doesNotMatch(server.output(), /cutting the requests still running/);
    });

    if (scratch) {
      await t.step(
        "PostgreSQL: the push is stored, no connection of the service is left",
        async () => {
          const db = openPostgres(scratch.url, { max: 1 });
          try {
            const [stored] = await db.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM sync_changes WHERE user_id = $1",
              [user],
            );
            assert.equal(stored!.n, changes.length + earlier.length);
            // Backends go away a moment after their client's socket closes.
            await eventually(async () => {
              const [left] = await db.query<{ n: number }>(
                `SELECT count(*)::int AS n FROM pg_stat_activity
                WHERE datname = current_database() AND application_name LIKE 'mana-sync%'
                  AND pid <> pg_backend_pid()`,
              );
              return left!.n === 0;
            }, 10_000);
          } finally {
            await db.close();
          }
        },
      );
    }
  } finally {
    await server.stop();
    await jwks.close();
    await scratch?.drop();
  }
});

Deno.test("SIGTERM cuts a request that outlives SHUTDOWN_TIMEOUT_SECONDS and still exits 0", async () => {
  const jwks = await startJwksServer();
  const server = await startServer({ JWKS_URL: jwks.url, SHUTDOWN_TIMEOUT_SECONDS: "1" });
  try {
    const push = await pushByHand(
      server.port,
      await jwks.token(crypto.randomUUID()),
      JSON.stringify({ clientId: "laptop", since: EPOCH_CURSOR, changes: [taskInsert("t", "x")] }),
    );
    await push.send(0, 10); // and never the rest
    server.kill("SIGTERM");
    assert.equal(await server.stop(), 0);
    assert.match(server.output(), /"msg":"cutting the requests still running","reason":"deadline"/);
    assert.match(server.output(), /"msg":"stopped"/);
    const reply = await push.response();
    assert.ok(!("status" in reply && reply.status === 200), JSON.stringify(reply));
  } finally {
    await server.stop();
    await jwks.close();
  }
});
