/**
 * Seed and run count of the property and fuzz tests: fixed by default so that CI is reproducible,
 * overridden by FUZZ_SEED and FUZZ_RUNS (`deno task fuzz` runs many more). fast-check prints the
 * seed and the shrunk counterexample of a failure; rerun with that FUZZ_SEED to reproduce it.
 */

export const DEFAULT_FUZZ_SEED = 20240101;

/** `{ seed, numRuns }` for `fc.assert`, `defaultRuns` unless FUZZ_RUNS says otherwise. */
export function fuzzParameters(defaultRuns: number): { seed: number; numRuns: number } {
  return {
    seed: intFromEnv("FUZZ_SEED") ?? DEFAULT_FUZZ_SEED,
    numRuns: intFromEnv("FUZZ_RUNS") ?? defaultRuns,
  };
}

function intFromEnv(name: string): number | undefined {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw === "") return undefined;
  const n = Number(raw);
  if (!Number.isSafeInteger(n)) throw new Error(`${name} must be an integer, got ${raw}`);
  return n;
}
