/**
 * A tiny JWKS endpoint with its own Ed25519 keys, and a signer for the tokens tests need: valid,
 * expired, without sub or kid, signed by a key the server does not publish, or `alg: none`.
 */
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";

export interface TokenOptions {
  sub?: string | null;
  kid?: string | null;
  expiresIn?: string | number;
  /** Sign with a key whose public half is not in the JWKS (but claim the published kid). */
  foreignKey?: boolean;
  claims?: JWTPayload;
}

export interface JwksServer {
  url: string;
  /** The id of the current signing key. */
  readonly kid: string;
  /** Switches to a new key pair under a new kid; the old key is no longer published. */
  rotate(): Promise<void>;
  /** While down, the endpoint answers 503. */
  setDown(down: boolean): void;
  /** How many times the key set was fetched. */
  fetches(): number;
  token(userId: string, options?: TokenOptions): Promise<string>;
  /** An unsigned token (`alg: none`) for `userId`. */
  unsignedToken(userId: string): string;
  close(): Promise<void>;
}

export async function startJwksServer(): Promise<JwksServer> {
  let kid = "", pair!: CryptoKeyPair, jwks: { keys: unknown[] } = { keys: [] };
  const rotate = async () => {
    kid = `test-${crypto.randomUUID()}`;
    pair = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    jwks = { keys: [{ ...await exportJWK(pair.publicKey), kid, alg: "EdDSA", use: "sig" }] };
  };
  await rotate();
  const foreign = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  let fetches = 0, down = false;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, () => {
    fetches++;
    return down ? new Response("down", { status: 503 }) : Response.json(jwks);
  });
  const b64 = (x: unknown) =>
    btoa(JSON.stringify(x)).replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_");
  return {
    url: `http://127.0.0.1:${server.addr.port}/jwks`,
    get kid() {
      return kid;
    },
    rotate,
    setDown: (d) => down = d,
    fetches: () => fetches,
    token(userId, options = {}) {
      const header: { alg: string; kid?: string } = { alg: "EdDSA" };
      if (options.kid !== null) header.kid = options.kid ?? kid;
      const jwt = new SignJWT({ ...options.claims }).setProtectedHeader(header).setIssuedAt()
        .setExpirationTime(options.expiresIn ?? "1h");
      if (options.sub !== null) jwt.setSubject(options.sub ?? userId);
      return jwt.sign(options.foreignKey ? foreign.privateKey : pair.privateKey);
    },
    unsignedToken: (userId) =>
      `${b64({ alg: "none", kid })}.${
        b64({ sub: userId, exp: Math.floor(Date.now() / 1000) + 3600 })
      }.`,
    close: () => server.shutdown(),
  };
}
