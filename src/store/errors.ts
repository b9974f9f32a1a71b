/**
 * Which database errors mean "try again later" (503 with Retry-After) rather than a bug (500):
 * lost or refused connections, serialization failures and deadlocks, a server shutting down or
 * out of connections, and a database that did not answer in time (pg_pool.ts).
 */
const TRANSIENT_SQLSTATES = new Set([
  "40001", // serialization_failure
  "40P01", // deadlock_detected
  "53300", // too_many_connections
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
]);

const TRANSIENT_CLIENT_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "DATABASE_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
]);

export function isTransientDbError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string") return false;
  return TRANSIENT_SQLSTATES.has(code) || code.startsWith("08") || TRANSIENT_CLIENT_CODES.has(code);
}

/**
 * Whether an uncaught error is postgres.js tripping over a connection the pool has already given
 * up: a write to the closed socket from a timer (porsager/postgres#1154, #1208), or a promise of
 * its own that nobody awaits rejected when the connection is destroyed. The statements concerned
 * have already failed (503); such errors are logged, anything else still ends the process.
 */
export function isDroppedConnectionNoise(error: unknown): boolean {
  if (!(error instanceof Error) || !/postgres/.test(error.stack ?? "")) return false;
  if (error instanceof TypeError) {
    return error.message.includes("reading 'write'") && /nextWrite/.test(error.stack ?? "");
  }
  const code = (error as { code?: unknown }).code;
  return code === "CONNECTION_DESTROYED" || code === "CONNECTION_CLOSED" ||
    code === "CONNECTION_ENDED";
}
