/**
 * The real server process (start task flags), a JWKS server of the test's own, real HTTP.
 */
import assert from "node:assert/strict";
import { Device, taskInsert } from "../helpers/client.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { scrape } from "../helpers/metrics.ts";
import { startServer } from "../helpers/server_process.ts";

Deno.test("sync API end to end", async (t) => {
  const jwks = await startJwksServer();
  const server = await startServer({ JWKS_URL: jwks.url, PUSH_PAGE_SIZE: "1000" });
  const device = async (userId: string, clientId: string) =>
    new Device(server.url, await jwks.token(userId), clientId);
  try {
    await t.step("push and pull round trip between two client ids", async () => {
      const user = crypto.randomUUID();
      const laptop = await device(user, "laptop"), phone = await device(user, "phone");
      const pushed = await laptop.push([
        taskInsert("t1", "Buy milk"),
        {
          table: "tasks",
          id: "t1",
          op: "update",
          fields: { done: { value: true, updatedAt: "2024-01-01T10:06:00.000Z" } },
        },
        { table: "notes", id: "n1", op: "insert", data: { id: "n1", text: "hi" } },
      ]);
      assert.equal(pushed.status, 200);
      assert.deepEqual(pushed.body.serverChanges, []);
      assert.match(pushed.body.syncedUntil, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);

      const pulled = await phone.pull("tasks");
      assert.equal(pulled.status, 200);
      assert.deepEqual(pulled.body.serverChanges.map((c) => [c.op, c.id]), [["insert", "t1"], [
        "update",
        "t1",
      ]]);
      assert.equal(
        pulled.body.serverChanges[1]!.fields!.done!.updatedAt,
        "2024-01-01T10:06:00.000Z",
      );
      assert.ok(pulled.body.serverChanges.every((c) => c.eventId && c.schemaVersion === 1));
      assert.equal(pulled.body.syncedUntil, pushed.body.syncedUntil);
      assert.equal(pulled.body.hasMore, false);

      // The phone pushes; its response carries the laptop's changes of every table of the app.
      const phonePush = await phone.push([taskInsert("t2", "From phone")]);
      assert.deepEqual(phonePush.body.serverChanges.map((c) => c.id).sort(), ["n1", "t1", "t1"]);
      // And the laptop sees only the phone's change after its cursor.
      const back = await laptop.pull("tasks", pushed.body.syncedUntil);
      assert.deepEqual(back.body.serverChanges.map((c) => c.id), ["t2"]);
      // Another user sees nothing of this.
      const stranger = await device(crypto.randomUUID(), "phone");
      assert.deepEqual((await stranger.pull("tasks")).body.serverChanges, []);
    });

    await t.step(
      "paging over 2,500 changes: no duplicates, no gaps, on pull and on push",
      async () => {
        const user = crypto.randomUUID();
        const writer = await device(user, "writer");
        const expected: string[] = [];
        for (let batch = 0; batch < 13; batch++) {
          const changes = Array.from(
            { length: batch === 12 ? 100 : 200 },
            (_, i) => taskInsert(`r${batch}-${i}`, "x"),
          );
          expected.push(...changes.map((c) => c.eventId));
          assert.equal((await writer.push(changes)).status, 200);
        }
        assert.equal(expected.length, 2500);
        const reader = await device(user, "reader");
        const hits = async () =>
          (await scrape(server.url)).get('mana_sync_pull_read_ahead_total{result="hit"}') ?? 0;
        const hitsBefore = await hits();
        const { changes, pages } = await reader.pullAll("tasks");
        assert.equal(pages, 3);
        assert.deepEqual(changes.map((c) => c.eventId), expected);
        assert.equal(await hits() - hitsBefore, 2, "pages 2 and 3 were read ahead");

        // Push delta pages too (this server returns at most 1000 per push).
        const seen: string[] = [];
        let since: string | undefined = undefined, rounds = 0;
        for (;;) {
          const reply = await (await device(user, "fresh")).push([], since);
          seen.push(...reply.body.serverChanges.map((c) => c.eventId));
          since = reply.body.syncedUntil;
          rounds++;
          if (!reply.body.hasMore) break;
        }
        assert.equal(rounds, 3);
        assert.deepEqual(seen, expected);
      },
    );

    await t.step("401 for every bad credential", async (t) => {
      const user = crypto.randomUUID();
      const cases: [string, Record<string, string>][] = [
        ["no header", {}],
        ["not bearer", { authorization: `Basic ${btoa("a:b")}` }],
        ["garbage token", { authorization: "Bearer not.a.jwt" }],
        ["bad signature", {
          authorization: `Bearer ${await jwks.token(user, { foreignKey: true })}`,
        }],
        ["expired", {
          authorization: `Bearer ${await jwks.token(user, {
            expiresIn: Math.floor(Date.now() / 1000) - 60,
          })}`,
        }],
        ["no sub", { authorization: `Bearer ${await jwks.token(user, { sub: null })}` }],
        ["no kid", { authorization: `Bearer ${await jwks.token(user, { kid: null })}` }],
        ["unknown kid", { authorization: `Bearer ${await jwks.token(user, { kid: "nobody" })}` }],
        ["alg none", { authorization: `Bearer ${jwks.unsignedToken(user)}` }],
      ];
      for (const [name, headers] of cases) {
        await t.step(name, async () => {
          const anon = new Device(server.url, "", "laptop");
          for (
            const reply of [
              await anon.request("/sync/todo/pull?collection=tasks&since=1970-01-01T00:00:00Z", {
                headers,
              }),
              await anon.request("/sync/todo", {
                method: "POST",
                headers,
                body: JSON.stringify({ changes: [taskInsert("a", "x")] }),
              }),
            ]
          ) {
            assert.equal(reply.status, 401);
            assert.equal(reply.body.error, "unauthorized");
            assert.equal(typeof reply.body.message, "string");
          }
        });
      }
      const owner = await device(user, "phone");
      assert.deepEqual(
        (await owner.pull("tasks")).body.serverChanges,
        [],
        "nothing was written by any of them",
      );
      const lower = await owner.request(
        "/sync/todo/pull?collection=tasks&since=1970-01-01T00:00:00Z",
        {
          headers: { authorization: `bearer ${owner.token}` },
        },
      );
      assert.equal(lower.status, 200, "the scheme name is case-insensitive");
    });

    await t.step("400, 413 and 422 write nothing", async (t) => {
      const user = crypto.randomUUID();
      const laptop = await device(user, "laptop");
      const valid = taskInsert("ok", "valid");
      const raw = (body: string, headers: Record<string, string> = {}) =>
        laptop.request("/sync/todo", {
          method: "POST",
          body,
          headers: { "content-type": "application/json", ...headers },
        });
      const cases: [string, () => ReturnType<typeof raw>, number, string][] = [
        ["invalid JSON", () => raw("{not json"), 400, "invalid_json"],
        [
          "bad change names its index",
          () => laptop.push([valid, { ...valid, op: "upsert" }]),
          400,
          "invalid_change",
        ],
        ["bad since", () => laptop.push([valid], "yesterday"), 400, "invalid_since"],
        [
          "unsupported schema version",
          () => laptop.push([valid], undefined, { schemaVersion: 2 }),
          400,
          "unsupported_schema_version",
        ],
        [
          "no client id",
          () => raw(JSON.stringify({ changes: [valid] }), { "x-client-id": "" }),
          400,
          "missing_client_id",
        ],
        [
          "bad app id",
          () => laptop.request("/sync/%20bad", { method: "POST", body: "{}" }),
          400,
          "invalid_app_id",
        ],
        [
          "more fields in a change than allowed",
          () =>
            laptop.push([valid, {
              ...taskInsert("wide", "x"),
              data: Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`f${i}`, i])),
            }]),
          400,
          "invalid_change",
        ],
        [
          "too many changes",
          () => laptop.push(Array.from({ length: 1001 }, (_, i) => taskInsert(`m${i}`, "x"))),
          413,
          "too_many_changes",
        ],
        [
          "body over 10 MiB",
          () => laptop.push([{ ...valid, data: { id: "ok", blob: "x".repeat(10 * 1024 * 1024) } }]),
          413,
          "payload_too_large",
        ],
        [
          "clock skew",
          () =>
            laptop.push([valid, {
              table: "tasks",
              id: "ok",
              op: "update",
              fields: { title: { value: "future", updatedAt: "2999-01-01T00:00:00Z" } },
            }]),
          422,
          "clock_skew",
        ],
      ];
      for (const [name, send, status, code] of cases) {
        await t.step(name, async () => {
          const reply = await send();
          assert.equal(reply.status, status, JSON.stringify(reply.body));
          assert.equal(reply.body.error, code);
          if (name === "bad change names its index") {
            assert.match(String(reply.body.message), /change 1:/);
          }
          if (name === "more fields in a change than allowed") {
            assert.equal(
              reply.body.message,
              "Cannot apply change 1: data has 1001 fields: at most 1000 are accepted per change",
            );
          }
          if (code === "clock_skew") assert.ok(!isNaN(Date.parse(String(reply.body.serverTime))));
        });
      }
      const phone = await device(user, "phone");
      assert.deepEqual((await phone.pull("tasks")).body.serverChanges, []);
    });

    await t.step("pull validates its query", async () => {
      const phone = await device(crypto.randomUUID(), "phone");
      assert.equal(
        (await phone.request("/sync/todo/pull?since=1970-01-01T00:00:00Z")).body.error,
        "missing_collection",
      );
      assert.equal(
        (await phone.request("/sync/todo/pull?collection=tasks")).body.error,
        "invalid_since",
      );
      assert.equal(
        (await phone.request("/sync/todo/pull?collection=tasks&since=soon")).status,
        400,
      );
    });

    await t.step("health reports the database", async () => {
      const reply = await new Device(server.url, "", "x").request("/health");
      assert.equal(reply.status, 200);
      assert.equal(reply.body.status, "ok");
      assert.equal(reply.body.service, "mana-sync");
      assert.equal((reply.body.database as { status: string }).status, "ok");
    });

    await t.step("CORS answers preflight for configured origins only", async () => {
      const preflight = (origin: string) =>
        fetch(`${server.url}/sync/todo`, {
          method: "OPTIONS",
          headers: {
            origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,x-client-id",
          },
        });
      const ok = await preflight("http://localhost:5173");
      await ok.body?.cancel();
      assert.equal(ok.headers.get("access-control-allow-origin"), "http://localhost:5173");
      assert.equal(ok.headers.get("access-control-allow-credentials"), "true");
      assert.match(ok.headers.get("access-control-allow-headers") ?? "", /X-Client-Id/i);
      const get = await fetch(`${server.url}/health`, {
        headers: { origin: "http://localhost:5173" },
      });
      await get.body?.cancel();
      assert.match(get.headers.get("access-control-expose-headers") ?? "", /Content-Disposition/i);
      const evil = await preflight("https://evil.example");
      await evil.body?.cancel();
      assert.equal(evil.headers.get("access-control-allow-origin"), null);
    });
  } finally {
    const code = await server.stop();
    await jwks.close();
    assert.equal(code, 0, "the server exits cleanly on SIGTERM");
  }
});
