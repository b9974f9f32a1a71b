/** The Prometheus text of `/metrics`, read the one way every test reads it. */
import assert from "node:assert/strict";

/** Series (`name{labels}`) → value, after checking every line's shape. */
export function parseMetrics(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("# HELP ") || line.startsWith("# TYPE ")) continue;
    const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${JSON.stringify(line)}`);
    series.set(m[1]!, Number(m[2]));
  }
  return series;
}

/** `GET /metrics` of a running server, parsed. */
export async function scrape(url: string): Promise<Map<string, number>> {
  const response = await fetch(`${url}/metrics`);
  assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4");
  return parseMetrics(await response.text());
}
