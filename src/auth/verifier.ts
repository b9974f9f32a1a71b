/**
 * Bearer-token verification: EdDSA (Ed25519) JWTs, `kid` and `sub` required, `exp`/`nbf` honoured,
 * optional issuer and audience checks. Every failure is a 401 `SyncError`.
 */
import { errors, type JWTHeaderParameters, jwtVerify } from "jose";
import { SyncError } from "../sync/errors.ts";
import type { KeySource } from "./keys.ts";

export interface Identity {
  userId: string;
}

export interface Verifier {
  verify(token: string): Promise<Identity>;
}

export interface VerifierOptions {
  issuer?: string | undefined;
  audience?: string | undefined;
  /**
   * Tokens remembered as verified (default 10,000): a device sends the same token with every
   * request, and a signature check cost about 5% of the server's CPU under load. An entry is
   * trusted until the token's `exp`, and for at most `cacheSeconds`.
   */
  cacheSize?: number;
  /** Longest a verification is remembered (default 60 s). */
  cacheSeconds?: number;
  /** The clock of `exp`/`nbf` checks and of the cache. */
  now?: () => number;
}

export function createVerifier(keys: KeySource, options: VerifierOptions = {}): Verifier {
  const { cacheSize = 10_000, cacheSeconds = 60, now = Date.now } = options;
  const checks = {
    algorithms: ["EdDSA", "Ed25519"],
    ...(options.issuer ? { issuer: options.issuer } : {}),
    ...(options.audience ? { audience: options.audience } : {}),
  };
  /** Verified tokens, oldest first: the identity and until when it may be reused. */
  const verified = new Map<string, { identity: Identity; until: number }>();
  return {
    async verify(token) {
      const known = verified.get(token);
      if (known !== undefined) {
        if (now() < known.until) return known.identity;
        verified.delete(token);
      }
      const identity = await check(token);
      const exp = identity.exp === undefined ? Infinity : identity.exp * 1000;
      const until = Math.min(exp, now() + cacheSeconds * 1000);
      if (cacheSize > 0) {
        if (verified.size >= cacheSize) verified.delete(verified.keys().next().value!);
        verified.set(token, { identity: { userId: identity.userId }, until });
      }
      return { userId: identity.userId };
    },
  };

  async function check(token: string): Promise<Identity & { exp?: number | undefined }> {
    try {
      const { payload } = await jwtVerify(token, async (header: JWTHeaderParameters) => {
        if (typeof header.kid !== "string" || header.kid === "") {
          throw new SyncError(401, "unauthorized", "Invalid token: no kid in its header");
        }
        const key = await keys.getKey(header.kid);
        if (!key) {
          throw new SyncError(401, "unauthorized", `Invalid token: unknown key "${header.kid}"`);
        }
        return key;
      }, { ...checks, currentDate: new Date(now()) });
      if (typeof payload.sub !== "string" || payload.sub === "") {
        throw new SyncError(401, "unauthorized", "Invalid token: no sub claim");
      }
      return { userId: payload.sub, exp: payload.exp };
    } catch (e) {
      if (e instanceof SyncError) throw e;
      throw new SyncError(401, "unauthorized", `Invalid token: ${describe(e)}`);
    }
  }
}

function describe(e: unknown): string {
  if (e instanceof errors.JWTExpired) return "expired";
  if (e instanceof errors.JWTClaimValidationFailed) return `claim ${e.claim} ${e.reason}`;
  if (e instanceof errors.JOSEAlgNotAllowed) return "algorithm not allowed";
  if (e instanceof errors.JWSSignatureVerificationFailed) return "bad signature";
  return "malformed";
}

/** The token of an `Authorization: Bearer <token>` header (scheme matched case-insensitively). */
export function bearerToken(header: string | undefined | null): string {
  const m = header ? /^bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m) {
    throw new SyncError(
      401,
      "unauthorized",
      "Missing bearer token: send Authorization: Bearer <jwt>",
    );
  }
  return m[1]!;
}
