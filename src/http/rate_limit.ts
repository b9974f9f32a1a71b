/**
 * Per-user rate limits: a token bucket per (user, kind of request). Pure apart from the clock it is
 * given. A bucket holds up to `perMinute` tokens (the burst) and refills continuously; an empty
 * bucket answers with the seconds until the next token (the 429's Retry-After).
 */

export interface RateLimiter {
  /** Takes a token; returns 0 when allowed, else the whole seconds to wait. */
  take(key: string): number;
  /** Buckets held (full ones are forgotten). */
  size(): number;
}

/** Beyond this many buckets, full ones are swept on insert. */
const SWEEP_AT = 10_000;

export function tokenBucket(perMinute: number, now: () => number = Date.now): RateLimiter {
  const capacity = perMinute, perMs = perMinute / 60_000;
  const buckets = new Map<string, { tokens: number; at: number }>();
  const refill = (b: { tokens: number; at: number }, t: number) => {
    b.tokens = Math.min(capacity, b.tokens + (t - b.at) * perMs);
    b.at = t;
  };
  return {
    take(key) {
      const t = now();
      let bucket = buckets.get(key);
      if (!bucket) {
        if (buckets.size >= SWEEP_AT) {
          for (const [k, b] of buckets) {
            refill(b, t);
            if (b.tokens >= capacity) buckets.delete(k);
          }
        }
        buckets.set(key, bucket = { tokens: capacity, at: t });
      }
      refill(bucket, t);
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return 0;
      }
      return Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000));
    },
    size: () => buckets.size,
  };
}
