/**
 * Prometheus text exposition (format 0.0.4). Pure: no I/O, no clock. Most families are callbacks
 * over state the service keeps anyway (read when scraped, so nothing is counted twice); what only
 * exists as events is counted here, in a `Counter` or a `Histogram`, by the app.
 */
export type Labels = Record<string, string>;

/** One line of a family: its labels, its value, and a name suffix (`_bucket`, `_sum`, `_count`). */
export type Sample = [labels: Labels, value: number, suffix?: string];

export interface MetricFamily {
  name: string;
  help: string;
  type: "gauge" | "counter" | "histogram";
  samples(): Iterable<Sample>;
}

const escapeLabel = (v: string) =>
  v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');

const escapeHelp = (v: string) => v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  return "{" + entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",") + "}";
}

/** A sample value or bucket bound as the format spells it (`+Inf`, `-Inf`, `NaN`). */
export function formatNumber(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

/** Label values in a fixed order, as one map key. */
const keyOf = (names: readonly string[], labels: Labels) =>
  JSON.stringify(names.map((n) => labels[n] ?? ""));

/** Only the declared label names, in declared order (bounded series: nothing else gets in). */
const pick = (names: readonly string[], labels: Labels): Labels =>
  Object.fromEntries(names.map((n) => [n, labels[n] ?? ""]));

/** A monotonically increasing count per label set. */
export class Counter {
  #values = new Map<string, [Labels, number]>();
  constructor(readonly labelNames: readonly string[] = []) {}

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`A counter only goes up, got ${by}`);
    const key = keyOf(this.labelNames, labels);
    const entry = this.#values.get(key);
    if (entry) entry[1] += by;
    else this.#values.set(key, [pick(this.labelNames, labels), by]);
  }

  /** The current value for a label set (0 when never counted). */
  get(labels: Labels = {}): number {
    return this.#values.get(keyOf(this.labelNames, labels))?.[1] ?? 0;
  }

  *samples(): Iterable<Sample> {
    for (const [labels, value] of this.#values.values()) yield [labels, value];
  }
}

/** Prometheus' default buckets, in seconds. */
export const DEFAULT_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

interface Series {
  labels: Labels;
  /** Observations per bucket, not cumulative; the last slot is above the greatest bound. */
  counts: number[];
  sum: number;
  count: number;
}

/**
 * Observations counted into buckets by upper bound (`le`). Rendered cumulative, with `+Inf` (every
 * observation), `_sum` and `_count`.
 */
export class Histogram {
  readonly buckets: readonly number[];
  #series = new Map<string, Series>();

  constructor(
    buckets: readonly number[] = DEFAULT_BUCKETS,
    readonly labelNames: readonly string[] = [],
  ) {
    const finite = buckets.filter((b) => b !== Infinity);
    if (finite.some((b, i) => !Number.isFinite(b) || (i > 0 && b <= finite[i - 1]!))) {
      throw new RangeError(`Histogram buckets must increase: ${finite.join(", ")}`);
    }
    if (labelNames.includes("le")) throw new RangeError("A histogram label cannot be named le");
    this.buckets = finite;
  }

  #get(labels: Labels): Series {
    const key = keyOf(this.labelNames, labels);
    let series = this.#series.get(key);
    if (!series) {
      series = {
        labels: pick(this.labelNames, labels),
        counts: new Array(this.buckets.length + 1).fill(0),
        sum: 0,
        count: 0,
      };
      this.#series.set(key, series);
    }
    return series;
  }

  /** Makes a label set's series appear (all zero) before its first observation. */
  seed(labels: Labels = {}): this {
    this.#get(labels);
    return this;
  }

  observe(labels: Labels, value: number): void {
    const series = this.#get(labels);
    const i = this.buckets.findIndex((bound) => value <= bound);
    series.counts[i === -1 ? this.buckets.length : i]!++;
    series.sum += value;
    series.count++;
  }

  /** Observations so far for a label set. */
  count(labels: Labels = {}): number {
    return this.#series.get(keyOf(this.labelNames, labels))?.count ?? 0;
  }

  *samples(): Iterable<Sample> {
    for (const { labels, counts, sum, count } of this.#series.values()) {
      let cumulative = 0;
      for (const [i, bound] of this.buckets.entries()) {
        cumulative += counts[i]!;
        yield [{ ...labels, le: formatNumber(bound) }, cumulative, "_bucket"];
      }
      yield [{ ...labels, le: "+Inf" }, count, "_bucket"];
      yield [labels, sum, "_sum"];
      yield [labels, count, "_count"];
    }
  }
}

export class Metrics {
  #families: MetricFamily[] = [];

  register(family: MetricFamily): this {
    if (this.#families.some((f) => f.name === family.name)) {
      throw new Error(`Metric ${family.name} is registered twice`);
    }
    this.#families.push(family);
    return this;
  }

  /** A family with a single unlabelled sample. */
  single(name: string, help: string, type: "gauge" | "counter", read: () => number): this {
    return this.register({ name, help, type, samples: () => [[{}, read()]] });
  }

  /** Registers and returns a counter. */
  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    const counter = new Counter(labelNames);
    this.register({ name, help, type: "counter", samples: () => counter.samples() });
    return counter;
  }

  /** Registers and returns a histogram. */
  histogram(
    name: string,
    help: string,
    options: { buckets?: readonly number[]; labelNames?: readonly string[] } = {},
  ): Histogram {
    const histogram = new Histogram(options.buckets, options.labelNames);
    this.register({ name, help, type: "histogram", samples: () => histogram.samples() });
    return histogram;
  }

  render(): string {
    const lines: string[] = [];
    for (const family of this.#families) {
      lines.push(
        `# HELP ${family.name} ${escapeHelp(family.help)}`,
        `# TYPE ${family.name} ${family.type}`,
      );
      for (const [labels, value, suffix = ""] of family.samples()) {
        lines.push(`${family.name}${suffix}${formatLabels(labels)} ${formatNumber(value)}`);
      }
    }
    return lines.join("\n") + "\n";
  }
}
