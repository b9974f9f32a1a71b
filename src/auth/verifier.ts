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

export function createVerifier(
  keys: KeySource,
  options: { issuer?: string | undefined; audience?: string | undefined } = {},
): Verifier {
  const checks = {
    algorithms: ["EdDSA", "Ed25519"],
    ...(options.issuer ? { issuer: options.issuer } : {}),
    ...(options.audience ? { audience: options.audience } : {}),
  };
  return {
    async verify(token) {
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
        }, checks);
        if (typeof payload.sub !== "string" || payload.sub === "") {
          throw new SyncError(401, "unauthorized", "Invalid token: no sub claim");
        }
        return { userId: payload.sub };
      } catch (e) {
        if (e instanceof SyncError) throw e;
        throw new SyncError(401, "unauthorized", `Invalid token: ${describe(e)}`);
      }
    },
  };
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
