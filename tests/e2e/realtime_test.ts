/**
 * WebSocket and SSE against the real server process, and fan-out between two processes on one
 * PostgreSQL database.
 */
import assert from "node:assert/strict";
import { Device, taskInsert } from "../helpers/client.ts";
import { POSTGRES_URL } from "../helpers/databases.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { eventually, SseClient, WsClient } from "../helpers/realtime_clients.ts";
import { startServer } from "../helpers/server_process.ts";

const SETTINGS = { WS_AUTH_TIMEOUT_SECONDS: "1", PULL_PAGE_SIZE: "50", SSE_HEARTBEAT_SECONDS: "1" };

async function health(baseUrl: string) {
  return await (await fetch(`${baseUrl}/health`)).json() as { connections: number; users: number };
}

Deno.test("real-time end to end", async (t) => {
  const jwks = await startJwksServer();
  const server = await startServer({ JWKS_URL: jwks.url, ...SETTINGS });
  const url = server.url;
  try {
    await t.step("ping is answered before auth; auth answers auth-ok", async () => {
      const ws = await WsClient.open(url);
      ws.send({ type: "ping" });
      assert.deepEqual(await ws.next(), { type: "pong" });
      ws.send({ type: "auth", token: await jwks.token(crypto.randomUUID()) });
      assert.deepEqual(await ws.next(), { type: "auth-ok" });
      ws.send({ type: "ping" });
      assert.deepEqual(await ws.next(), { type: "pong" });
      await ws.close();
    });

    await t.step("a socket that never authenticates is closed with 1008 auth timeout", async () => {
      const ws = await WsClient.open(url);
      const closed = await ws.closed;
      assert.deepEqual(closed, { code: 1008, reason: "auth timeout" });
    });

    await t.step("an invalid token gets an error message, then 1008", async () => {
      for (
        const token of [
          "garbage",
          await jwks.token("u", { foreignKey: true }),
          await jwks.token("u", { sub: null }),
        ]
      ) {
        const ws = await WsClient.open(url);
        ws.send({ type: "auth", token });
        assert.deepEqual(await ws.next(), {
          type: "error",
          message: "invalid token",
          tables: ["invalid token"],
        });
        assert.equal((await ws.closed).code, 1008);
      }
    });

    await t.step(
      "unified sockets hear every app, legacy sockets one app, other users nothing",
      async () => {
        const user = crypto.randomUUID(), other = crypto.randomUUID();
        const token = await jwks.token(user);
        const unified = await WsClient.authed(url, token);
        const todo = await WsClient.authed(url, token, { path: "/ws/todo" });
        const calendar = await WsClient.authed(url, token, { path: "/ws/calendar" });
        const stranger = await WsClient.authed(url, await jwks.token(other));

        await new Device(url, token, "laptop", "todo").push([taskInsert("t1", "x")]);
        const expected = { type: "sync-available", appId: "todo", tables: ["tasks"] };
        assert.deepEqual(await unified.next(), expected);
        assert.deepEqual(await todo.next(), expected);

        // The calendar socket's and the stranger's first messages are their own later events.
        await new Device(url, token, "laptop", "calendar").push([
          { table: "events", id: "e1", op: "insert", data: { id: "e1" } },
        ]);
        const calendarEvent = { type: "sync-available", appId: "calendar", tables: ["events"] };
        assert.deepEqual(await calendar.next(), calendarEvent);
        assert.deepEqual(await unified.next(), calendarEvent);
        await new Device(url, await jwks.token(other), "phone", "todo").push([
          taskInsert("s1", "x"),
        ]);
        assert.deepEqual(await stranger.next(), expected);
        assert.deepEqual(
          todo.unread(),
          [],
          "the todo socket heard nothing of calendar or of the stranger",
        );

        const h = await health(url);
        assert.ok(h.connections >= 4 && h.users >= 2, JSON.stringify(h));
        const metrics = await (await fetch(`${url}/metrics`)).text();
        assert.match(metrics, /^mana_sync_connections_total \d+$/m);
        assert.match(metrics, /^mana_sync_users_connected \d+$/m);
        await Promise.all([unified, todo, calendar, stranger].map((ws) => ws.close()));
      },
    );

    await t.step("a socket that names its clientId hears nothing of its own pushes", async () => {
      const user = crypto.randomUUID(), token = await jwks.token(user);
      const ws = await WsClient.authed(url, token, { clientId: "laptop" });
      await new Device(url, token, "laptop").push([taskInsert("own", "x")]);
      await new Device(url, token, "phone").push([{
        table: "notes",
        id: "n",
        op: "insert",
        data: { id: "n" },
      }]);
      assert.deepEqual(await ws.next(), {
        type: "sync-available",
        appId: "todo",
        tables: ["notes"],
      });
      await ws.close();
    });

    await t.step(
      "SSE: catch-up over several pages of the requested collections, then live pages",
      async () => {
        const user = crypto.randomUUID(), token = await jwks.token(user);
        const laptop = new Device(url, token, "laptop");
        const pushed = Array.from({ length: 120 }, (_, i) => taskInsert(`t${i}`, "x"));
        await laptop.push(pushed);
        await laptop.push([{ table: "notes", id: "n1", op: "insert", data: { id: "n1" } }]);

        const sse = await SseClient.open(
          `${url}/sync/todo/stream?collections=tasks&since=1970-01-01T00:00:00Z`,
          {
            authorization: `Bearer ${token}`,
            "x-client-id": "phone",
          },
        );
        assert.equal(sse.response.headers.get("content-type"), "text/event-stream");
        const pages = [await sse.next(), await sse.next(), await sse.next()];
        assert.deepEqual(
          pages.map((
            p,
          ) => [p.event, p.data.table, (p.data.changes as unknown[]).length, p.data.hasMore]),
          [
            ["changes", "tasks", 50, true],
            ["changes", "tasks", 50, true],
            ["changes", "tasks", 20, false],
          ],
        );
        const ids = pages.flatMap((p) =>
          (p.data.changes as { eventId: string }[]).map((c) => c.eventId)
        );
        assert.deepEqual(ids, pushed.map((c) => c.eventId));

        const live = taskInsert("live", "pushed later");
        await laptop.push([{ table: "notes", id: "n2", op: "insert", data: { id: "n2" } }]);
        await laptop.push([live]);
        let next = await sse.next();
        while (next.event === "heartbeat") next = await sse.next();
        assert.equal(next.data.table, "tasks");
        assert.deepEqual((next.data.changes as { eventId: string }[]).map((c) => c.eventId), [
          live.eventId,
        ]);
        assert.ok(sse.unread().every((e) => e.event === "heartbeat"), "no notes were streamed");

        // Idle: heartbeats (every second on this server).
        let beat = await sse.next(3000);
        while (beat.event !== "heartbeat") beat = await sse.next(3000);
        assert.deepEqual(beat.data, {});

        const before = (await health(url)).connections;
        await sse.close();
        await eventually(async () => (await health(url)).connections === before - 1);
      },
    );

    await t.step("SSE validates its query", async () => {
      const token = await jwks.token(crypto.randomUUID());
      const get = (q: string) => new Device(url, token, "x").request(`/sync/todo/stream?${q}`);
      assert.equal((await get("since=1970-01-01T00:00:00Z")).body.error, "missing_collections");
      assert.equal((await get("collections=tasks&since=later")).body.error, "invalid_since");
      assert.equal(
        (await new Device(url, "", "x").request(
          "/sync/todo/stream?collections=a&since=1970-01-01T00:00:00Z",
        )).status,
        401,
      );
    });

    await t.step("plain HTTP on a WebSocket route is refused with 426", async () => {
      const reply = await new Device(url, "", "x").request("/ws");
      assert.equal(reply.status, 426);
      assert.equal(reply.body.error, "upgrade_required");
    });

    await t.step("shutdown closes open sockets with 1001 and exits 0", async () => {
      const ws = await WsClient.authed(url, await jwks.token(crypto.randomUUID()));
      const sse = await SseClient.open(
        `${url}/sync/todo/stream?collections=tasks&since=1970-01-01T00:00:00Z`,
        {
          authorization: `Bearer ${await jwks.token(crypto.randomUUID())}`,
        },
      );
      assert.equal(await server.stop(), 0);
      assert.equal((await ws.closed).code, 1001);
      await sse.close();
    });
  } finally {
    await server.stop();
    await jwks.close();
  }
});

