/** `deno task migrate`: applies pending migrations to DATABASE_URL (or the embedded database). */
import { ConfigError, loadConfig } from "../src/config.ts";
import { openDatabase } from "../src/store/open.ts";

try {
  const config = loadConfig((name) => Deno.env.get(name), { dev: true });
  const { db, applied } = await openDatabase(config);
  await db.close();
  console.log(
    applied.length ? `Applied migrations: ${applied.join(", ")}` : "Schema is up to date",
  );
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  console.error(e.message);
  Deno.exit(1);
}
