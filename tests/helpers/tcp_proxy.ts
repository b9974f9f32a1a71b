/**
 * A TCP proxy on loopback that a test can cut and restore, to take PostgreSQL away from a server
 * without touching the shared PostgreSQL. Two ways to cut:
 *
 * - `refuse`: the port stops listening (new connections are refused) and every live connection is
 *   closed, as when PostgreSQL stops or restarts;
 * - `blackhole`: live connections go silent (bytes are swallowed both ways, nothing is closed) and
 *   new connections are accepted but never answered, as in a network partition.
 *
 * `restore()` forwards new connections again. Connections silenced by a black hole stay silent
 * (as when a firewall or NAT forgot them): the client has to give up on them by itself.
 */

export type CutMode = "refuse" | "blackhole";

export interface TcpProxy {
  readonly port: number;
  /** `url` (a postgres:// URL) with its host and port replaced by the proxy's. */
  via(url: string): string;
  cut(mode: CutMode): void;
  restore(): Promise<void>;
  /** Connections being forwarded now. */
  readonly forwarding: number;
  close(): Promise<void>;
}

interface Pair {
  client: Deno.Conn;
  upstream: Deno.Conn;
  silent: boolean;
}

export function startTcpProxy(target: { hostname: string; port: number }): TcpProxy {
  let listener: Deno.Listener | undefined = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  let mode: CutMode | "open" = "open";
  const pairs = new Set<Pair>();
  /** Accepted while black-holed: never read, never answered, closed only by close(). */
  const held = new Set<Deno.Conn>();
  let closed = false;
  const loops: Promise<void>[] = [];

  const close = (conn: Deno.Conn) => {
    try {
      conn.close();
    } catch { /* already closed */ }
  };

  const pump = async (pair: Pair, from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null || pair.silent) break;
        let written = 0;
        while (written < n) written += await to.write(buffer.subarray(written, n));
        if (pair.silent) break;
      }
    } catch { /* either side closed */ }
    // A silent pair keeps both sockets open (and unanswered) until close().
    if (!pair.silent) {
      pairs.delete(pair);
      close(pair.client);
      close(pair.upstream);
    }
  };

  const serve = async (conn: Deno.Conn) => {
    if (mode === "blackhole") {
      held.add(conn);
      return;
    }
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect(target);
    } catch {
      close(conn);
      return;
    }
    const now = mode as CutMode | "open"; // it may have changed while connecting upstream
    if (now !== "open") {
      close(upstream);
      if (now === "blackhole") held.add(conn);
      else close(conn);
      return;
    }
    const pair: Pair = { client: conn, upstream, silent: false };
    pairs.add(pair);
    void pump(pair, conn, upstream);
    void pump(pair, upstream, conn);
  };

  const acceptLoop = async (l: Deno.Listener) => {
    try {
      for await (const conn of l) void serve(conn);
    } catch { /* listener closed */ }
  };
  loops.push(acceptLoop(listener));

  return {
    port,
    via(url: string) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.toString();
    },
    get forwarding() {
      return [...pairs].filter((p) => !p.silent).length;
    },
    cut(how: CutMode) {
      if (mode !== "open") throw new Error(`The proxy is already cut (${mode})`);
      mode = how;
      if (how === "refuse") {
        listener?.close();
        listener = undefined;
        for (const pair of pairs) {
          pairs.delete(pair);
          close(pair.client);
          close(pair.upstream);
        }
      } else {
        for (const pair of pairs) pair.silent = true;
      }
    },
    async restore() {
      if (mode === "open") return;
      for (let attempt = 0; !listener && !closed; attempt++) {
        try {
          listener = Deno.listen({ hostname: "127.0.0.1", port });
          loops.push(acceptLoop(listener));
        } catch (error) {
          // The closed listener may hold the port for a moment.
          if (!(error instanceof Deno.errors.AddrInUse) || attempt >= 100) throw error;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      mode = "open";
    },
    async close() {
      closed = true;
      listener?.close();
      listener = undefined;
      for (const pair of pairs) {
        close(pair.client);
        close(pair.upstream);
      }
      pairs.clear();
      for (const conn of held) close(conn);
      held.clear();
      await Promise.all(loops);
    },
  };
}
