/** Shared by the benchmarks: percentiles, process memory, result files. */

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function summarize(samples: number[]) {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? NaN,
  };
}

/** Resident set size of a process, in bytes (Linux). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]);
  return kb * 1024;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Writes `bench/results/<name>.json` and returns its path. */
export async function saveResults(name: string, results: unknown): Promise<string> {
  const dir = new URL("./results/", import.meta.url);
  await Deno.mkdir(dir, { recursive: true });
  const file = new URL(`${name}.json`, dir);
  await Deno.writeTextFile(file, JSON.stringify(results, null, 2) + "\n");
  return file.pathname;
}

export async function machine() {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(
    /^model name\s*:\s*(.*)$/m,
  )?.[1];
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    date: new Date().toISOString(),
  };
}

const WORDS =
  "buy milk eggs bread call mom fix bike book flight pay rent read plan trip water plants"
    .split(" ");
const words = (n: number) =>
  Array.from({ length: n }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join(" ");

/**
 * The `i`th change of a todo app's day: mostly inserts (a tenth of them lists, the rest tasks),
 * some field updates, a few soft deletes, one second apart from `base`. Record ids start with
 * `prefix`, so devices that use different prefixes never touch each other's records.
 */
export function todoChange(i: number, { prefix = "t", base = Date.UTC(2024, 0, 1) } = {}) {
  const id = `${prefix}${i}`, at = new Date(base + i * 1000).toISOString();
  if (i % 20 === 19) {
    return { table: "tasks", id: `${prefix}${i - 10}`, op: "delete", deletedAt: at };
  }
  if (i % 4 === 3) {
    return {
      table: "tasks",
      id: `${prefix}${i - 2}`,
      op: "update",
      fields: { title: { value: words(4), updatedAt: at }, done: { value: true, updatedAt: at } },
    };
  }
  return {
    table: i % 10 === 0 ? "lists" : "tasks",
    id,
    op: "insert",
    data: {
      id,
      title: words(5),
      notes: `${words(20)} ${crypto.randomUUID()}`,
      done: false,
      priority: i % 3,
      createdAt: at,
      updatedAt: at,
    },
  };
}

/** CPU time (user + system) a process has used so far, in milliseconds (Linux). */
export async function cpuMillis(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  return ticks * 10; // USER_HZ is 100 on Linux
}

/** The machine's busy and total CPU time so far, in milliseconds, over all cores (Linux). */
export async function machineCpuMillis(): Promise<{ busy: number; total: number }> {
  const line = (await Deno.readTextFile("/proc/stat")).split("\n")[0]!;
  // user nice system idle iowait irq softirq steal (guest time is already in user and nice)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/)
    .slice(1, 9).map(Number) as number[];
  const busy = user! + nice! + system! + irq! + softirq!;
  return { busy: busy * 10, total: (busy + idle! + iowait! + steal!) * 10 };
}
