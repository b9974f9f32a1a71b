/**
 * The cursor guarantee under concurrency: 8 devices of one user push as fast as they can while a
 * ninth pulls in a loop from the last syncedUntil it got. It must end with every pushed change,
 * each exactly once.
 */
import assert from "node:assert/strict";
import { Device, taskInsert } from "../helpers/client.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { startServer } from "../helpers/server_process.ts";

const WRITERS = 8, BATCHES = 30, BATCH_SIZE = 20, ROUNDS = 3;

Deno.test("a looping reader sees every change of 8 concurrent writers exactly once", async (t) => {
  const jwks = await startJwksServer();
  const server = await startServer({ JWKS_URL: jwks.url });
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      await t.step(`round ${round}`, async () => {
        const user = crypto.randomUUID();
        const token = await jwks.token(user);
        const pushed: string[] = [];
        let writing = true;

        const writers = Array.from({ length: WRITERS }, async (_, w) => {
          const device = new Device(server.url, token, `writer-${w}`);
          for (let b = 0; b < BATCHES; b++) {
            const changes = Array.from(
              { length: BATCH_SIZE },
              (_, i) => taskInsert(`w${w}-b${b}-${i}`, "x"),
            );
            const reply = await device.push(changes);
            assert.equal(reply.status, 200, JSON.stringify(reply.body));
            pushed.push(...changes.map((c) => c.eventId));
          }
        });

        const reader = new Device(server.url, token, "reader");
        const seen: string[] = [];
        let since: string | undefined;
        let pulls = 0;
        const reading = (async () => {
          for (;;) {
            const done = !writing; // decided before the pull, so the last pull starts after every push
            const reply = await reader.pull("tasks", since);
            assert.equal(reply.status, 200);
            pulls++;
            seen.push(...reply.body.serverChanges.map((c) => c.eventId));
            since = reply.body.syncedUntil;
            if (done && !reply.body.hasMore) return;
          }
        })();

        await Promise.all(writers);
        writing = false;
        await reading;

        assert.equal(pushed.length, WRITERS * BATCHES * BATCH_SIZE);
        assert.ok(pulls > 3, `the reader pulled while writers wrote (${pulls} pulls)`);
        const unique = new Set(seen);
        assert.equal(unique.size, seen.length, "no change was delivered twice");
        const missing = pushed.filter((id) => !unique.has(id));
        assert.deepEqual(missing, [], `${missing.length} changes were skipped`);
        assert.equal(seen.length, pushed.length);
      });
    }
  } finally {
    await server.stop();
    await jwks.close();
  }
});
