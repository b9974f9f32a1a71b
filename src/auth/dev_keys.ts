/**
 * The local key pair of `deno task dev`: created once under the data directory, used to verify
 * tokens when no `JWKS_URL` is configured and by `deno task token` to mint them. Never used by
 * `deno task start`.
 */
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";

export interface DevKeys {
  kid: string;
  privateKey: CryptoKey;
  /** The public half as a JWKS. */
  jwks: { keys: JWK[] };
}

export async function loadDevKeys(dataDir: string): Promise<DevKeys> {
  const file = `${dataDir}/dev-jwk.json`;
  let jwk: JWK;
  try {
    jwk = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    jwk = { ...await exportJWK(pair.privateKey), kid: `dev-${crypto.randomUUID()}`, alg: "EdDSA" };
    await Deno.mkdir(dataDir, { recursive: true });
    await Deno.writeTextFile(file, JSON.stringify(jwk), { mode: 0o600, createNew: true })
      .catch(async (err) => {
        // Another process created it first: use that one.
        if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
        jwk = JSON.parse(await Deno.readTextFile(file));
      });
  }
  const { d: _private, ...publicJwk } = jwk;
  return {
    kid: jwk.kid!,
    privateKey: await importJWK(jwk, "EdDSA") as CryptoKey,
    jwks: { keys: [{ ...publicJwk, use: "sig" }] },
  };
}

/** Signs a token for `userId` with the dev key. */
export function mintDevToken(keys: DevKeys, userId: string, ttl = "30d"): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: "EdDSA", kid: keys.kid, typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(ttl)
    .sign(keys.privateKey);
}
