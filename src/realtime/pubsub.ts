/**
 * Fan-out across instances: every instance publishes the events of its pushes and hands the
 * events of every other instance to its own hub (its own events it delivers directly). Behind one small interface: PostgreSQL
 * LISTEN/NOTIFY when the instances share a PostgreSQL, in process on the embedded database.
 * Notifications are hints; a device that misses one still gets everything by pulling.
 */
import net from "node:net";
import postgres from "postgres";
import type { SyncEvent } from "./hub.ts";

export interface PubSub {
  /** Sends an event to every *other* instance; the caller delivers it to its own hub. */
  publish(event: SyncEvent): Promise<void>;
  close(): Promise<void>;
}

/** The embedded database serves one instance: there is no one else to tell. */
export const singleInstance: PubSub = {
  publish: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

export const CHANNEL = "mana_sync_events";
/** PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. */
const MAX_PAYLOAD = 7900;

/**
 * The NOTIFY payload of an event from instance `from`: short keys; the table list is cut when it
 * would not fit.
 */
export function encodeEvent(event: SyncEvent, from: string): string {
  const message = { i: from, u: event.userId, a: event.appId, t: event.tables, c: event.clientId };
  const payload = JSON.stringify(message);
  if (new TextEncoder().encode(payload).length <= MAX_PAYLOAD) return payload;
  // Too many tables to name: an empty list means "something in this app changed".
  return JSON.stringify({ ...message, t: [] });
}

export function decodeEvent(payload: string): { from: string; event: SyncEvent } | undefined {
  try {
    const { i, u, a, t, c } = JSON.parse(payload);
    if ([i, u, a, c].some((x) => typeof x !== "string")) return undefined;
    if (!Array.isArray(t) || !t.every((x) => typeof x === "string")) return undefined;
    return { from: i, event: { userId: u, appId: a, tables: t, clientId: c } };
  } catch {
    return undefined;
  }
}

export interface PostgresPubSubOptions {
  onEvent: (event: SyncEvent) => void;
  /** Called with each (re)connection of the listener and each failure. */
  onState?: (state: "listening" | "reconnecting", error?: unknown) => void;
  /** Longest wait between two attempts to listen again. Default 5 s. */
  maxBackoffMs?: number;
  /**
   * How long the listener may take to connect or to answer its periodic ping before its
   * connection is given up and replaced. Default 5 s.
   */
  timeoutMs?: number;
  /** How often the listener pings its connection. Default 2 × `timeoutMs`. */
  pingMs?: number;
}

/**
 * LISTEN on a dedicated, non-pooled connection (LISTEN does not survive a transaction-pooling
 * proxy). When that connection drops, it listens again by itself, with backoff, until it succeeds;
 * the hub's subscriptions live in process and are untouched. Publishing uses the service's pool.
 * A connection the network silently dropped never closes by itself: a ping that goes unanswered
 * for `timeoutMs` destroys it, which starts the same reconnection.
 */
export async function postgresPubSub(
  url: string,
  publishVia: (text: string, params: unknown[]) => Promise<unknown>,
  options: PostgresPubSubOptions,
): Promise<PubSub> {
  const { onEvent, onState, maxBackoffMs = 5000, timeoutMs = 5000 } = options;
  const pingMs = options.pingMs ?? 2 * timeoutMs;
  const instanceId = crypto.randomUUID();
  let closing = false;
  let listening: Promise<void> | undefined;
  let socket: net.Socket | undefined;
  // `onnotify` and `onclose` are the options postgres.js's own `sql.listen()` is built on; we use
  // them directly because `listen()` gives up on a channel whose re-LISTEN fails while the
  // database is down, and we must keep trying.
  const sql = postgres(url, {
    max: 1,
    max_lifetime: null,
    fetch_types: false,
    connect_timeout: Math.ceil(timeoutMs / 1000),
    // Our own socket, so that an unanswered ping can destroy it.
    socket: (o: { host: string[]; port: number[]; path?: string }) => {
      const s = o.path
        ? net.connect({ path: o.path })
        : Object.assign(net.connect({ host: o.host[0]!, port: o.port[0]! }), {
          host: o.host[0],
          port: o.port[0],
        });
      socket = s;
      return s;
    },
    onnotice: () => {},
    connection: { application_name: "mana-sync-listener" },
    onnotify: (channel: string, payload: string) => {
      if (channel !== CHANNEL) return;
      const decoded = decodeEvent(payload);
      if (decoded && decoded.from !== instanceId) onEvent(decoded.event);
    },
    onclose: () => {
      if (closing) return;
      onState?.("reconnecting");
      void listen();
    },
  } as postgres.Options<Record<string, never>>);

  const listen = () =>
    listening ??= (async () => {
      for (let attempt = 0; !closing; attempt++) {
        try {
          await sql.unsafe(`LISTEN ${CHANNEL}`);
          onState?.("listening");
          return;
        } catch (error) {
          onState?.("reconnecting", error);
          await new Promise((r) => setTimeout(r, Math.min(maxBackoffMs, 100 * 2 ** attempt)));
        }
      }
    })().finally(() => listening = undefined);

  await listen();
  const ping = setInterval(async () => {
    if (listening || closing) return; // reconnecting already
    const pinged = socket;
    const timer = setTimeout(() => pinged?.destroy(), timeoutMs);
    try {
      await sql.unsafe("SELECT 1");
    } catch { /* the connection closed: onclose listens again */ }
    clearTimeout(timer);
  }, pingMs);
  return {
    publish: async (event) => {
      await publishVia("SELECT pg_notify($1, $2)", [CHANNEL, encodeEvent(event, instanceId)]);
    },
    close: async () => {
      closing = true;
      clearInterval(ping);
      await sql.end({ timeout: 1 });
    },
  };
}
