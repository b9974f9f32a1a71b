/**
 * The in-process hub: user → live subscribers (WebSocket sockets, SSE streams). A push that commits
 * becomes one `SyncEvent`; the hub hands it to every subscriber of that user that wants it. It
 * depends on a tiny `Subscriber` interface, not on WebSocket, so tests drive it with plain fakes.
 */

/** What a committed push tells the other devices of its user. */
export interface SyncEvent {
  userId: string;
  appId: string;
  tables: string[];
  /** The pushing client; its own subscribers are not told. */
  clientId: string;
}

export interface Subscriber {
  readonly userId: string;
  /** Only this app's events (legacy `/ws/{appId}`, SSE); every app when undefined (`/ws`). */
  readonly appId?: string | undefined;
  /** The subscriber's own client id: events it caused are not delivered back (no echo). */
  readonly clientId?: string | undefined;
  /**
   * Hands over an event. Returns false when the subscriber cannot keep up (its bounded queue is
   * full): the hub then drops it, so that one slow socket never delays the others.
   */
  deliver(event: SyncEvent): boolean;
  /** Closes the underlying connection (WebSocket close code and reason). */
  close(code: number, reason: string): void;
}

export interface HubStats {
  connections: number;
  users: number;
  delivered: number;
  dropped: number;
}

export class Hub {
  #byUser = new Map<string, Set<Subscriber>>();
  #connections = 0;
  #delivered = 0;
  #dropped = 0;

  /** Registers a subscriber; returns the function that removes it (idempotent). */
  add(subscriber: Subscriber): () => void {
    let set = this.#byUser.get(subscriber.userId);
    if (!set) this.#byUser.set(subscriber.userId, set = new Set());
    if (!set.has(subscriber)) {
      set.add(subscriber);
      this.#connections++;
    }
    return () => this.#remove(subscriber);
  }

  #remove(subscriber: Subscriber): boolean {
    const set = this.#byUser.get(subscriber.userId);
    if (!set?.delete(subscriber)) return false;
    this.#connections--;
    if (set.size === 0) this.#byUser.delete(subscriber.userId);
    return true;
  }

  /** Delivers an event to the user's matching subscribers; drops those that cannot keep up. */
  publish(event: SyncEvent): void {
    const set = this.#byUser.get(event.userId);
    if (!set) return;
    for (const subscriber of [...set]) {
      if (subscriber.appId !== undefined && subscriber.appId !== event.appId) continue;
      if (subscriber.clientId !== undefined && subscriber.clientId === event.clientId) continue;
      let delivered = false;
      try {
        delivered = subscriber.deliver(event);
      } catch { /* a subscriber that throws is treated like one that cannot keep up */ }
      if (delivered) {
        this.#delivered++;
      } else if (this.#remove(subscriber)) {
        this.#dropped++;
        try {
          subscriber.close(1013, "too slow");
        } catch { /* already gone */ }
      }
    }
  }

  /** Closes every subscriber (shutdown: 1001 "going away"). */
  closeAll(code = 1001, reason = "server shutting down"): void {
    for (const set of [...this.#byUser.values()]) {
      for (const subscriber of [...set]) {
        this.#remove(subscriber);
        subscriber.close(code, reason);
      }
    }
  }

  stats(): HubStats {
    return {
      connections: this.#connections,
      users: this.#byUser.size,
      delivered: this.#delivered,
      dropped: this.#dropped,
    };
  }
}
