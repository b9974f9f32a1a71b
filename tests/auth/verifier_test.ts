import assert from "node:assert/strict";
import { remoteKeySource } from "../../src/auth/keys.ts";
import { bearerToken, createVerifier } from "../../src/auth/verifier.ts";
import { SyncError } from "../../src/sync/errors.ts";
import { startJwksServer } from "../helpers/jwks_server.ts";

async function rejects401(p: Promise<unknown>, message: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof SyncError);
    assert.equal(e.status, 401);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("createVerifier() accepts a valid token and returns its sub", async () => {
  const jwks = await startJwksServer();
  try {
    const verifier = createVerifier(remoteKeySource(jwks.url));
    assert.deepEqual(await verifier.verify(await jwks.token("alice")), { userId: "alice" });
  } finally {
    await jwks.close();
  }
});

Deno.test("createVerifier() refuses bad tokens with 401", async (t) => {
  const jwks = await startJwksServer();
  const verifier = createVerifier(remoteKeySource(jwks.url));
  try {
    await t.step("expired", async () => {
      await rejects401(
        verifier.verify(await jwks.token("a", { expiresIn: Math.floor(Date.now() / 1000) - 5 })),
        /expired/,
      );
    });
    await t.step("not yet valid (nbf)", async () => {
      const token = await jwks.token("a", {
        claims: { nbf: Math.floor(Date.now() / 1000) + 3600 },
      });
      await rejects401(verifier.verify(token), /nbf/);
    });
    await t.step("no sub", async () => {
      await rejects401(verifier.verify(await jwks.token("a", { sub: null })), /no sub/);
    });
    await t.step("no kid", async () => {
      await rejects401(verifier.verify(await jwks.token("a", { kid: null })), /no kid/);
    });
    await t.step("signed by another key", async () => {
      await rejects401(
        verifier.verify(await jwks.token("a", { foreignKey: true })),
        /bad signature/,
      );
    });
    await t.step("alg none", async () => {
      await rejects401(verifier.verify(jwks.unsignedToken("a")), /Invalid token/);
    });
    await t.step("garbage", async () => {
      await rejects401(verifier.verify("a.b.c"), /Invalid token/);
    });
  } finally {
    await jwks.close();
  }
});

Deno.test("createVerifier() enforces issuer and audience when configured", async () => {
  const jwks = await startJwksServer();
  try {
    const verifier = createVerifier(remoteKeySource(jwks.url), {
      issuer: "https://auth",
      audience: "sync",
    });
    await rejects401(verifier.verify(await jwks.token("a")), /iss|aud/);
    await rejects401(
      verifier.verify(await jwks.token("a", { claims: { iss: "https://evil", aud: "sync" } })),
      /iss/,
    );
    await rejects401(
      verifier.verify(await jwks.token("a", { claims: { iss: "https://auth", aud: "other" } })),
      /aud/,
    );
    const ok = await jwks.token("a", { claims: { iss: "https://auth", aud: "sync" } });
    assert.deepEqual(await verifier.verify(ok), { userId: "a" });
  } finally {
    await jwks.close();
  }
});

