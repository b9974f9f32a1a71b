/**
 * Configuration from the environment, resolved once. Pure: it takes a getter and never reads
 * `Deno.env` itself, so tests pass plain objects.
 */
import { z } from "zod";

const int = (fallback: number, min = 1) => z.coerce.number().int().min(min).default(fallback);
const url = z.url({ protocol: /^https?$/ });
const optional = <T extends z.ZodType>(schema: T) =>
  z.preprocess((v) => (v === "" ? undefined : v), schema.optional());
const list = z.string().transform((s) => s.split(",").map((x) => x.trim()).filter(Boolean));

const schema = z.object({
  PORT: int(3050, 0).pipe(z.number().max(65535)),
  HOST: z.string().default("0.0.0.0"),
  DATABASE_URL: optional(z.string().regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL")),
  DATABASE_POOL_MAX: int(10),
  DATABASE_TIMEOUT_SECONDS: z.coerce.number().positive().default(5),
  DATA_DIR: z.string().default(".data"),
  JWKS_URL: optional(url),
  JWT_ISSUER: optional(z.string()),
  JWT_AUDIENCE: optional(z.string()),
  CORS_ORIGINS: list.default(["http://localhost:5173"]),
  MANA_CREDITS_URL: optional(url),
  MANA_SERVICE_KEY: optional(z.string()),
  BILLING_EXEMPT_APPS: list.default([]),
  MAX_BODY_BYTES: int(10 * 1024 * 1024),
  MAX_CHANGES_PER_PUSH: int(1000),
  PUSH_PAGE_SIZE: int(5000),
  PULL_PAGE_SIZE: int(1000),
  MAX_CLOCK_SKEW_SECONDS: int(900, 0),
  MAX_IMPORT_BYTES: int(256 * 1024 * 1024),
  WS_AUTH_TIMEOUT_SECONDS: z.coerce.number().positive().default(10),
  WS_MAX_BUFFERED_BYTES: int(256 * 1024),
  SSE_HEARTBEAT_SECONDS: z.coerce.number().positive().default(30),
  RATE_LIMIT_PUSH_PER_MINUTE: z.coerce.number().int().min(0).optional(),
  RATE_LIMIT_PULL_PER_MINUTE: z.coerce.number().int().min(0).optional(),
  RATE_LIMIT_STREAM_PER_MINUTE: z.coerce.number().int().min(0).optional(),
  RATE_LIMIT_WS_PER_MINUTE: z.coerce.number().int().min(0).optional(),
  SHUTDOWN_TIMEOUT_SECONDS: z.coerce.number().positive().default(25),
  LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
});

/** The names of every variable the service reads (the `--allow-env` list mirrors it). */
export const CONFIG_VARIABLES = Object.keys(schema.shape) as (keyof typeof schema.shape)[];

export interface Config {
  readonly port: number;
  readonly host: string;
  /** `deno task dev`: embedded defaults allowed (local key pair, no JWKS). */
  readonly dev: boolean;
  readonly databaseUrl: string | undefined;
  readonly databasePoolMax: number;
  /**
   * Longest wait for PostgreSQL: connecting, a free pool connection plus its first answer, each
   * later answer. Past it the request gets 503 + Retry-After and the connection is dropped.
   */
  readonly databaseTimeoutMs: number;
  readonly dataDir: string;
  readonly jwksUrl: string | undefined;
  readonly jwtIssuer: string | undefined;
  readonly jwtAudience: string | undefined;
  readonly corsOrigins: readonly string[];
  readonly manaCreditsUrl: string | undefined;
  readonly manaServiceKey: string | undefined;
  /** Apps whose sync is never billing-gated. */
  readonly billingExemptApps: readonly string[];
  readonly maxBodyBytes: number;
  readonly maxChangesPerPush: number;
  readonly pushPageSize: number;
  readonly pullPageSize: number;
  readonly maxClockSkewSeconds: number;
  /** Largest backup upload (`POST /backup/import`); the upload is held in memory while it runs. */
  readonly maxImportBytes: number;
  readonly wsAuthTimeoutMs: number;
  readonly wsMaxBufferedBytes: number;
  readonly sseHeartbeatMs: number;
  /** SIGTERM/SIGINT: how long in-flight requests may take to finish before they are cut. */
  readonly shutdownTimeoutMs: number;
  readonly logLevel: "debug" | "info" | "warn" | "error";
  /** Requests per user and minute (the burst, refilled continuously); 0 turns a limit off. */
  readonly rateLimits: Readonly<Record<RateLimited, number>>;
}

export type RateLimited = "push" | "pull" | "stream" | "ws";

/** Production defaults; `deno task dev` has no limits unless one is set. */
const RATE_LIMIT_DEFAULTS: Record<RateLimited, number> = {
  push: 600,
  pull: 1200,
  stream: 60,
  ws: 60,
};

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/**
 * Reads and validates the configuration. Throws a `ConfigError` naming every bad variable.
 * Outside dev mode a `JWKS_URL` is required: production never invents keys.
 */
export function loadConfig(
  get: (name: string) => string | undefined,
  options: { dev: boolean },
): Config {
  const raw = Object.fromEntries(CONFIG_VARIABLES.map((name) => [name, get(name)]));
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) =>
      `${String(i.path[0])}=${JSON.stringify(raw[String(i.path[0])] ?? "")}: ${i.message}`
    );
    throw new ConfigError(`Invalid configuration: ${problems.join("; ")}`);
  }
  const env = parsed.data;
  if (!options.dev && env.JWKS_URL === undefined) {
    throw new ConfigError(
      "Invalid configuration: JWKS_URL is required (only `deno task dev` runs without it, with a local key pair)",
    );
  }
  if (env.MANA_CREDITS_URL !== undefined && env.MANA_SERVICE_KEY === undefined) {
    throw new ConfigError(
      "Invalid configuration: MANA_SERVICE_KEY is required when MANA_CREDITS_URL is set",
    );
  }
  return Object.freeze({
    port: env.PORT,
    host: env.HOST,
    dev: options.dev,
    databaseUrl: env.DATABASE_URL,
    databasePoolMax: env.DATABASE_POOL_MAX,
    databaseTimeoutMs: env.DATABASE_TIMEOUT_SECONDS * 1000,
    dataDir: env.DATA_DIR,
    jwksUrl: env.JWKS_URL,
    jwtIssuer: env.JWT_ISSUER,
    jwtAudience: env.JWT_AUDIENCE,
    corsOrigins: Object.freeze(env.CORS_ORIGINS),
    manaCreditsUrl: env.MANA_CREDITS_URL,
    manaServiceKey: env.MANA_SERVICE_KEY,
    billingExemptApps: Object.freeze(env.BILLING_EXEMPT_APPS),
    maxBodyBytes: env.MAX_BODY_BYTES,
    maxChangesPerPush: env.MAX_CHANGES_PER_PUSH,
    pushPageSize: env.PUSH_PAGE_SIZE,
    pullPageSize: env.PULL_PAGE_SIZE,
    maxClockSkewSeconds: env.MAX_CLOCK_SKEW_SECONDS,
    maxImportBytes: env.MAX_IMPORT_BYTES,
    wsAuthTimeoutMs: env.WS_AUTH_TIMEOUT_SECONDS * 1000,
    wsMaxBufferedBytes: env.WS_MAX_BUFFERED_BYTES,
    sseHeartbeatMs: env.SSE_HEARTBEAT_SECONDS * 1000,
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_SECONDS * 1000,
    logLevel: env.LOG_LEVEL,
    rateLimits: Object.freeze(
      Object.fromEntries(
        (Object.keys(RATE_LIMIT_DEFAULTS) as RateLimited[]).map((kind) => [
          kind,
          env[`RATE_LIMIT_${kind.toUpperCase()}_PER_MINUTE` as "RATE_LIMIT_PUSH_PER_MINUTE"] ??
            (options.dev ? 0 : RATE_LIMIT_DEFAULTS[kind]),
        ]),
      ) as Record<RateLimited, number>,
    ),
  });
}
