/**
 * Starts the real server process with exactly the permission flags of `deno task start` (read
 * from deno.json), so a permission the service lacks fails a test, not production.
 */
import { POSTGRES_URL } from "./databases.ts";

const ROOT = new URL("../../", import.meta.url);

/** A `deno run` task of deno.json, split into its flags, its entry file and the arguments after it. */
export async function runTask(
  name: string,
): Promise<{ flags: string[]; entry: string; args: string[] }> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const task: string = config.tasks[name];
  const m = /^deno run (.*?) (\S+\.ts)((?: \S+)*)$/.exec(task);
  if (!m) throw new Error(`Cannot read the ${name} task: ${JSON.stringify(task)}`);
  // --watch restarts on file changes: meaningless in a test, and it would outlive SIGTERM.
  const flags = m[1]!.split(/\s+/).filter((f) => !f.startsWith("--watch"));
  return { flags, entry: m[2]!, args: m[3]!.trim().split(/\s+/).filter(Boolean) };
}

/** The flags between `deno run` and `main.ts` in the `start` task. */
export async function startTaskFlags(): Promise<string[]> {
  return (await runTask("start")).flags;
}

/** Runs a `deno run` task of deno.json to completion with extra arguments. */
export async function runTaskOnce(name: string, args: string[], env: Record<string, string> = {}) {
  const task = await runTask(name);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...task.flags, task.entry, ...task.args, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", ...env },
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

export interface ServerProcess {
  url: string;
  port: number;
  pid: number;
  /** Everything the process printed so far. */
  output(): string;
  /** Sends a signal now, without waiting (a later stop() sends no second one). */
  kill(signal: Deno.Signal): void;
  /** Sends SIGTERM (unless kill() sent a signal) and waits for the exit; returns the exit code. */
  stop(): Promise<number>;
}

/**
 * Starts `main.ts` on a free port with the flags of the `start` task (or `dev`). Uses PostgreSQL
 * when the tests have one, otherwise the embedded database in a fresh directory under .data/ (the
 * only place the tasks may write).
 */
export async function startServer(
  env: Record<string, string>,
  options: {
    task?: "start" | "dev";
    dataDir?: string;
    /** Added to the task's flags, e.g. `--cpu-prof` for a benchmark; never permissions. */
    denoFlags?: string[];
  } = {},
): Promise<ServerProcess> {
  const dataDir = options.dataDir ?? `.data/test-${crypto.randomUUID()}`;
  const task = await runTask(options.task ?? "start");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...task.flags, ...options.denoFlags ?? [], task.entry, ...task.args],
    cwd: ROOT,
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      DATABASE_URL: POSTGRES_URL ?? "",
      DATA_DIR: dataDir,
      NO_COLOR: "1",
      // Tests and benchmarks drive one user hard on purpose; the rate-limit test sets its own.
      RATE_LIMIT_PUSH_PER_MINUTE: "0",
      RATE_LIMIT_PULL_PER_MINUTE: "0",
      RATE_LIMIT_STREAM_PER_MINUTE: "0",
      RATE_LIMIT_WS_PER_MINUTE: "0",
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
  let signalled = false;
  return {
    port: started,
    pid: child.pid,
    url: `http://127.0.0.1:${started}`,
    output: () => output,
    kill(signal) {
      signalled = true;
      child.kill(signal);
    },
    async stop() {
      try {
        if (!signalled) child.kill("SIGTERM");
      } catch { /* already gone */ }
      const code = await exited;
      await drained;
      await Deno.remove(new URL(dataDir, ROOT), { recursive: true }).catch(() => {});
      return code;
    },
  };
}
