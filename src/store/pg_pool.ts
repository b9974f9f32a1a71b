/**
 * The PostgreSQL pool behind `openPostgres`, built so that a database that goes away costs a
 * request a bounded wait, never a hang, and never a half-written transaction:
 *
 * - Every wait is bounded: for a free connection, for connecting (postgres.js `connect_timeout`),
 *   for each statement's answer. Past the bound the caller gets a `DatabaseTimeoutError` (503).
 *   A statement on a connection the network silently dropped would otherwise wait for the
 *   kernel's retransmission timeout (many minutes); `statement_timeout` cannot help then, as the
 *   server never hears of it.
 * - Each connection is a postgres.js client of its own (`max: 1`) over a socket this module opens,
 *   so the connection whose statement overstayed, or whose socket failed, is destroyed and its
 *   client retired; the next lease gets a fresh one. postgres.js keeps no state about a broken
 *   connection that a later caller could trip over (it crashes the process on a write after a
 *   close inside `sql.begin`, porsager/postgres#1208, and runs a closed transaction's remaining
 *   statements on a new session, #1216): transactions here are plain `BEGIN`/`COMMIT` on a leased
 *   connection, and once `pin()`ned a connection refuses to reconnect, so no statement of a
 *   transaction can run on another session.
 */
import net from "node:net";
import postgres from "postgres";

/** The database did not answer in time (503 + Retry-After, like a lost connection). */
export class DatabaseTimeoutError extends Error {
  override readonly name = "DatabaseTimeoutError";
  readonly code = "DATABASE_TIMEOUT";
}

/** A connection-level failure with the code postgres.js gives a closed connection. */
function connectionClosed(message: string): Error {
  return Object.assign(new Error(message), { code: "CONNECTION_CLOSED" });
}

export interface PoolOptions {
  max: number;
  /** postgres.js `connect_timeout`: TCP, TLS and authentication, in seconds. */
  connectTimeoutSeconds: number;
  /**
   * Longest wait, in milliseconds, for a connection plus its first answer, and for each later
   * answer. Unbounded when absent (migrations, tests).
   */
  timeoutMs?: number | undefined;
  /** postgres.js options every connection shares (startup parameters, notices, types). */
  client: postgres.Options<Record<string, never>>;
  /** Called when a connection is given up (timed out or lost), with why. */
  onDrop?: ((reason: unknown) => void) | undefined;
}

/** One connection, leased to one caller at a time. */
export interface Lease {
  readonly sql: postgres.Sql<Record<string, never>>;
  /**
   * `answer`, bounded by the pool's timeout. Past it the connection is dropped (its statements
   * fail, its client is retired on release) and this rejects with a `DatabaseTimeoutError`.
   */
  bounded<T>(answer: Promise<T>): Promise<T>;
  /** From now on the connection may not reconnect: an open transaction lives on this session. */
  pin(): void;
  /** Whether the socket is still up (nothing dropped it, the peer did not close it). */
  readonly alive: boolean;
  /** Gives the connection up: its socket is destroyed now, its client retired on release. */
  drop(reason: unknown): void;
}

/** postgres.js's own default: connections are replaced after 30 to 60 minutes. */
const lifetimeMs = () => (30 + Math.random() * 30) * 60_000;

class Connection implements Lease {
  readonly sql: postgres.Sql<Record<string, never>>;
  readonly #expires = performance.now() + lifetimeMs();
  #socket: net.Socket | undefined;
  #pinned = false;
  #retired = false;
  #dropped = false;
  #hostIndex = 0;

  constructor(
    url: string,
    private readonly pool: {
      options: PoolOptions;
      timeoutMs: number | undefined;
    },
    /** When the first bounded wait of this lease ends (acquiring shares it). */
    public firstDeadline = Infinity,
    private readonly onRetire?: (c: Connection) => void,
  ) {
    this.sql = postgres(url, {
      ...pool.options.client,
      max: 1,
      // Replaced by the pool between leases instead: postgres.js would end it mid-transaction.
      max_lifetime: null,
      connect_timeout: pool.options.connectTimeoutSeconds,
      socket: (o: { host: string[]; port: number[]; path?: string }) => this.#connect(o),
    } as postgres.Options<Record<string, never>>) as unknown as postgres.Sql<
      Record<string, never>
    >;
  }

  #connect(o: { host: string[]; port: number[]; path?: string }): net.Socket {
    if (this.#retired || this.#pinned || this.#dropped) {
      // A statement of a transaction would run outside it, on a new session: refuse.
      throw connectionClosed("The connection of this transaction was lost");
    }
    let socket: net.Socket;
    if (o.path) {
      socket = net.connect({ path: o.path });
    } else {
      const i = this.#hostIndex++ % o.host.length;
      const host = o.host[i]!, port = o.port[i] ?? o.port[0]!;
      socket = net.connect({ host, port });
      // postgres.js reads these for TLS (servername) and error messages.
      Object.assign(socket, { host, port });
    }
    this.#socket = socket;
    socket.once("close", () => {
      if (this.#socket === socket) this.#socket = undefined;
    });
    return socket;
  }

