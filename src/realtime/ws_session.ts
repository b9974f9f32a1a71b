/**
 * One WebSocket connection's protocol: in-band `auth` within a deadline, `ping`/`pong` (before auth
 * too), then `sync-available` notifications from the hub. Runtime-neutral: it speaks to a tiny
 * `Socket` interface (Deno's WebSocket fits it), so tests drive it with fakes.
 */
import type { Verifier } from "../auth/verifier.ts";
import type { Hub, SyncEvent } from "./hub.ts";

export interface Socket {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** Bytes queued for sending and not yet handed to the network. */
  readonly bufferedAmount: number;
}

export interface WsSessionOptions {
  hub: Hub;
  verifier: Verifier;
  /** `/ws/{appId}` (legacy): only this app's notifications. */
  appId?: string | undefined;
  authTimeoutMs: number;
  /** A socket with more than this many bytes waiting is dropped. */
  maxBufferedBytes: number;
  /** Largest client message accepted (1009 beyond). */
  maxMessageBytes?: number;
  /** Whether this user may open another socket now (rate limit); refused → error and 1013. */
  admit?: (userId: string) => boolean;
}

export interface WsSession {
  /** Feed every message the client sends. */
  message(data: unknown): Promise<void>;
  /** Call once when the socket has closed, whoever closed it. */
  closed(): void;
}

const json = (x: unknown) => JSON.stringify(x);
const encoder = new TextEncoder();
const PONG = json({ type: "pong" });
const AUTH_OK = json({ type: "auth-ok" });

export function createWsSession(socket: Socket, options: WsSessionOptions): WsSession {
  const { hub, verifier, appId, maxBufferedBytes, maxMessageBytes = 64 * 1024 } = options;
  let state: "pending" | "authenticating" | "open" | "closed" = "pending";
  let unsubscribe: (() => void) | undefined;

  const close = (code: number, reason: string) => {
    if (state === "closed") return;
    state = "closed";
    clearTimeout(timer);
    unsubscribe?.();
    try {
      socket.close(code, reason);
    } catch { /* already closing */ }
  };
  const send = (data: string) => {
    if (state === "closed") return;
    try {
      socket.send(data);
    } catch { /* closing; the close event cleans up */ }
  };
  const timer = setTimeout(() => {
    if (state === "pending" || state === "authenticating") close(1008, "auth timeout");
  }, options.authTimeoutMs);

  const fail = (message: string) => {
    // `tables` repeats the message: the first clients read errors from there.
    send(json({ type: "error", message, tables: [message] }));
    close(1008, message);
  };

  async function authenticate(msg: Record<string, unknown>) {
    if (typeof msg.token !== "string" || msg.token === "") return fail("invalid token");
    state = "authenticating";
    let userId: string;
    try {
      ({ userId } = await verifier.verify(msg.token));
    } catch {
      return fail("invalid token");
    }
    if (state !== "authenticating") return; // closed (timeout, client) while verifying
    if (options.admit && !options.admit(userId)) {
      send(json({ type: "error", message: "rate limited", tables: ["rate limited"] }));
      return close(1013, "rate limited");
    }
    clearTimeout(timer);
    state = "open";
    const clientId = typeof msg.clientId === "string" && msg.clientId !== ""
      ? msg.clientId
      : undefined;
    unsubscribe = hub.add({
      userId,
      appId,
      clientId,
      deliver(event: SyncEvent) {
        if (socket.bufferedAmount > maxBufferedBytes) return false;
        send(json({ type: "sync-available", appId: event.appId, tables: event.tables }));
        return true;
      },
      close,
    });
    send(AUTH_OK);
  }

  return {
    async message(data) {
      if (state === "closed") return;
      if (typeof data !== "string") return fail("messages must be JSON text");
      // UTF-16 length ≤ UTF-8 bytes ≤ 3 × length: encode only when the cheap bound is unsure.
      if (
        data.length > maxMessageBytes ||
        (data.length * 3 > maxMessageBytes && encoder.encode(data).length > maxMessageBytes)
      ) {
        return close(1009, "message too large");
      }
      let msg: unknown;
      try {
        msg = JSON.parse(data);
      } catch {
        return send(
          json({ type: "error", message: "invalid message", tables: ["invalid message"] }),
        );
      }
      const type = (msg as { type?: unknown })?.type;
      if (type === "ping") return send(PONG);
      if (type === "auth") {
        if (state === "pending") return await authenticate(msg as Record<string, unknown>);
        return; // already authenticated (or verifying): a repeated auth changes nothing
      }
      send(
        json({ type: "error", message: `unknown message type`, tables: ["unknown message type"] }),
      );
    },
    closed() {
      if (state === "closed") return;
      state = "closed";
      clearTimeout(timer);
      unsubscribe?.();
    },
  };
}