if (POSTGRES_URL) {
  Deno.test("two instances on one database behave as one", async (t) => {
    const jwks = await startJwksServer();
    const a = await startServer({ JWKS_URL: jwks.url, ...SETTINGS });
    const b = await startServer({ JWKS_URL: jwks.url, ...SETTINGS });
    try {
      await t.step(
        "a push to A reaches a WebSocket and an SSE stream on B within a second",
        async () => {
          const user = crypto.randomUUID(), token = await jwks.token(user);
          const ws = await WsClient.authed(b.url, token);
          const sse = await SseClient.open(
            `${b.url}/sync/todo/stream?collections=tasks&since=${new Date().toISOString()}`,
            { authorization: `Bearer ${token}`, "x-client-id": "phone" },
          );
          // Both are subscribed on B (the stream has caught up on nothing) before A is pushed to.
          await eventually(async () => (await health(b.url)).connections === 2);
          for (const title of ["first", "second"]) {
            const change = taskInsert(title, "from A");
            await new Device(a.url, token, "laptop").push([change]);
            assert.deepEqual(await ws.next(1000), {
              type: "sync-available",
              appId: "todo",
              tables: ["tasks"],
            });
            let next = await sse.next(1000);
            while (next.event === "heartbeat") next = await sse.next(1000);
            assert.deepEqual((next.data.changes as { eventId: string }[]).map((c) => c.eventId), [
              change.eventId,
            ]);
          }
          await sse.close();
          await ws.close();
        },
      );
    } finally {
      await a.stop();
      await b.stop();
      await jwks.close();
    }
  });
}
