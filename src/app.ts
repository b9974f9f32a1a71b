/**
 * createApp(deps) → the Hono app: middleware order, routes, and the one place where errors become
 * responses. It opens nothing and reads no environment; main.ts hands it what it needs.
 */
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { createMiddleware } from "hono/factory";
import { matchedRoutes } from "hono/route";
import type { Config } from "./config.ts";
import { bearerToken, type Verifier } from "./auth/verifier.ts";
import { type BillingCheck, SYNC_INACTIVE } from "./billing/credits.ts";
import { backupHandlers } from "./http/backup.ts";
import { type RateLimiter, tokenBucket } from "./http/rate_limit.ts";
import type { Env } from "./http/env.ts";
import { realtimeHandlers } from "./http/realtime.ts";
import { syncHandlers } from "./http/sync.ts";
import { errorFields, type Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import type { Hub, SyncEvent } from "./realtime/hub.ts";
import type { BackupStore } from "./store/backup_store.ts";
import type { DbStats } from "./store/instrumented_db.ts";
import { isTransientDbError } from "./store/errors.ts";
import type { SyncStore } from "./store/sync_store.ts";
import type { ReadAheadStats } from "./store/read_ahead.ts";
import { SyncError } from "./sync/errors.ts";

export interface AppDeps {
  config: Config;
  store: SyncStore;
  /** Export and import of `.mana` archives. */
  backup: BackupStore;
  verifier: Verifier;
  logger: Logger;
  /** The database's state for /health. */
  checkDatabase: () => Promise<{ kind: string; ok: boolean }>;
  /** The billing gate of push, pull and stream; none when no MANA_CREDITS_URL is configured. */
  billing?: BillingCheck | undefined;
  /** This instance's subscribers (WebSocket, SSE). */
  hub: Hub;
  /** Tells every instance's subscribers about a committed push (this instance's hub included). */
  publish: (event: SyncEvent) => void;
  /** The database's pool use and errors for /metrics (`instrumentDb`); left out when absent. */
  dbStats?: (() => DbStats) | undefined;
  /** Pull read-ahead outcomes for /metrics (`withReadAhead`); left out when absent. */
  readAheadStats?: (() => ReadAheadStats) | undefined;
  now?: () => number;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,100}$/;

/** The route label of requests no route matched (bounded cardinality: never the raw path). */
export const UNMATCHED_ROUTE = "unmatched";

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The operations with a latency histogram, by method and route pattern. */
const TIMED: Record<string, string> = {
  "POST /sync/:appId": "push",
  "GET /sync/:appId/pull": "pull",
  "GET /backup/export": "export",
};

/**
 * The pattern of the route that matched (`/sync/:appId`), skipping the app-wide middleware; a CORS
 * preflight answered by middleware still names its route. Unmatched → `UNMATCHED_ROUTE`.
 */
function routeOf(c: Context<Env>): string {
  return matchedRoutes(c).find((r) => r.path !== "/*")?.path ?? UNMATCHED_ROUTE;
}

function errorBody(code: string, message: string, extra?: Record<string, unknown>) {
  return { error: code, message, ...extra };
}

export function createApp(deps: AppDeps): Hono<Env> {
  const { config, logger, verifier } = deps;
  const app = new Hono<Env>();
  const metrics = new Metrics();
  const requests = metrics.counter(
    "mana_sync_http_requests_total",
    "HTTP requests by method, route pattern and status",
    ["method", "route", "status"],
  );
  const duration = metrics.histogram(
    "mana_sync_request_duration_seconds",
    "Time to the response of push, pull and export (export: until the archive starts streaming)",
    { labelNames: ["operation"] },
  );
  for (const operation of Object.values(TIMED)) duration.seed({ operation });
  const changesStored = metrics.counter(
    "mana_sync_changes_stored_total",
    "Changes stored in the log, by where they came from (push, backup import)",
    ["source"],
  );
  const conflictsReported = metrics.counter(
    "mana_sync_conflicts_total",
    "Incoming field values that lost to newer ones, reported in push responses",
  );
  // The stores as the handlers see them, counting what was stored (in the app, not in the SQL).
  const store: SyncStore = {
    push: async (input) => {
      const result = await deps.store.push(input);
      changesStored.inc({ source: "push" }, result.stored);
      conflictsReported.inc({}, result.conflicts.length);
      return result;
    },
    pull: (input) => deps.store.pull(input),
  };
  const backupStore: BackupStore = {
    readLog: (userId, fn) => deps.backup.readLog(userId, fn),
    importChanges: async (userId, changes) => {
      const result = await deps.backup.importChanges(userId, changes);
      changesStored.inc({ source: "import" }, result.stored);
      return result;
    },
  };
  const sync = syncHandlers({
    store,
    maxChangesPerPush: config.maxChangesPerPush,
    maxClockSkewSeconds: config.maxClockSkewSeconds,
    pushPageSize: config.pushPageSize,
    pullPageSize: config.pullPageSize,
    onPushed: deps.publish,
    ...(deps.now ? { now: deps.now } : {}),
  });
  const backup = backupHandlers({
    store: backupStore,
    maxImportBytes: config.maxImportBytes,
    maxConcurrentExports: Math.max(1, Math.floor(config.databasePoolMax / 2)),
    logger,
    onImported: deps.publish,
    ...(deps.now ? { now: deps.now } : {}),
  });
  const limiters = Object.fromEntries(
    Object.entries(config.rateLimits).map((
      [kind, perMinute],
    ) => [kind, perMinute > 0 ? tokenBucket(perMinute) : undefined]),
  ) as Record<keyof Config["rateLimits"], RateLimiter | undefined>;
  const realtime = realtimeHandlers({
    hub: deps.hub,
    verifier,
    store,
    logger,
    wsAuthTimeoutMs: config.wsAuthTimeoutMs,
    wsMaxBufferedBytes: config.wsMaxBufferedBytes,
    sseHeartbeatMs: config.sseHeartbeatMs,
    pullPageSize: config.pullPageSize,
    admitSocket: (userId) => (limiters.ws?.take(userId) ?? 0) === 0,
  });
  metrics
    .single(
      "mana_sync_connections_total",
      "Open WebSocket connections and SSE streams",
      "gauge",
      () => deps.hub.stats().connections,
    )
    .single(
      "mana_sync_users_connected",
      "Users with at least one open connection",
      "gauge",
      () => deps.hub.stats().users,
    )
    .single(
      "mana_sync_notifications_sent_total",
      "Notifications handed to connections",
      "counter",
      () => deps.hub.stats().delivered,
    )
    .single(
      "mana_sync_notifications_dropped_total",
      "Connections dropped for being too slow",
      "counter",
      () => deps.hub.stats().dropped,
    );
  if (deps.billing) {
    const billing = deps.billing;
    metrics.register({
      name: "mana_sync_billing_checks_total",
      help: "Billing checks by where the answer came from (cache hit, mana-credits, fail-open)",
      type: "counter",
      samples: () => Object.entries(billing.stats()).map(([outcome, n]) => [{ outcome }, n]),
    });
  }
  if (deps.readAheadStats) {
    const stats = deps.readAheadStats;
    metrics.register({
      name: "mana_sync_pull_read_ahead_total",
      help: "Pages read ahead for a pull: taken by the next pull (hit) or not (wasted)",
      type: "counter",
      samples: () => {
        const { hits, wasted } = stats();
        return [[{ result: "hit" }, hits], [{ result: "wasted" }, wasted]];
      },
    });
  }
  if (deps.dbStats) {
    const stats = deps.dbStats;
    metrics
      .single(
        "mana_sync_db_in_flight",
        "Database transactions and statements running or waiting for a pool connection",
        "gauge",
        () => stats().inFlight,
      )
      .single(
        "mana_sync_db_pool_max",
        "Configured database pool size (1 on the embedded database)",
        "gauge",
        () => stats().poolMax,
      )
      .register({
        name: "mana_sync_db_errors_total",
        help: "Database errors by kind (transient: 503 and retry; other: a failed statement)",
        type: "counter",
        samples: () => Object.entries(stats().errors).map(([kind, n]) => [{ kind }, n]),
      });
  }

  app.use(async function accessLog(c, next) {
    const incoming = c.req.header("x-request-id");
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    c.set("requestId", requestId);
    const started = performance.now();
    await next();
    const seconds = (performance.now() - started) / 1000;
    c.header("X-Request-Id", requestId);
    const method = METHODS.has(c.req.method) ? c.req.method : "other";
    const route = routeOf(c);
    requests.inc({ method, route, status: String(c.res.status) });
    const operation = TIMED[`${method} ${route}`];
    if (operation) duration.observe({ operation }, seconds);
    logger.info("request", {
      requestId,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round(seconds * 10_000) / 10,
      ...(c.get("userId") ? { userId: c.get("userId") } : {}),
    });
  });

  // Hono answers HEAD with the GET handler's response and drops its body without cancelling it:
  // a stream (export, SSE) would keep its transaction or its hub slot for good. Cancel it here.
  app.use(async function headDropsBody(c, next) {
    await next();
    if (c.req.method === "HEAD") c.res.body?.cancel("HEAD request").catch(() => {});
  });

  app.use(cors({
    origin: [...config.corsOrigins],
    allowMethods: ["GET", "POST", "OPTIONS"],
    allowHeaders: ["Authorization", "Content-Type", "X-Client-Id"],
    // A browser's fetch may read these: the archive's file name, waits, the request id.
    exposeHeaders: ["Content-Disposition", "Retry-After", "X-Request-Id"],
    credentials: true,
    maxAge: 600,
  }));

  const requireUser = createMiddleware<Env>(async function requireUser(c, next) {
    const { userId } = await verifier.verify(bearerToken(c.req.header("authorization")));
    c.set("userId", userId);
    await next();
  });

  /** Per-user limit of one kind of request: 429 with Retry-After when the user's bucket is empty. */
  const rateLimit = (kind: "push" | "pull" | "stream") =>
    createMiddleware<Env>(async function rateLimit(c, next) {
      const wait = limiters[kind]?.take(c.get("userId")) ?? 0;
      if (wait > 0) {
        throw new SyncError(429, "rate_limited", `Too many ${kind} requests, retry in ${wait} s`, {
          headers: { "Retry-After": String(wait) },
        });
      }
      await next();
    });

  const exempt = new Set(config.billingExemptApps);
  const requireSync = createMiddleware<Env>(async function requireSync(c, next) {
    const appId = c.req.param("appId") ?? "";
    if (deps.billing && !exempt.has(appId) && !(await deps.billing.isActive(c.get("userId")))) {
      return c.json(SYNC_INACTIVE, 402);
    }
    await next();
  });

  const limitBody = bodyLimit({
    maxSize: config.maxBodyBytes,
    onError: () => {
      throw new SyncError(
        413,
        "payload_too_large",
        `Body is larger than ${config.maxBodyBytes} bytes`,
      );
    },
  });

  app.get("/health", async (c) => {
    const database = await deps.checkDatabase();
    return c.json({
      status: database.ok ? "ok" : "degraded",
      service: "mana-sync",
      timestamp: new Date().toISOString(),
      connections: deps.hub.stats().connections,
      users: deps.hub.stats().users,
      database: { kind: database.kind, status: database.ok ? "ok" : "down" },
    }, database.ok ? 200 : 503);
  });

  app.get(
    "/metrics",
    (c) => c.text(metrics.render(), 200, { "Content-Type": "text/plain; version=0.0.4" }),
  );

  app.post("/sync/:appId", limitBody, requireUser, rateLimit("push"), requireSync, sync.push);
  app.get("/sync/:appId/pull", requireUser, rateLimit("pull"), requireSync, sync.pull);
  app.get("/sync/:appId/stream", requireUser, rateLimit("stream"), requireSync, realtime.stream);
  app.get("/ws", realtime.websocket);
  app.get("/ws/:appId", realtime.websocket);
  // Not billing-gated: a user can always take their data out (protocol), and restore it.
  app.get("/backup/export", requireUser, backup.exportBackup);
  app.post("/backup/import", requireUser, backup.importBackup);

  for (
    const [path, allow] of [
      ["/sync/:appId", "POST, OPTIONS"],
      ["/sync/:appId/pull", "GET, OPTIONS"],
      ["/sync/:appId/stream", "GET, OPTIONS"],
      ["/ws", "GET"],
      ["/ws/:appId", "GET"],
      ["/health", "GET"],
      ["/metrics", "GET"],
      ["/backup/export", "GET"],
      ["/backup/import", "POST, OPTIONS"],
    ] as const
  ) {
    app.all(path, (c) => {
      c.header("Allow", allow);
      return c.json(
        errorBody("method_not_allowed", `Method ${c.req.method} is not allowed on ${c.req.path}`),
        405,
      );
    });
  }

  app.notFound((c) =>
    c.json(errorBody("not_found", `No route for ${c.req.method} ${c.req.path}`), 404)
  );

  app.onError((error, c) => {
    if (error instanceof SyncError) {
      for (const [name, value] of Object.entries(error.extra.headers ?? {})) c.header(name, value);
      // deno-lint-ignore no-explicit-any
      return c.json(errorBody(error.code, error.message, error.extra.body), error.status as any);
    }
    if (isTransientDbError(error)) {
      logger.warn("database unavailable", { requestId: c.get("requestId"), ...errorFields(error) });
      c.header("Retry-After", "2");
      return c.json(
        errorBody("database_unavailable", "The database is unavailable, try again shortly"),
        503,
      );
    }
    if (error instanceof Deno.errors.BadResource) {
      // Not the database's: the request body broke off (client gone mid-body, bad chunking).
      logger.warn("request body unreadable", {
        requestId: c.get("requestId"),
        ...errorFields(error),
      });
      return c.json(
        errorBody("incomplete_body", "The request body could not be read to its end"),
        400,
      );
    }
    logger.error("unhandled error", {
      requestId: c.get("requestId"),
      ...errorFields(error),
      stack: error instanceof Error ? error.stack : undefined,
    });
    return c.json(errorBody("internal_error", "Internal server error"), 500);
  });

  return app;
}
