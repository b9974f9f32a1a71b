/**
 * Real-time endpoints: WebSocket (`/ws`, `/ws/{appId}`) upgraded natively by Deno, and the SSE
 * stream. Thin: the protocol lives in src/realtime/.
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { Verifier } from "../auth/verifier.ts";
import { errorFields, type Logger } from "../log.ts";
import type { Hub } from "../realtime/hub.ts";
import { runSseStream } from "../realtime/sse_session.ts";
import { createWsSession } from "../realtime/ws_session.ts";
import type { SyncStore } from "../store/sync_store.ts";
import { parseSince, storable } from "../sync/change.ts";
import { badRequest, SyncError } from "../sync/errors.ts";
import type { Env } from "./env.ts";
import { appIdOf } from "./sync.ts";

export interface RealtimeOptions {
  hub: Hub;
  verifier: Verifier;
  store: SyncStore;
  logger: Logger;
  wsAuthTimeoutMs: number;
  wsMaxBufferedBytes: number;
  sseHeartbeatMs: number;
  pullPageSize: number;
  maxIdLength?: number;
  /** Whether a user may open another WebSocket now (rate limit). */
  admitSocket?: (userId: string) => boolean;
}

const MAX_COLLECTIONS = 100;

export function realtimeHandlers(options: RealtimeOptions) {
  const { hub, verifier, store, logger } = options;
  const maxIdLength = options.maxIdLength ?? 256;

  function websocket(c: Context<Env>) {
    const appId = c.req.param("appId") === undefined ? undefined : appIdOf(c);
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
      throw new SyncError(426, "upgrade_required", "This endpoint speaks WebSocket only", {
        headers: { Upgrade: "websocket" },
      });
    }
    const { socket, response } = Deno.upgradeWebSocket(c.req.raw, { idleTimeout: 0 });
    const session = createWsSession(socket, {
      hub,
      verifier,
      appId,
      authTimeoutMs: options.wsAuthTimeoutMs,
      maxBufferedBytes: options.wsMaxBufferedBytes,
      ...(options.admitSocket ? { admit: options.admitSocket } : {}),
    });
    socket.onmessage = (e) => {
      session.message(e.data).catch((error) =>
        logger.error("websocket message failed", { error: String(error) })
      );
    };
    socket.onclose = () => session.closed();
    socket.onerror = () => session.closed();
    return response;
  }

  function stream(c: Context<Env>) {
    const appId = appIdOf(c);
    const collections = [
      ...new Set(
        (c.req.query("collections") ?? "").split(",").map((s) => s.trim()).filter(Boolean),
      ),
    ];
    if (collections.length === 0) {
      throw badRequest(
        "missing_collections",
        "Query parameter collections is required (comma-separated)",
      );
    }
    if (collections.length > MAX_COLLECTIONS || collections.some((t) => t.length > maxIdLength)) {
      throw badRequest(
        "invalid_collections",
        `At most ${MAX_COLLECTIONS} collections of ${maxIdLength} characters`,
      );
    }
    if (!collections.every(storable)) {
      throw badRequest("invalid_collections", "collections contain a NUL or a lone surrogate");
    }
    const sinceParam = c.req.query("since");
    if (sinceParam === undefined) {
      throw badRequest("invalid_since", "Query parameter since is required");
    }
    const since = parseSince(sinceParam);
    const userId = c.get("userId");
    const clientId = c.req.header("x-client-id") || undefined;
    return streamSSE(c, async (sse) => {
      const gone = new AbortController();
      sse.onAbort(() => gone.abort());
      try {
        await runSseStream({
          hub,
          userId,
          appId,
          clientId,
          collections,
          since,
          heartbeatMs: options.sseHeartbeatMs,
          // Hono aborts the stream when the client goes away (the response body is cancelled).
          signal: gone.signal,
          pull: (table, cursor) =>
            store.pull({
              userId,
              appId,
              clientId: clientId ?? "",
              table,
              since: cursor,
              pageSize: options.pullPageSize,
            }),
          write: (event, data) => sse.writeSSE({ event, data }),
        });
      } catch (error) {
        // Never Hono's default (the error's message in the stream): log it, tell the client plainly.
        logger.warn("event stream failed", errorFields(error));
        await sse.writeSSE({
          event: "error",
          data: JSON.stringify({
            error: "stream_failed",
            message: "The stream failed; reconnect to resume",
          }),
        });
      }
    });
  }

  return { websocket, stream };
}
