import assert from "node:assert/strict";
import { type BillingOutcome, creditsBilling } from "../../src/billing/credits.ts";
import { startCreditsServer } from "../helpers/credits_server.ts";

Deno.test("creditsBilling() asks mana-credits with the service key and caches the answer", async () => {
  const credits = startCreditsServer();
  const outcomes: BillingOutcome[] = [];
  try {
    credits.answer("inactive user", "inactive");
    const billing = creditsBilling({
      url: credits.url + "/",
      serviceKey: "s3cret",
      onOutcome: (o) => outcomes.push(o),
    });
    assert.equal(await billing.isActive("alice"), true);
    assert.equal(await billing.isActive("alice"), true);
    assert.equal(await billing.isActive("inactive user"), false);
    assert.equal(await billing.isActive("inactive user"), false);
    assert.deepEqual(credits.requests, [
      { userId: "alice", serviceKey: "s3cret" },
      { userId: "inactive user", serviceKey: "s3cret" },
    ]);
    assert.deepEqual(outcomes, ["miss", "hit", "miss", "hit"]);
  } finally {
    await credits.close();
  }
});

Deno.test("creditsBilling() keeps one request in flight per user", async () => {
  const credits = startCreditsServer({ delayMs: 50, active: false });
  try {
    const billing = creditsBilling({ url: credits.url, serviceKey: "k" });
    const answers = await Promise.all(Array.from({ length: 20 }, () => billing.isActive("bob")));
    assert.ok(answers.every((a) => a === false));
    assert.equal(credits.requests.length, 1);
  } finally {
    await credits.close();
  }
});

Deno.test("creditsBilling() asks again once the answer is older than the ttl", async () => {
  const credits = startCreditsServer();
  let clock = 1_000_000;
  try {
    const billing = creditsBilling({ url: credits.url, serviceKey: "k", now: () => clock });
    await billing.isActive("carol");
    clock += 299_000;
    await billing.isActive("carol");
    assert.equal(credits.requests.length, 1, "fresh for five minutes");
    clock += 2_000;
    credits.answer("carol", "inactive");
    assert.equal(await billing.isActive("carol"), false);
    assert.equal(credits.requests.length, 2);
  } finally {
    await credits.close();
  }
});

Deno.test("creditsBilling() fails open, without caching, when mana-credits misbehaves", async (t) => {
  const credits = startCreditsServer();
  try {
    for (
      const [name, answer] of [["garbage body", "garbage"], ["non-200", "error"], ["slow", {
        delayMs: 300,
        active: false,
      }]] as const
    ) {
      await t.step(name, async () => {
        const user = `user-${name}`;
        credits.answer(user, answer);
        const outcomes: BillingOutcome[] = [];
        const billing = creditsBilling({
          url: credits.url,
          serviceKey: "k",
          timeoutMs: 100,
          onOutcome: (o) => outcomes.push(o),
        });
        assert.equal(await billing.isActive(user), true);
        assert.equal(await billing.isActive(user), true);
        assert.deepEqual(outcomes, ["fail_open", "fail_open"], "not cached: asked twice");
      });
    }
  } finally {
    await credits.close();
  }
  await t.step("down", async () => {
    const outcomes: BillingOutcome[] = [];
    const billing = creditsBilling({
      url: credits.url,
      serviceKey: "k",
      onOutcome: (o) => outcomes.push(o),
    });
    assert.equal(await billing.isActive("dave"), true);
    assert.deepEqual(outcomes, ["fail_open"]);
  });
});
