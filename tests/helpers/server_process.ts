/**
 * Starts the real server process with exactly the permission flags of `deno task start` (read
 * from deno.json), so a permission the service lacks fails a test, not production.
 */
import { POSTGRES_URL } from "./databases.ts";

const ROOT = new URL("../../", import.meta.url);

/** The flags between `deno run` and `main.ts` in the `start` task. */
export async function startTaskFlags(): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: string = config.tasks.start;
  const m = /^deno run (.*) main\.ts$/.exec(task);
  if (!m) throw new Error(`Cannot read the start task: ${JSON.stringify(task)}`);
  return m[1]!.split(/\s+/);
}

export interface ServerProcess {
  url: string;
  port: number;
  /** Everything the process printed so far. */
  output(): string;
  /** Sends SIGTERM and waits for the exit; returns the exit code. */
  stop(): Promise<number>;
}

/**
 * Starts `main.ts` on a free port. Uses PostgreSQL when the tests have one, otherwise the embedded
 * database in a fresh directory under .data/ (the only place the start task may write).
 */
export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const dataDir = `.data/test-${crypto.randomUUID()}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...await startTaskFlags(), "main.ts"],
    cwd: ROOT,
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: POSTGRES_URL ?? "",
      DATA_DIR: dataDir,
      NO_COLOR: "1",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let output = "";
  const decoder = new TextDecoder();
  let portFound: (port: number) => void;
  const port = new Promise<number>((resolve) => portFound = resolve);
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) {
      output += decoder.decode(chunk, { stream: true });
      const m = /"msg":"listening".*?"port":(\d+)/.exec(output);
      if (m) portFound(Number(m[1]));
    }
  };
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const exited = child.status.then((s) => s.code);

  const started = await Promise.race([
    port,
    exited.then((code) => new Error(`Server exited with ${code} before listening:\n${output}`)),
    new Promise<Error>((resolve) =>
      setTimeout(() => resolve(new Error(`Server did not start:\n${output}`)), 30_000)
    ),
  ]);
  if (started instanceof Error) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await drained;
    await exited;
    throw started;
  }
  return {
    port: started,
    url: `http://127.0.0.1:${started}`,
    output: () => output,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const code = await exited;
      await drained;
      await Deno.remove(new URL(dataDir, ROOT), { recursive: true }).catch(() => {});
      return code;
    },
  };
}
