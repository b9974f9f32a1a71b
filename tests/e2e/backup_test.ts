/**
 * Backup end to end: the real server process (start task flags), a JWKS server of the test's own,
 * real HTTP. An export from one server is imported into a fresh database behind a second server.
 */
import assert from "node:assert/strict";
import { openBackup } from "../../src/backup/reader.ts";
import type { WireChange } from "../../src/sync/wire.ts";
import { concat, rewrite } from "../helpers/backup.ts";
import { Device } from "../helpers/client.ts";
import { POSTGRES_URL, scratchPostgres } from "../helpers/databases.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";
import { WsClient } from "../helpers/realtime_clients.ts";
import { runTaskOnce, type ServerProcess, startServer } from "../helpers/server_process.ts";

const TABLES: Record<string, string[]> = { todo: ["tasks", "lists"], calendar: ["events"] };

async function exportFrom(server: ServerProcess, token: string) {
  const res = await fetch(`${server.url}/backup/export`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return { res, bytes: new Uint8Array(await res.arrayBuffer()) };
}

async function importTo(
  server: ServerProcess,
  token: string,
  body: BodyInit,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${server.url}/backup/import`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/zip", ...headers },
    body,
  });
  return { status: res.status, body: await res.json() };
}

/** Everything a device sees of every app and table, by pulling. */
async function pullEverything(server: ServerProcess, token: string, clientId: string) {
  const seen: Record<string, WireChange[]> = {};
  for (const [appId, tables] of Object.entries(TABLES)) {
    const device = new Device(server.url, token, clientId, appId);
    for (const table of tables) seen[`${appId}/${table}`] = (await device.pullAll(table)).changes;
  }
  return seen;
}

/**
 * The resident set size of a process, from /proc/<pid>/status. Read through `cat`: Deno asks for
 * --allow-all to read /proc directly, and the test task grants --allow-run, not that.
 */
async function rssBytes(pid: number): Promise<number> {
  const out = await new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).output();
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(new TextDecoder().decode(out.stdout))?.[1];
  if (!kb) throw new Error(`No VmRSS for process ${pid}`);
  return Number(kb) * 1024;
}

/** `bytes` random bytes as base64: text that does not compress. */
const noise = (bytes: number) =>
  btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(bytes))));

Deno.test("backup end to end", async (t) => {
  const jwks = await startJwksServer();
  const first = await startServer({ JWKS_URL: jwks.url });
  const scratch = POSTGRES_URL ? await scratchPostgres() : undefined;
  // A fresh database: a scratch PostgreSQL database, or (without PostgreSQL) the fresh embedded
  // database every server process gets.
  const second = await startServer({
    JWKS_URL: jwks.url,
    MAX_IMPORT_BYTES: String(1024 * 1024),
    ...(scratch ? { DATABASE_URL: scratch.url } : {}),
  });
  const alice = crypto.randomUUID(), bob = crypto.randomUUID(), carol = crypto.randomUUID();
  const token = {
    alice: await jwks.token(alice),
    bob: await jwks.token(bob),
    carol: await jwks.token(carol),
  };
  const pushed: string[] = [];
  let archive = new Uint8Array();

  try {
    await t.step("setup: alice's devices and bob push to the first server", async () => {
      const laptop = new Device(first.url, token.alice, "laptop");
      const phone = new Device(first.url, token.alice, "phone");
      const calendar = new Device(first.url, token.alice, "phone", "calendar");
      const batches: [Device, unknown[]][] = [
        [laptop, [
          {
            eventId: crypto.randomUUID(),
            table: "tasks",
            id: "t1",
            op: "insert",
            data: { id: "t1", title: "Buy milk", updatedAt: "2024-01-01T10:05:00.000Z" },
          },
          {
            eventId: crypto.randomUUID(),
            table: "tasks",
            id: "t2",
            op: "insert",
            data: { id: "t2", title: "Walk" },
          },
          {
            eventId: crypto.randomUUID(),
            table: "lists",
            id: "l1",
            op: "insert",
            data: { id: "l1", name: "Home" },
          },
        ]],
        [phone, [
          {
            eventId: crypto.randomUUID(),
            table: "tasks",
            id: "t1",
            op: "update",
            fields: {
              title: { value: "Buy eggs", updatedAt: "2024-01-01T10:05:30.000Z" },
              done: { value: true, updatedAt: "2024-01-01T10:06:00.000Z" },
            },
          },
          {
            eventId: crypto.randomUUID(),
            table: "tasks",
            id: "t2",
            op: "delete",
            deletedAt: "2024-01-01T10:07:00.000Z",
          },
        ]],
        [calendar, [
          {
            eventId: crypto.randomUUID(),
            table: "events",
            id: "e1",
            op: "insert",
            data: { id: "e1", at: "2024-02-01T09:00:00Z" },
          },
          { eventId: crypto.randomUUID(), table: "events", id: "e2", op: "delete" },
        ]],
        [laptop, [
          {
            eventId: crypto.randomUUID(),
            table: "tasks",
            id: "t1",
            op: "update",
            fields: { title: { value: "Buy bread", updatedAt: "2024-01-01T10:05:10.000Z" } },
          },
        ]],
      ];
      for (const [device, changes] of batches) {
        const reply = await device.push(changes);
        assert.equal(reply.status, 200);
        pushed.push(...changes.map((c) => (c as { eventId: string }).eventId));
      }
      const stranger = new Device(first.url, token.bob, "laptop");
      assert.equal(
        (await stranger.push([{ table: "tasks", id: "b1", op: "insert", data: { id: "b1" } }]))
          .status,
        200,
      );
    });

    await t.step("export streams a .mana of the caller's log only, in commit order", async () => {
      const { res, bytes } = await exportFrom(first, token.alice);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "application/zip");
      assert.match(
        res.headers.get("content-disposition")!,
        new RegExp(`^attachment; filename="mana-backup-${alice}-\\d{8}-\\d{6}\\.mana"$`),
      );
      const backup = await openBackup(bytes);
      const summary = await backup.verify();
      assert.equal(summary.manifest.userId, alice);
      assert.deepEqual(summary.apps, ["calendar", "todo"]);
      const ids = [];
      for await (const event of backup.events()) ids.push(event.change.eventId);
      assert.deepEqual(ids, pushed, "every event of alice, in push order, and nothing of bob's");
      archive = bytes;

      const empty = await openBackup((await exportFrom(first, token.carol)).bytes);
      assert.equal((await empty.verify()).eventCount, 0);
      assert.equal((await fetch(`${first.url}/backup/export`)).status, 401);
    });

    await t.step(
      "backup:verify accepts the export and says what is wrong with a cut one",
      async () => {
        const file = await Deno.makeTempFile({ suffix: ".mana" });
        try {
          await Deno.writeFile(file, archive);
          const ok = await runTaskOnce("backup:verify", [file]);
          assert.equal(ok.code, 0, ok.stderr);
          assert.match(ok.stdout, new RegExp(`user\\s+${alice}`));
          assert.match(ok.stdout, /apps\s+calendar, todo/);
          assert.match(
            ok.stdout,
            new RegExp(`events\\s+${pushed.length} \\(schema version 1\\), \\d+ bytes`),
          );
          await Deno.writeFile(file, archive.subarray(0, archive.length - 40));
          const cut = await runTaskOnce("backup:verify", [file]);
          assert.equal(cut.code, 1);
          assert.match(cut.stderr, /truncated.*\(backup_truncated\)/);
        } finally {
          await Deno.remove(file);
        }
      },
    );

    await t.step(
      "an export imported into a fresh database on another server pulls the same",
      async () => {
        const watcher = await WsClient.authed(second.url, token.alice, { clientId: "watcher" });
        const imported = await importTo(second, token.alice, archive, {
          "x-client-id": "restorer",
        });
        assert.equal(imported.status, 200, JSON.stringify(imported.body));
        assert.deepEqual(imported.body, {
          eventCount: pushed.length,
          imported: pushed.length,
          alreadyStored: 0,
          apps: ["calendar", "todo"],
        });
        const notes = [await watcher.next(), await watcher.next()];
        assert.deepEqual(
          notes.map((n) => [n.appId, (n.tables as string[]).toSorted()]).toSorted(),
          [["calendar", ["events"]], ["todo", ["lists", "tasks"]]],
        );
        await watcher.close();
        for (const clientId of ["laptop", "phone", "new-device"]) {
          assert.deepEqual(
            await pullEverything(second, token.alice, clientId),
            await pullEverything(first, token.alice, clientId),
            `what ${clientId} pulls`,
          );
        }
        const again = await openBackup((await exportFrom(second, token.alice)).bytes);
        const ids = [];
        for await (const event of again.events()) ids.push(event.change.eventId);
        assert.deepEqual(ids, pushed, "the second server's export holds the same events");
      },
    );

    await t.step("importing the same archive again stores nothing new", async () => {
      const before = await pullEverything(second, token.alice, "new-device");
      const imported = await importTo(second, token.alice, archive);
      assert.equal(imported.status, 200);
      assert.equal(imported.body.imported, 0);
      assert.equal(imported.body.alreadyStored, pushed.length);
      assert.deepEqual(await pullEverything(second, token.alice, "new-device"), before);
    });

    await t.step(
      "tampered, truncated and foreign archives are refused and write nothing",
      async (t) => {
        // carol's own archive from the first server, to tamper with.
        const device = new Device(first.url, token.carol, "laptop");
        await device.push([{
          table: "tasks",
          id: "c1",
          op: "insert",
          data: { id: "c1", title: "mine" },
        }]);
        const own = (await exportFrom(first, token.carol)).bytes;
        const cases: [string, BodyInit, number, string][] = [
          ["foreign", archive, 403, "backup_foreign_user"],
          [
            "tampered",
            await rewrite(own, (events, manifest) => [
              ["events.jsonl", events.replace('"mine"', '"yours"')],
              ["manifest.json", JSON.stringify(manifest)],
            ]),
            422,
            "backup_checksum_mismatch",
          ],
          ["truncated", own.subarray(0, Math.floor(own.length / 2)), 400, "backup_truncated"],
          [
            "without manifest",
            await rewrite(own, (events) => [["events.jsonl", events]]),
            400,
            "backup_truncated",
          ],
          ["not a zip", "hello", 400, "backup_invalid"],
          ["empty", new Uint8Array(), 400, "backup_invalid"],
          ["too large", concat([own, new Uint8Array(1024 * 1024)]), 413, "backup_too_large"],
        ];
        for (const [name, body, status, code] of cases) {
          await t.step(name, async () => {
            const refused = await importTo(second, token.carol, body);
            assert.equal(refused.status, status, JSON.stringify(refused.body));
            assert.equal(refused.body.error, code);
            assert.equal(typeof refused.body.message, "string");
          });
        }
        const nothing = await pullEverything(second, token.carol, "new-device");
        assert.deepEqual(
          Object.values(nothing).flat(),
          [],
          "carol has nothing on the second server",
        );
        const exported = await openBackup((await exportFrom(second, token.carol)).bytes);
        assert.equal((await exported.verify()).eventCount, 0);
        // And the valid archive still goes in.
        assert.equal((await importTo(second, token.carol, own)).body.imported, 1);
      },
    );

    await t.step("an export of 50,000 events streams with bounded memory", async () => {
      // RSS also counts garbage not collected yet: streaming an export leaves a few tens of MiB of
      // it (V8 collects external buffers after about 64 MiB of them), whatever the account's size.
      // The events are large (about 4 KB, incompressible) so that the account, about 200 MiB of
      // events.jsonl, dwarfs that, and holding it would show. Two checks: while the client holds
      // the download, the server does not read ahead; while it downloads, the server's typical
      // (median) RSS stays far below the account's size.
      const big = crypto.randomUUID();
      const bigToken = await jwks.token(big);
      const writer = new Device(first.url, bigToken, "writer");
      for (let batch = 0; batch < 50; batch++) {
        const changes = Array.from({ length: 1000 }, (_, i) => {
          const id = `r${batch}-${i}`;
          return { table: "tasks", id, op: "insert", data: { id, note: noise(3000) } };
        });
        const reply = await writer.push(changes);
        assert.equal(reply.status, 200);
      }
      const baseline = await rssBytes(first.pid);
      const res = await fetch(`${first.url}/backup/export`, {
        headers: { authorization: `Bearer ${bigToken}` },
      });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      const chunks: Uint8Array[] = [];
      const take = async () => {
        const { value, done } = await reader.read();
        if (!done) chunks.push(value);
        return !done;
      };
      await take();
      // Hold the download: a server that streams waits for its client; one that does not
      // would read (and hold) the whole account meanwhile.
      let held = baseline;
      for (let i = 0; i < 20; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        held = Math.max(held, await rssBytes(first.pid));
      }
      const samples: number[] = [];
      let downloading = true;
      const sampling = (async () => {
        while (downloading) {
          samples.push(await rssBytes(first.pid));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      while (await take());
      downloading = false;
      await sampling;

      const backup = await openBackup(chunks);
      const summary = await backup.verify();
      assert.equal(summary.eventCount, 50_000);
      const jsonl = summary.eventsBytes;
      samples.sort((a, b) => a - b);
      const median = samples[samples.length >> 1]!, peak = Math.max(held, samples.at(-1)!);
      const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`;
      const report = `events.jsonl ${mib(jsonl)}, RSS ${mib(baseline)} before; growth ${
        mib(held - baseline)
      } while held, ${mib(median - baseline)} median and ${
        mib(peak - baseline)
      } peak while downloading (${samples.length} samples)`;
      console.log(report);
      assert.ok(held - baseline < jsonl / 4, `read ahead of its client: ${report}`);
      // Streaming at loopback speed leaves a plateau of garbage V8 has not collected yet (40 to
      // 70 MiB typically, once 115 MiB under a loaded CI run, whatever the account's size); a
      // server holding the account measured 219 MiB. The bound sits between the two. The peak
      // depends on when V8 collects: reported, not asserted.
      assert.ok(median - baseline < jsonl * 0.8, `held the account in memory: ${report}`);

      // Abandoned downloads give their transaction (and their export slot) back: more of them in
      // a row than the instance runs at once (5 with the default pool of 10) all start.
      for (let i = 0; i < 7; i++) {
        let status = 0;
        for (let tries = 0; status !== 200 && tries < 100; tries++) {
          if (tries > 0) await new Promise((resolve) => setTimeout(resolve, 50));
          const res = await fetch(`${first.url}/backup/export`, {
            headers: { authorization: `Bearer ${bigToken}` },
          });
          status = res.status;
          const body = res.body!.getReader();
          if (status === 200) await body.read();
          await body.cancel();
        }
        assert.equal(status, 200, `abandoned download ${i + 1} could start`);
      }
    });
  } finally {
    await first.stop();
    await second.stop();
    await scratch?.drop();
    await jwks.close();
  }
});
