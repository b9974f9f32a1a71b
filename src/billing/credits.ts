/**
 * The billing check: is Cloud Sync active for this user? Asks mana-credits
 * (`GET {url}/api/v1/internal/sync/status/{userId}` with `X-Service-Key`), caches each answer per
 * user for five minutes, and keeps one request in flight per user. Fail-open: when mana-credits is
 * unreachable, slow, answers non-200 or nonsense, sync is allowed and nothing is cached — billing
 * trouble must never lock people out of their own data.
 */

export type BillingOutcome = "hit" | "miss" | "fail_open";

export interface BillingCheck {
  isActive(userId: string): Promise<boolean>;
  /** How many checks were answered from the cache, by mana-credits, or failed open. */
  stats(): Record<BillingOutcome, number>;
}

export interface CreditsBillingOptions {
  url: string;
  serviceKey: string;
  /** How long an answer is kept. Default 5 minutes. */
  ttlMs?: number;
  /** Timeout of one status request. Default 2 seconds. */
  timeoutMs?: number;
  fetch?: typeof fetch;
  now?: () => number;
  /** Called once per check with where the answer came from (metrics). */
  onOutcome?: (outcome: BillingOutcome, error?: unknown) => void;
}

/** Cache entries beyond which expired ones are swept on insert. */
const SWEEP_AT = 10_000;

export function creditsBilling(options: CreditsBillingOptions): BillingCheck {
  const { ttlMs = 300_000, timeoutMs = 2_000, fetch = globalThis.fetch, now = Date.now } = options;
  const base = options.url.replace(/\/+$/, "");
  const cache = new Map<string, { active: boolean; expires: number }>();
  const inFlight = new Map<string, Promise<boolean>>();
  const counts: Record<BillingOutcome, number> = { hit: 0, miss: 0, fail_open: 0 };
  const outcome = (o: BillingOutcome, error?: unknown) => {
    counts[o]++;
    options.onOutcome?.(o, error);
  };

  async function ask(userId: string): Promise<boolean> {
    try {
      const response = await fetch(
        `${base}/api/v1/internal/sync/status/${encodeURIComponent(userId)}`,
        {
          headers: { "X-Service-Key": options.serviceKey, accept: "application/json" },
          signal: AbortSignal.timeout(timeoutMs),
        },
      );
      if (response.status !== 200) {
        await response.body?.cancel();
        throw new Error(`mana-credits answered ${response.status}`);
      }
      const body = await response.json();
      if (typeof body?.active !== "boolean") {
        throw new Error("mana-credits answered without a boolean active");
      }
      if (cache.size >= SWEEP_AT) {
        const t = now();
        for (const [key, entry] of cache) if (entry.expires <= t) cache.delete(key);
      }
      cache.set(userId, { active: body.active, expires: now() + ttlMs });
      outcome("miss");
      return body.active;
    } catch (error) {
      outcome("fail_open", error);
      return true;
    }
  }

  return {
    isActive(userId) {
      const cached = cache.get(userId);
      if (cached && cached.expires > now()) {
        outcome("hit");
        return Promise.resolve(cached.active);
      }
      let pending = inFlight.get(userId);
      if (!pending) {
        pending = ask(userId).finally(() => inFlight.delete(userId));
        inFlight.set(userId, pending);
      }
      return pending;
    },
    stats: () => ({ ...counts }),
  };
}

/** The 402 body, byte for byte what the clients expect. */
export const SYNC_INACTIVE = {
  error: "sync_inactive",
  message: "Cloud Sync ist nicht aktiv. Aktiviere Sync in den Einstellungen.",
} as const;
