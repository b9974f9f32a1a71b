import assert from "node:assert/strict";
import { tokenBucket } from "../../src/http/rate_limit.ts";

Deno.test("tokenBucket() allows a burst of perMinute, then asks to wait", () => {
  const t = 0;
  const limit = tokenBucket(60, () => t);
  for (let i = 0; i < 60; i++) assert.equal(limit.take("alice"), 0, `request ${i} allowed`);
  assert.equal(limit.take("alice"), 1, "one token a second: wait a second");
  assert.equal(limit.take("bob"), 0, "buckets are per key");
});

Deno.test("tokenBucket() refills continuously", () => {
  let t = 0;
  const limit = tokenBucket(6, () => t); // one token every 10 s
  for (let i = 0; i < 6; i++) limit.take("a");
  assert.equal(limit.take("a"), 10);
  t += 4_000;
  assert.equal(limit.take("a"), 6, "the wait shrinks as the bucket refills");
  t += 6_000;
  assert.equal(limit.take("a"), 0);
  t += 3_600_000;
  for (let i = 0; i < 6; i++) assert.equal(limit.take("a"), 0);
  assert.ok(limit.take("a") > 0, "never more than the burst, however long the pause");
});

Deno.test("tokenBucket() forgets full buckets once it holds many", () => {
  let t = 0;
  const limit = tokenBucket(60, () => t);
  for (let i = 0; i < 10_000; i++) limit.take(`user-${i}`);
  t += 60_000; // all full again
  limit.take("newcomer");
  assert.equal(limit.size(), 1);
});
