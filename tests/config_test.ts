import assert from "node:assert/strict";
import { CONFIG_VARIABLES, ConfigError, loadConfig } from "../src/config.ts";
import { startTaskFlags } from "./helpers/server_process.ts";

const from = (env: Record<string, string>) => (name: string) => env[name];

Deno.test("loadConfig() applies the documented defaults", () => {
  const config = loadConfig(from({}), { dev: true });
  assert.equal(config.port, 3050);
  assert.equal(config.databaseUrl, undefined);
  assert.equal(config.jwksUrl, undefined);
  assert.deepEqual(config.corsOrigins, ["http://localhost:5173"]);
  assert.equal(config.maxBodyBytes, 10 * 1024 * 1024);
  assert.equal(config.maxChangesPerPush, 1000);
  assert.equal(config.pushPageSize, 5000);
  assert.equal(config.pullPageSize, 1000);
  assert.equal(config.maxImportBytes, 256 * 1024 * 1024);
  assert.equal(config.databaseTimeoutMs, 5000);
  assert.equal(config.shutdownTimeoutMs, 25_000);
  assert.ok(Object.isFrozen(config));
});

Deno.test("loadConfig() reads every variable", () => {
  const config = loadConfig(
    from({
      PORT: "8080",
      DATABASE_URL: "postgresql://u@h:5432/db",
      JWKS_URL: "https://auth.example/jwks",
      JWT_ISSUER: "https://auth.example",
      CORS_ORIGINS: "https://a.example, https://b.example,",
      MAX_CHANGES_PER_PUSH: "200",
      MAX_CLOCK_SKEW_SECONDS: "0",
      LOG_LEVEL: "warn",
    }),
    { dev: false },
  );
  assert.equal(config.port, 8080);
  assert.equal(config.databaseUrl, "postgresql://u@h:5432/db");
  assert.equal(config.jwksUrl, "https://auth.example/jwks");
  assert.equal(config.jwtIssuer, "https://auth.example");
  assert.deepEqual(config.corsOrigins, ["https://a.example", "https://b.example"]);
  assert.equal(config.maxChangesPerPush, 200);
  assert.equal(config.maxClockSkewSeconds, 0);
  assert.equal(config.logLevel, "warn");
});

Deno.test("loadConfig() names every bad variable", () => {
  assert.throws(
    () =>
      loadConfig(from({ PORT: "eighty", DATABASE_URL: "mysql://x", PULL_PAGE_SIZE: "0" }), {
        dev: true,
      }),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      for (const name of ['PORT="eighty"', 'DATABASE_URL="mysql://x"', 'PULL_PAGE_SIZE="0"']) {
        assert.ok(e.message.includes(name), `${e.message} names ${name}`);
      }
      return true;
    },
  );
});

Deno.test("loadConfig() refuses to run outside dev mode without JWKS_URL", () => {
  assert.throws(() => loadConfig(from({}), { dev: false }), /JWKS_URL is required/);
  assert.equal(
    loadConfig(from({ JWKS_URL: "http://127.0.0.1:1/jwks" }), { dev: false }).dev,
    false,
  );
});

Deno.test("the start task may read every configuration variable and nothing else of ours", async () => {
  const flags = await startTaskFlags();
  const env = flags.find((f) => f.startsWith("--allow-env="))!.slice("--allow-env=".length).split(
    ",",
  );
  for (const name of CONFIG_VARIABLES) assert.ok(env.includes(name), `--allow-env lists ${name}`);
  assert.ok(!flags.includes("-A") && !flags.includes("--allow-all"));
  assert.ok(flags.includes("--allow-write=./.data"));
});

Deno.test("the Dockerfile runs with the start task's flags", async () => {
  const dockerfile = await Deno.readTextFile(new URL("../Dockerfile", import.meta.url));
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
  const flags = cmd.filter((a) => a.startsWith("--allow-"));
  assert.deepEqual(flags, await startTaskFlags());
});

Deno.test("loadConfig() needs MANA_SERVICE_KEY with MANA_CREDITS_URL, and reads the exempt apps", () => {
  assert.throws(
    () => loadConfig(from({ MANA_CREDITS_URL: "http://127.0.0.1:3061" }), { dev: true }),
    /MANA_SERVICE_KEY is required when MANA_CREDITS_URL is set/,
  );
  const config = loadConfig(
    from({
      MANA_CREDITS_URL: "http://127.0.0.1:3061",
      MANA_SERVICE_KEY: "k",
      BILLING_EXEMPT_APPS: "calc, clock",
    }),
    { dev: true },
  );
  assert.deepEqual(config.billingExemptApps, ["calc", "clock"]);
  assert.deepEqual(loadConfig(from({}), { dev: true }).billingExemptApps, []);
});

Deno.test("loadConfig() limits rates in production, not in dev, unless told", () => {
  const production = loadConfig(from({ JWKS_URL: "http://127.0.0.1:1/jwks" }), { dev: false });
  assert.deepEqual(production.rateLimits, { push: 600, pull: 1200, stream: 60, ws: 60 });
  assert.deepEqual(loadConfig(from({}), { dev: true }).rateLimits, {
    push: 0,
    pull: 0,
    stream: 0,
    ws: 0,
  });
  const tuned = loadConfig(
    from({
      JWKS_URL: "http://127.0.0.1:1/jwks",
      RATE_LIMIT_PULL_PER_MINUTE: "5",
      RATE_LIMIT_WS_PER_MINUTE: "0",
    }),
    { dev: false },
  );
  assert.equal(tuned.rateLimits.pull, 5);
  assert.equal(tuned.rateLimits.ws, 0);
});
