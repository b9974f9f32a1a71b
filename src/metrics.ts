/**
 * Prometheus text exposition (format 0.0.4). Metrics are read when scraped: each family is a
 * callback over state the service keeps anyway, so nothing is counted twice.
 */
export type Labels = Record<string, string>;

export interface MetricFamily {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples(): Iterable<[Labels, number]> | [Labels, number][];
}

const escapeLabel = (v: string) =>
  v.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll('"', '\\"');

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  return "{" + entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",") + "}";
}

export class Metrics {
  #families: MetricFamily[] = [];

  register(family: MetricFamily): this {
    this.#families.push(family);
    return this;
  }

  /** A family with a single unlabelled sample. */
  single(name: string, help: string, type: MetricFamily["type"], read: () => number): this {
    return this.register({ name, help, type, samples: () => [[{}, read()]] });
  }

  render(): string {
    const lines: string[] = [];
    for (const family of this.#families) {
      lines.push(`# HELP ${family.name} ${family.help}`, `# TYPE ${family.name} ${family.type}`);
      for (const [labels, value] of family.samples()) {
        lines.push(`${family.name}${formatLabels(labels)} ${value}`);
      }
    }
    return lines.join("\n") + "\n";
  }
}
