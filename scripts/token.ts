/**
 * `deno task token <userId> [ttl]`: prints a token for the dev key pair of `deno task dev`.
 * The ttl is a jose time span ("30d", "2h"); default 30 days.
 */
import { loadDevKeys, mintDevToken } from "../src/auth/dev_keys.ts";

const [userId, ttl = "30d"] = Deno.args;
if (!userId) {
  console.error("Usage: deno task token <userId> [ttl, e.g. 30d]");
  Deno.exit(2);
}
const keys = await loadDevKeys(Deno.env.get("DATA_DIR") || ".data");
console.log(await mintDevToken(keys, userId, ttl));
