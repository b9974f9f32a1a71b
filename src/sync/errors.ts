/**
 * The one error type that carries an HTTP status. Bad input anywhere in the service becomes a
 * `SyncError`; `src/app.ts` is the one place that maps it to a response. Anything else thrown is a
 * bug and becomes a logged 500 with no details in the body.
 */
export class SyncError extends Error {
  override readonly name = "SyncError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra members merged into the JSON body (e.g. `serverTime`), and headers to send. */
    readonly extra: { body?: Record<string, unknown>; headers?: Record<string, string> } = {},
  ) {
    super(message);
  }
}

/** Shorthand for the most common case: a 400 with a stable code. */
export function badRequest(code: string, message: string): SyncError {
  return new SyncError(400, code, message);
}
