/** A device speaking the sync protocol over real HTTP, as the Dexie clients do. */
import { EPOCH_CURSOR } from "../../src/sync/time.ts";
import type { WireChange } from "../../src/sync/wire.ts";

export interface Reply<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

export interface PageBody extends Record<string, unknown> {
  serverChanges: WireChange[];
  conflicts: unknown[];
  syncedUntil: string;
  hasMore: boolean;
}

export class Device {
  constructor(
    readonly baseUrl: string,
    readonly token: string,
    readonly clientId: string,
    readonly appId = "todo",
  ) {}

  async request<T = Record<string, unknown>>(
    path: string,
    init: RequestInit = {},
  ): Promise<Reply<T>> {
    const headers = new Headers(init.headers);
    if (!headers.has("authorization") && this.token) {
      headers.set("authorization", `Bearer ${this.token}`);
    }
    if (!headers.has("x-client-id")) headers.set("x-client-id", this.clientId);
    const response = await fetch(this.baseUrl + path, { ...init, headers });
    const text = await response.text();
    let body: T;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(
        `${init.method ?? "GET"} ${path} answered ${response.status} with non-JSON: ${
          text.slice(0, 200)
        }`,
      );
    }
    return { status: response.status, headers: response.headers, body };
  }

  push(changes: unknown[], since = EPOCH_CURSOR, extra: Record<string, unknown> = {}) {
    return this.request<PageBody>(`/sync/${this.appId}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ clientId: this.clientId, since, changes, ...extra }),
    });
  }

  pull(collection: string, since = EPOCH_CURSOR) {
    const q = new URLSearchParams({ collection, since });
    return this.request<PageBody>(`/sync/${this.appId}/pull?${q}`);
  }

  /** Pulls page after page until hasMore is false; returns every change and the final cursor. */
  async pullAll(collection: string, since = EPOCH_CURSOR) {
    const changes: WireChange[] = [];
    let pages = 0;
    for (;;) {
      const reply = await this.pull(collection, since);
      if (reply.status !== 200) {
        throw new Error(`pull answered ${reply.status}: ${JSON.stringify(reply.body)}`);
      }
      changes.push(...reply.body.serverChanges);
      since = reply.body.syncedUntil;
      pages++;
      if (!reply.body.hasMore) return { changes, syncedUntil: since, pages };
    }
  }
}

export function taskInsert(id: string, title: string, extra: Record<string, unknown> = {}) {
  return {
    eventId: crypto.randomUUID(),
    table: "tasks",
    id,
    op: "insert",
    data: { id, title, updatedAt: new Date().toISOString() },
    ...extra,
  };
}
