/** The exposition format: families, escaping, counters, cumulative histogram buckets. */
import assert from "node:assert/strict";
import { Counter, formatNumber, Histogram, Metrics } from "../src/metrics.ts";

Deno.test("Metrics.render() writes HELP, TYPE and one line per sample, ending in a newline", () => {
  const text = new Metrics()
    .single("up", "Whether it runs", "gauge", () => 1)
    .register({
      name: "jobs_total",
      help: "Jobs by state",
      type: "counter",
      samples: () => [[{ state: "done" }, 3], [{ state: "failed" }, 0]],
    })
    .render();
  assert.equal(
    text,
    [
      "# HELP up Whether it runs",
      "# TYPE up gauge",
      "up 1",
      "# HELP jobs_total Jobs by state",
      "# TYPE jobs_total counter",
      'jobs_total{state="done"} 3',
      'jobs_total{state="failed"} 0',
      "",
    ].join("\n"),
  );
});

Deno.test("Metrics.render() escapes backslash, quote and newline in label values", () => {
  const text = new Metrics().register({
    name: "odd",
    help: "Odd labels",
    type: "gauge",
    samples: () => [[{ v: 'a\\b"c\nd' }, 1], [{ v: "plain ü ✓" }, 2]],
  }).render();
  const lines = text.split("\n");
  assert.equal(lines[2], 'odd{v="a\\\\b\\"c\\nd"} 1');
  assert.equal(lines[3], 'odd{v="plain ü ✓"} 2');
});

Deno.test("Metrics.render() escapes backslash and newline in HELP, and spells infinities", () => {
  const text = new Metrics()
    .single("x", "first\\line\nsecond", "gauge", () => Infinity)
    .single("y", "y", "gauge", () => -Infinity)
    .single("z", "z", "gauge", () => NaN)
    .render();
  assert.match(text, /^# HELP x first\\\\line\\nsecond$/m);
  assert.match(text, /^x \+Inf$/m);
  assert.match(text, /^y -Inf$/m);
  assert.match(text, /^z NaN$/m);
  assert.equal(formatNumber(0.25), "0.25");
});

Deno.test("Metrics.register() refuses a name twice", () => {
  const metrics = new Metrics().single("a", "a", "gauge", () => 0);
  assert.throws(() => metrics.counter("a", "again"), /registered twice/);
});

Deno.test("Counter.inc() keeps one series per label set, in declared label order", () => {
  const metrics = new Metrics();
  const counter = metrics.counter("req_total", "Requests", ["route", "status"]);
  counter.inc({ status: "200", route: "/a" });
  counter.inc({ route: "/a", status: "200" }, 2);
  counter.inc({ route: "/b", status: "404", extra: "ignored" });
  counter.inc({ route: "/b", status: "404" }, 0);
  assert.equal(counter.get({ route: "/a", status: "200" }), 3);
  assert.equal(counter.get({ route: "/b", status: "404" }), 1);
  assert.equal(counter.get({ route: "/c", status: "200" }), 0);
  assert.deepEqual(metrics.render().split("\n").slice(2), [
    'req_total{route="/a",status="200"} 3',
    'req_total{route="/b",status="404"} 1',
    "",
  ]);
});

Deno.test("Counter.inc() refuses to go down or by NaN", () => {
  const counter = new Counter();
  assert.throws(() => counter.inc({}, -1), RangeError);
  assert.throws(() => counter.inc({}, NaN), RangeError);
  assert.equal(counter.get(), 0);
});

Deno.test("Histogram renders cumulative buckets, +Inf, _sum and _count", () => {
  const metrics = new Metrics();
  const h = metrics.histogram("latency_seconds", "Latency", {
    buckets: [0.1, 0.5, 1],
    labelNames: ["op"],
  });
  // One observation exactly on a bound (le is "less than or equal"), one above the last.
  for (const v of [0.05, 0.1, 0.3, 0.7, 1, 2.5]) h.observe({ op: "push" }, v);
  h.observe({ op: "pull" }, 0.2);
  assert.deepEqual(metrics.render().split("\n"), [
    "# HELP latency_seconds Latency",
    "# TYPE latency_seconds histogram",
    'latency_seconds_bucket{op="push",le="0.1"} 2',
    'latency_seconds_bucket{op="push",le="0.5"} 3',
    'latency_seconds_bucket{op="push",le="1"} 5',
    'latency_seconds_bucket{op="push",le="+Inf"} 6',
    'latency_seconds_sum{op="push"} 4.65',
    'latency_seconds_count{op="push"} 6',
    'latency_seconds_bucket{op="pull",le="0.1"} 0',
    'latency_seconds_bucket{op="pull",le="0.5"} 1',
    'latency_seconds_bucket{op="pull",le="1"} 1',
    'latency_seconds_bucket{op="pull",le="+Inf"} 1',
    'latency_seconds_sum{op="pull"} 0.2',
    'latency_seconds_count{op="pull"} 1',
    "",
  ]);
  assert.equal(h.count({ op: "push" }), 6);
});

Deno.test("Histogram buckets never decrease and +Inf equals _count, whatever is observed", () => {
  const h = new Histogram();
  let seed = 7;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const values = Array.from({ length: 500 }, () => random() * 20);
  for (const v of values) h.observe({}, v);
  const samples = [...h.samples()];
  const buckets = samples.filter(([, , suffix]) => suffix === "_bucket").map(([, v]) => v);
  assert.equal(buckets.length, h.buckets.length + 1);
  for (const [i, bound] of h.buckets.entries()) {
    assert.equal(buckets[i], values.filter((v) => v <= bound).length, `le=${bound}`);
  }
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]! >= buckets[i - 1]!);
  assert.equal(buckets.at(-1), 500);
  assert.equal(samples.find(([, , suffix]) => suffix === "_count")?.[1], 500);
});

Deno.test("Histogram.seed() shows a label set at zero before its first observation", () => {
  const metrics = new Metrics();
  metrics.histogram("h", "h", { buckets: [1], labelNames: ["op"] }).seed({ op: "export" });
  assert.deepEqual(metrics.render().split("\n").slice(2, -1), [
    'h_bucket{op="export",le="1"} 0',
    'h_bucket{op="export",le="+Inf"} 0',
    'h_sum{op="export"} 0',
    'h_count{op="export"} 0',
  ]);
});

Deno.test("Histogram refuses unordered buckets and a label named le; drops an explicit +Inf", () => {
  assert.throws(() => new Histogram([1, 0.5]), RangeError);
  assert.throws(() => new Histogram([1, 1]), RangeError);
  assert.throws(() => new Histogram([NaN]), RangeError);
  assert.throws(() => new Histogram([1], ["le"]), RangeError);
  assert.deepEqual(new Histogram([1, Infinity]).buckets, [1]);
});
