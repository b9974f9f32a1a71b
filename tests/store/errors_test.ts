import assert from "node:assert/strict";
import { isDroppedConnectionNoise } from "../../src/store/errors.ts";

/** An error as postgres.js would raise it: its stack passes through the postgres package. */
function fromPostgres<E extends Error>(error: E, frame: string, code?: string): E {
  error.stack =
    `${error.name}: ${error.message}\n    at ${frame} (file:///x/postgres@3.4.9/src/connection.js:1:1)`;
  return code === undefined ? error : Object.assign(error, { code });
}

Deno.test("isDroppedConnectionNoise() knows postgres.js tripping over a dropped connection", () => {
  const write = new TypeError("Cannot read properties of undefined (reading 'write')");
  assert.ok(isDroppedConnectionNoise(fromPostgres(write, "nextWrite")));
  for (const code of ["CONNECTION_DESTROYED", "CONNECTION_CLOSED", "CONNECTION_ENDED"]) {
    assert.ok(isDroppedConnectionNoise(fromPostgres(new Error("gone"), "terminate", code)), code);
  }
});

Deno.test("isDroppedConnectionNoise() lets every other error end the process", () => {
  // The same codes or message from outside postgres.js, other codes, other TypeErrors, non-errors.
  const plain = Object.assign(new Error("gone"), { code: "CONNECTION_DESTROYED" });
  plain.stack = "Error: gone\n    at handler (file:///x/src/app.ts:1:1)";
  assert.equal(isDroppedConnectionNoise(plain), false);
  assert.equal(isDroppedConnectionNoise(fromPostgres(new Error("x"), "handle", "23505")), false);
  const other = new TypeError("Cannot read properties of undefined (reading 'write')");
  assert.equal(isDroppedConnectionNoise(fromPostgres(other, "somethingElse")), false);
  assert.equal(
    isDroppedConnectionNoise(fromPostgres(new TypeError("x is not a function"), "nextWrite")),
    false,
  );
  assert.equal(isDroppedConnectionNoise("CONNECTION_CLOSED"), false);
  assert.equal(isDroppedConnectionNoise(undefined), false);
});
