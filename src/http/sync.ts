/**
 * Push and pull handlers: parse, call the core, shape the response. Nothing else.
 */
import type { Context } from "hono";
import {
  APP_ID,
  DEFAULT_LIMITS,
  type Limits,
  parsePush,
  parseSince,
  storable,
} from "../sync/change.ts";
import { badRequest, SyncError } from "../sync/errors.ts";
import { futureTimestamp } from "../sync/merge.ts";
import { instantKeyOfMillis } from "../sync/time.ts";
import { withChanges } from "../sync/wire.ts";
import type { Page, SyncStore } from "../store/sync_store.ts";
import type { SyncEvent } from "../realtime/hub.ts";
import type { Env } from "./env.ts";

export interface SyncHandlerOptions {
  store: SyncStore;
  maxChangesPerPush: number;
  maxClockSkewSeconds: number;
  pushPageSize: number;
  pullPageSize: number;
  maxIdLength?: number;
  /** Called after a push that stored something has committed. */
  onPushed?: (event: SyncEvent) => void;
  now?: () => number;
}

export function appIdOf(c: Context<Env>): string {
  const appId = c.req.param("appId") ?? "";
  if (!APP_ID.test(appId)) {
    throw badRequest("invalid_app_id", `Invalid app id: ${JSON.stringify(appId)}`);
  }
  return appId;
}

/** A page as a response body; the changes are spliced in as the store read them (`wireJson`). */
function pageBody(c: Context<Env>, page: Page, conflicts: readonly unknown[]) {
  const { serverChanges, syncedUntil, hasMore } = page;
  return c.body(withChanges("serverChanges", serverChanges, { syncedUntil, hasMore, conflicts }), {
    headers: { "content-type": "application/json" },
  });
}

export function syncHandlers(options: SyncHandlerOptions) {
  const { store, now = Date.now } = options;
  const limits: Limits = {
    ...DEFAULT_LIMITS,
    maxChanges: options.maxChangesPerPush,
    maxIdLength: options.maxIdLength ?? DEFAULT_LIMITS.maxIdLength,
  };

  async function push(c: Context<Env>) {
    const appId = appIdOf(c);
    let body: unknown;
    try {
      body = JSON.parse(await c.req.text());
    } catch (e) {
      if (e instanceof SyntaxError) throw badRequest("invalid_json", "Body is not valid JSON");
      throw e;
    }
    const request = parsePush(body, { clientIdHeader: c.req.header("x-client-id"), limits });
    const at = now();
    const skewMs = options.maxClockSkewSeconds * 1000;
    const future = futureTimestamp(request.changes, instantKeyOfMillis(at + skewMs));
    if (future !== undefined) {
      throw new SyncError(
        422,
        "clock_skew",
        `Timestamp "${future}" is more than ${options.maxClockSkewSeconds} s ahead of the server clock`,
        { body: { serverTime: new Date(at).toISOString() } },
      );
    }
    const userId = c.get("userId");
    const result = await store.push({
      userId,
      appId,
      request,
      receivedAt: new Date(at).toISOString(),
      pageSize: options.pushPageSize,
    });
    if (result.stored > 0) {
      options.onPushed?.({ userId, appId, clientId: request.clientId, tables: result.tables });
    }
    return pageBody(c, result, result.conflicts);
  }

  async function pull(c: Context<Env>) {
    const appId = appIdOf(c);
    const table = c.req.query("collection");
    if (!table) throw badRequest("missing_collection", "Query parameter collection is required");
    if (table.length > limits.maxIdLength) {
      throw badRequest(
        "invalid_collection",
        `collection is longer than ${limits.maxIdLength} characters`,
      );
    }
    if (!storable(table)) {
      throw badRequest("invalid_collection", "collection contains a NUL or a lone surrogate");
    }
    const sinceParam = c.req.query("since");
    if (sinceParam === undefined) {
      throw badRequest("invalid_since", "Query parameter since is required");
    }
    const clientId = c.req.header("x-client-id");
    if (!clientId) throw badRequest("missing_client_id", "Header X-Client-Id is required");
    const page = await store.pull({
      userId: c.get("userId"),
      appId,
      clientId,
      table,
      since: parseSince(sinceParam),
      pageSize: options.pullPageSize,
    });
    return pageBody(c, page, []);
  }

  return { push, pull };
}