  get alive(): boolean {
    return !this.#dropped && this.#socket !== undefined && !this.#socket.destroyed;
  }

  get reusable(): boolean {
    return !this.#dropped && !this.#retired && performance.now() < this.#expires;
  }

  pin(): void {
    this.#pinned = true;
  }

  unpin(): void {
    this.#pinned = false;
  }

  drop(reason: unknown): void {
    if (this.#dropped) return;
    this.#dropped = true;
    this.#socket?.destroy();
    this.pool.options.onDrop?.(reason);
  }

  retire(): void {
    this.onRetire?.(this);
    this.#retired = true;
    this.#socket?.destroy();
    this.sql.end({ timeout: 0 }).catch(() => {});
  }

  bounded<T>(answer: Promise<T>): Promise<T> {
    const timeoutMs = this.pool.timeoutMs;
    if (timeoutMs === undefined) return answer;
    const now = performance.now();
    const wait = Math.max(0, Math.min(this.firstDeadline, now + timeoutMs) - now);
    this.firstDeadline = Infinity;
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      answer,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          const error = new DatabaseTimeoutError(
            `The database did not answer within ${timeoutMs} ms`,
          );
          answer.catch(() => {}); // it fails once the socket is gone
          this.drop(error);
          reject(error);
        }, wait);
      }),
    ]).finally(() => clearTimeout(timer));
  }
}

export interface Pool {
  /**
   * Runs `work` on a connection of its own. The wait for a free connection counts against the
   * first bounded answer. A connection that was dropped, or has lived long enough, is replaced.
   */
  use<T>(work: (lease: Lease) => Promise<T>): Promise<T>;
  /** Waits up to `timeoutSeconds` for leased connections, then closes every connection. */
  end(timeoutSeconds: number): Promise<void>;
}

export function createPool(url: string, options: PoolOptions): Pool {
  const shared = { options, timeoutMs: options.timeoutMs };
  const idle: Connection[] = [];
  let leased = 0;
  let ending = false;
  const waiters: { grant: (c: Connection) => void; fail: (e: Error) => void }[] = [];
  const leases = new Set<Promise<unknown>>();
  /** Every connection not retired yet, idle or leased. */
  const all = new Set<Connection>();
  const fresh = (deadline = Infinity) => {
    const c = new Connection(url, shared, deadline, (gone) => all.delete(gone));
    all.add(c);
    return c;
  };

  const acquire = (deadline: number): Promise<Connection> => {
    if (ending) {
      return Promise.reject(
        Object.assign(new Error("The database pool is closed"), { code: "CONNECTION_ENDED" }),
      );
    }
    const reuse = idle.pop();
    if (reuse) {
      leased++;
      reuse.firstDeadline = deadline;
      return Promise.resolve(reuse);
    }
    if (leased < options.max) {
      leased++;
      return Promise.resolve(fresh(deadline));
    }
    return new Promise((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter = {
        grant: (c: Connection) => {
          clearTimeout(timer);
          c.firstDeadline = deadline;
          resolve(c);
        },
        fail: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      waiters.push(waiter);
      if (Number.isFinite(deadline)) {
        timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(
            new DatabaseTimeoutError(
              `No database connection was free within ${options.timeoutMs} ms`,
            ),
          );
        }, Math.max(0, deadline - performance.now()));
      }
    });
  };

  const release = (c: Connection) => {
    c.unpin();
    if (!c.reusable) {
      c.retire();
      if (ending) {
        leased--;
        return;
      }
      c = fresh();
    }
    const waiter = waiters.shift();
    if (waiter) return waiter.grant(c);
    leased--;
    if (ending) c.retire();
    else idle.push(c);
  };

  return {
    async use(work) {
      const deadline = options.timeoutMs === undefined
        ? Infinity
        : performance.now() + options.timeoutMs;
      const c = await acquire(deadline);
      // Shed what queued for most of its budget: its first answer would likely overstay the rest,
      // and an answer that overstays costs its connection, healthy as it is. Under overload that
      // turned waiting into a storm of reconnects; now it is a prompt 503 and the pool stays.
      if (deadline - performance.now() < (options.timeoutMs ?? 0) / 4) {
        release(c);
        throw new DatabaseTimeoutError(
          `No database connection was free within ${options.timeoutMs} ms`,
        );
      }
      const running = (async () => {
        try {
          return await work(c);
        } finally {
          release(c);
        }
      })();
      leases.add(running);
      running.finally(() => leases.delete(running)).catch(() => {});
      return await running;
    },
    async end(timeoutSeconds) {
      ending = true;
      for (const w of waiters.splice(0)) {
        w.fail(
          Object.assign(new Error("The database pool is closed"), { code: "CONNECTION_ENDED" }),
        );
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...leases]),
        new Promise((r) => timer = setTimeout(r, timeoutSeconds * 1000)),
      ]);
      clearTimeout(timer);
      const closing = idle.splice(0).map((c) => {
        all.delete(c);
        return c.sql.end({ timeout: 0 });
      });
      // Still leased after the wait: cut.
      for (const c of all) c.retire();
      await Promise.allSettled(closing);
    },
  };
}
