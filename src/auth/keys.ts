/**
 * Where verification keys come from: a remote JWKS (production) or a fixed set (the dev key pair,
 * tests). The remote set is cached; an unknown `kid` triggers one refetch (rate-limited), a stale
 * set is refreshed in the background, and a failed fetch keeps the keys already known — a JWKS
 * outage never locks out users whose keys were fetched before.
 */
import { importJWK, type JWK } from "jose";

export interface KeySource {
  /** The verification key with this id, or `undefined` when there is none. */
  getKey(kid: string): Promise<CryptoKey | undefined>;
}

async function importKeys(jwks: unknown): Promise<Map<string, CryptoKey>> {
  const keys = new Map<string, CryptoKey>();
  const list = (jwks as { keys?: unknown })?.keys;
  if (!Array.isArray(list)) throw new Error("JWKS has no keys array");
  for (const jwk of list as JWK[]) {
    // Only Ed25519 keys with an id are usable; anything else in the set is skipped.
    if (jwk?.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.kid !== "string") continue;
    if (jwk.use !== undefined && jwk.use !== "sig") continue;
    keys.set(jwk.kid, await importJWK({ ...jwk, alg: "EdDSA" }, "EdDSA") as CryptoKey);
  }
  return keys;
}

/** A fixed key set (public JWKs). */
export async function staticKeySource(jwks: { keys: JWK[] }): Promise<KeySource> {
  const keys = await importKeys(jwks);
  return { getKey: (kid) => Promise.resolve(keys.get(kid)) };
}

export interface RemoteKeySourceOptions {
  /** Age after which the set is refreshed in the background. Default 10 minutes. */
  maxAgeMs?: number;
  /** Least time between two fetches caused by unknown key ids. Default 30 seconds. */
  cooldownMs?: number;
  /** Timeout of one fetch. Default 5 seconds. */
  timeoutMs?: number;
  fetch?: typeof fetch;
  onError?: (error: unknown) => void;
}

export function remoteKeySource(url: string, options: RemoteKeySourceOptions = {}): KeySource {
  const { maxAgeMs = 600_000, cooldownMs = 30_000, timeoutMs = 5_000, fetch = globalThis.fetch } =
    options;
  let keys = new Map<string, CryptoKey>();
  let fetchedAt = -Infinity;
  let inFlight: Promise<void> | undefined;

  const refresh = () =>
    inFlight ??= (async () => {
      try {
        const response = await fetch(url, {
          headers: { accept: "application/json" },
          signal: AbortSignal.timeout(timeoutMs),
        });
        if (!response.ok) throw new Error(`JWKS answered ${response.status}`);
        keys = await importKeys(await response.json());
        fetchedAt = Date.now();
      } catch (error) {
        options.onError?.(error);
      } finally {
        inFlight = undefined;
      }
    })();

  return {
    async getKey(kid) {
      const age = Date.now() - fetchedAt;
      if (!keys.has(kid) && age >= cooldownMs) await refresh();
      else if (age > maxAgeMs) void refresh();
      return keys.get(kid);
    },
  };
}
