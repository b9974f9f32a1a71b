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
import { isDroppedConnectionNoise } from "./src/store/errors.ts";
import { instrumentDb } from "./src/store/instrumented_db.ts";
import { openDatabase, pingDatabase } from "./src/store/open.ts";
import { withReadAhead } from "./src/store/read_ahead.ts";
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

// postgres.js can trip over a connection the pool already gave up, from a timer or a promise it
// never awaits (isDroppedConnectionNoise): log it and go on; anything else ends the process.
for (const type of ["error", "unhandledrejection"] as const) {
  globalThis.addEventListener(type, (event) => {
    const error = event instanceof ErrorEvent ? event.error : event.reason;
    if (!isDroppedConnectionNoise(error)) return;
    event.preventDefault();
    logger.warn("postgres.js tripped over a dropped connection; ignored", errorFields(error));
  });
}

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

/** Set by SIGTERM/SIGINT (see the drain below). */
let stopping = false;
const store = withReadAhead(createSyncStore(db), {
  // Speculative reads only while at least half of the pool is free, and none while draining.
  busy: () => stopping || dbStats().inFlight * 2 >= dbStats().poolMax,
});
const app = createApp({
  config,
  billing,
  store,
  readAheadStats: store.stats,
  backup: createBackupStore(db),
  verifier: createVerifier(keys, { issuer: config.jwtIssuer, audience: config.jwtAudience }),
  logger,
  checkDatabase: async () => ({ kind: db.kind, ok: await pingDatabase(db) }),
  hub,
  publish,
  dbStats,
});

/** Handlers running now (a streaming response's body may outlive its handler). */
const handling = new Set<Promise<Response>>();
const server = Deno.serve({
  port: config.port,
  hostname: config.host,
  onListen: ({ hostname, port }) => logger.info("listening", { hostname, port }),
}, (request, info) => {
  if (stopping) {
    return Response.json(
      { error: "shutting_down", message: "The server is shutting down, try again shortly" },
      { status: 503, headers: { "Retry-After": "1" } },
    );
  }
  const answer = Promise.resolve(app.fetch(request, info));
  handling.add(answer);
  answer.finally(() => handling.delete(answer)).catch(() => {});
  return answer;
});

/**
 * SIGTERM/SIGINT: close WebSockets and SSE streams (1001), let the requests in flight finish, stop
 * accepting, then close the pool. Deno 2.9's `server.shutdown()` makes a request body that is
 * still arriving unreadable (denoland/deno#36809), so it is called only once every handler has
 * returned (each has read its body by then); until then new requests get 503 + Retry-After. After
 * SHUTDOWN_TIMEOUT_SECONDS, or on a second signal, whatever still runs is cut.
 */
const drained = Promise.withResolvers<"drained" | "deadline" | "second signal">();
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => {
    if (stopping) return drained.resolve("second signal");
    stopping = true;
    logger.info("shutting down", { signal, drainSeconds: config.shutdownTimeoutMs / 1000 });
    // Long-lived connections would hold the graceful shutdown open: close them first (1001).
    hub.closeAll(1001, "server shutting down");
    setTimeout(() => drained.resolve("deadline"), config.shutdownTimeoutMs);
    (async () => {
      while (handling.size > 0) await Promise.allSettled([...handling]);
      await server.shutdown(); // stops accepting, waits for streaming responses
      drained.resolve("drained");
    })().catch((error) => {
      logger.error("graceful shutdown failed", errorFields(error));
      drained.resolve("drained");
    });
  });
}

const how = await drained.promise;
if (how !== "drained") {
  logger.warn("cutting the requests still running", {
    reason: how,
    handlers: handling.size,
    drainSeconds: config.shutdownTimeoutMs / 1000,
  });
}
await pubsub.close();
await db.close();
logger.info("stopped");
// Past the deadline the server still holds connections: the exit cuts them.
Deno.exit(0);
