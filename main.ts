/**
 * Composition root: load config, open the store, run migrations, build the app, serve, and shut
 * down cleanly on SIGTERM/SIGINT. The only file that touches the environment, sockets and signals.
 */
import { createApp } from "./src/app.ts";
import { loadDevKeys } from "./src/auth/dev_keys.ts";
import { remoteKeySource, staticKeySource } from "./src/auth/keys.ts";
import { createVerifier } from "./src/auth/verifier.ts";
import { ConfigError, loadConfig } from "./src/config.ts";
import { creditsBilling } from "./src/billing/credits.ts";
import { createLogger, errorFields } from "./src/log.ts";
import { Hub, type SyncEvent } from "./src/realtime/hub.ts";
import { postgresPubSub, type PubSub, singleInstance } from "./src/realtime/pubsub.ts";
import { createBackupStore } from "./src/store/backup_store.ts";
import { instrumentDb } from "./src/store/instrumented_db.ts";
import { openDatabase, pingDatabase } from "./src/store/open.ts";
import { createSyncStore } from "./src/store/sync_store.ts";

const dev = Deno.args.includes("--dev");

let config;
try {
  config = loadConfig((name) => Deno.env.get(name), { dev });
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  console.error(e.message);
  Deno.exit(1);
}

const logger = createLogger(config.logLevel);
// postgres.js can write to a connection it has just closed, from a timer, which would end the
// process (porsager/postgres#1154, #1208). The statement has already failed (CONNECTION_CLOSED, a
// 503) and its connection is dropped by the pool: log it and go on.
globalThis.addEventListener("error", (event) => {
  const error: unknown = event.error;
  if (
    error instanceof TypeError && error.message.includes("reading 'write'") &&
    /nextWrite[\s\S]*postgres/.test(error.stack ?? "")
  ) {
    event.preventDefault();
    logger.warn("postgres.js wrote to a closed connection; ignored", errorFields(error));
  }
});

const opened = await openDatabase(config, {
  onDrop: (reason) => logger.warn("database connection dropped", errorFields(reason)),
});
const applied = opened.applied;
// Counts in-flight work and errors for /metrics; the pool is one connection on PGlite.
const { db, stats: dbStats } = instrumentDb(
  opened.db,
  opened.db.kind === "pglite" ? 1 : config.databasePoolMax,
);
logger.info("database ready", { kind: db.kind, migrationsApplied: applied });

const keys = config.jwksUrl
  ? remoteKeySource(config.jwksUrl, {
    onError: (error) => logger.warn("JWKS fetch failed", errorFields(error)),
  })
  : await staticKeySource((await loadDevKeys(config.dataDir)).jwks);
if (!config.jwksUrl) {
  logger.warn(
    "dev mode: tokens are verified with the local key pair; mint one with `deno task token <userId>`",
  );
}

const hub = new Hub();
const pubsub: PubSub = config.databaseUrl
  ? await postgresPubSub(config.databaseUrl, (text, params) => db.query(text, params), {
    timeoutMs: config.databaseTimeoutMs,
    onEvent: (event) => hub.publish(event),
    onState: (state, error) =>
      state === "listening"
        ? logger.info("listening for other instances")
        : logger.warn("lost the notification listener, reconnecting", errorFields(error)),
  })
  : singleInstance;
const publish = (event: SyncEvent) => {
  hub.publish(event);
  pubsub.publish(event).catch((error) =>
    logger.warn("could not notify other instances", errorFields(error))
  );
};

const billing = config.manaCreditsUrl
  ? creditsBilling({
    url: config.manaCreditsUrl,
    serviceKey: config.manaServiceKey ?? "",
    onOutcome: (outcome, error) => {
      if (outcome === "fail_open") {
        logger.warn("billing check failed, sync allowed", errorFields(error));
      }
    },
  })
  : undefined;

const app = createApp({
  config,
  billing,
  store: createSyncStore(db),
  backup: createBackupStore(db),
  verifier: createVerifier(keys, { issuer: config.jwtIssuer, audience: config.jwtAudience }),
  logger,
  checkDatabase: async () => ({ kind: db.kind, ok: await pingDatabase(db) }),
  hub,
  publish,
  dbStats,
});

const shutdown = new AbortController();
const server = Deno.serve({
  port: config.port,
  hostname: config.host,
  signal: shutdown.signal,
  onListen: ({ hostname, port }) => logger.info("listening", { hostname, port }),
}, app.fetch);

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => {
    logger.info("shutting down", { signal });
    // Long-lived connections would hold the graceful shutdown open: close them first (1001).
    hub.closeAll(1001, "server shutting down");
    shutdown.abort();
  });
}

await server.finished;
await pubsub.close();
await db.close();
logger.info("stopped");
