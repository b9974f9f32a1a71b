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