Deno.test("createVerifier() remembers a verified token until its exp or cacheSeconds", async (t) => {
  const jwks = await startJwksServer();
  const source = remoteKeySource(jwks.url);
  let lookups = 0;
  const counting = { getKey: (kid: string) => (lookups++, source.getKey(kid)) };
  let clock = Date.now();
  const verifier = createVerifier(counting, { cacheSeconds: 60, cacheSize: 2, now: () => clock });
  try {
    const alice = await jwks.token("alice");
    await t.step("the second verification of a token checks nothing", async () => {
      assert.deepEqual(await verifier.verify(alice), { userId: "alice" });
      assert.deepEqual(await verifier.verify(alice), { userId: "alice" });
      assert.equal(lookups, 1);
    });
    await t.step("a token is checked again after cacheSeconds", async () => {
      clock += 61_000;
      assert.deepEqual(await verifier.verify(alice), { userId: "alice" });
      assert.equal(lookups, 2);
    });
    await t.step("a bad token is never remembered", async () => {
      const foreign = await jwks.token("a", { foreignKey: true });
      await rejects401(verifier.verify(foreign), /bad signature/);
      await rejects401(verifier.verify(foreign), /bad signature/);
    });
    await t.step("the oldest entry goes when cacheSize is reached", async () => {
      const [bob, carol] = [await jwks.token("bob"), await jwks.token("carol")];
      await verifier.verify(bob);
      await verifier.verify(carol); // alice (the oldest) is dropped
      const before = lookups;
      await verifier.verify(carol);
      await verifier.verify(bob);
      assert.equal(lookups, before, "bob and carol are remembered");
      await verifier.verify(alice);
      assert.equal(lookups, before + 1, "alice is checked again");
    });
    await t.step("an expired token is refused although it was remembered", async () => {
      const exp = Math.floor(clock / 1000) + 10;
      const short = await jwks.token("dave", { expiresIn: exp });
      assert.deepEqual(await verifier.verify(short), { userId: "dave" });
      const before = lookups;
      clock = exp * 1000 - 1;
      assert.deepEqual(await verifier.verify(short), { userId: "dave" }, "remembered");
      assert.equal(lookups, before);
      clock = exp * 1000;
      await rejects401(verifier.verify(short), /expired/);
    });
  } finally {
    await jwks.close();
  }
});

Deno.test("remoteKeySource() refetches on an unknown kid, at most once per cooldown", async () => {
  const jwks = await startJwksServer();
  try {
    const verifier = createVerifier(remoteKeySource(jwks.url, { cooldownMs: 60_000 }));
    await verifier.verify(await jwks.token("a"));
    await verifier.verify(await jwks.token("a"));
    assert.equal(jwks.fetches(), 1, "known keys are cached");
    await rejects401(verifier.verify(await jwks.token("a", { kid: "unknown" })), /unknown key/);
    assert.equal(jwks.fetches(), 1, "a second unknown kid within the cooldown does not refetch");

    const rotating = createVerifier(remoteKeySource(jwks.url, { cooldownMs: 0 }));
    await rotating.verify(await jwks.token("a"));
    await jwks.rotate();
    assert.deepEqual(
      await rotating.verify(await jwks.token("b")),
      { userId: "b" },
      "a new kid is fetched",
    );
  } finally {
    await jwks.close();
  }
});

Deno.test("remoteKeySource() keeps known keys while the JWKS endpoint is down", async () => {
  const jwks = await startJwksServer();
  const errors: unknown[] = [];
  try {
    const keys = remoteKeySource(jwks.url, {
      maxAgeMs: 0,
      cooldownMs: 0,
      onError: (e) => errors.push(e),
    });
    const verifier = createVerifier(keys, { cacheSize: 0 }); // every verification asks the keys
    const token = await jwks.token("a");
    await verifier.verify(token);
    jwks.setDown(true);
    await new Promise((r) => setTimeout(r, 5)); // the set is now older than maxAgeMs
    assert.deepEqual(await verifier.verify(token), { userId: "a" });
    // The background refresh failed and was reported, the key stayed.
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(errors.length >= 1);
    assert.deepEqual(await verifier.verify(token), { userId: "a" });
  } finally {
    await jwks.close();
  }
});

Deno.test("bearerToken() takes the token of a Bearer header, scheme case-insensitive", () => {
  assert.equal(bearerToken("Bearer abc"), "abc");
  assert.equal(bearerToken("bearer abc"), "abc");
  assert.equal(bearerToken("BEARER  abc "), "abc");
  for (const bad of [undefined, null, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b"]) {
    assert.throws(
      () => bearerToken(bad),
      (e: unknown) => e instanceof SyncError && e.status === 401,
    );
  }
});
