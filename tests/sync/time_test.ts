import assert from "node:assert/strict";
import fc from "fast-check";
import {
  EPOCH_CURSOR,
  instantKey,
  instantKeyOfMillis,
  isTime,
  parseCursor,
} from "../../src/sync/time.ts";
import { fuzzParameters } from "../helpers/fuzz.ts";

/** Deterministic PRNG (mulberry32) so that property tests replay identically. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `ms` written as local time at `offsetMinutes` east of UTC, with millisecond precision. */
function formatAtOffset(ms: number, offsetMinutes: number, style: "colon" | "compact"): string {
  const local = new Date(ms + offsetMinutes * 60_000).toISOString().slice(0, 23);
  if (offsetMinutes === 0 && style === "colon") return local + "Z";
  const sign = offsetMinutes < 0 ? "-" : "+";
  const abs = Math.abs(offsetMinutes);
  const hh = String(Math.floor(abs / 60)).padStart(2, "0");
  const mm = String(abs % 60).padStart(2, "0");
  return local + sign + hh + (style === "colon" ? ":" : "") + mm;
}

const INVALID = [
  ["an impossible day", "2024-02-30T10:00:00Z"],
  ["Feb 29 of a common year", "2023-02-29T10:00:00Z"],
  ["Feb 29 of a century that is not a leap year", "1900-02-29"],
  ["April 31", "2024-04-31"],
  ["day 00", "2024-01-00"],
  ["month 00", "2024-00-10"],
  ["month 13", "2024-13-01T10:00:00Z"],
  ["hour 24", "2024-01-01T24:00:00Z"],
  ["minute 60", "2024-01-01T10:60:00Z"],
  ["second 60", "2024-01-01T10:05:60Z"],
  ["offset +24:00", "2024-01-01T10:05:00+24:00"],
  ["offset -24:00", "2024-01-01T10:05:00-24:00"],
  ["offset minutes 60", "2024-01-01T10:05:00+05:60"],
  ["a three-digit offset", "2024-01-01T10:05:00+053"],
  ["a half offset", "2024-01-01T10:05:00+05:3"],
  ["garbage", "not a time"],
  ["the empty string", ""],
  ["a bare number", "1704103500000"],
  ["hours without minutes", "2024-01-01T10"],
  ["a fraction without seconds", "2024-01-01T10:05.5Z"],
  ["a fraction point without digits", "2024-01-01T10:05:00.Z"],
  ["a zone on a date only", "2024-01-01Z"],
  ["a one-digit month", "2024-1-01"],
  ["a five-digit year", "10000-01-01T00:00:00Z"],
  ["a negative year", "-0001-01-01T00:00:00Z"],
  ["leading whitespace", " 2024-01-01T10:05:00Z"],
  ["a trailing newline", "2024-01-01T10:05:00Z\n"],
  ["a trailing space", "2024-01-01T10:05:00Z "],
  ["non-ASCII digits", "\uff12\uff10\uff12\uff14-01-01"],
  ["a zone name", "2024-01-01T10:05:00 UTC"],
  ["a year below 0000 after the offset", "0000-01-01T00:30:00+01:00"],
  ["a year above 9999 after the offset", "9999-12-31T23:59:59-01:00"],
] as const;

Deno.test("instantKey() accepts the ISO-8601 forms clients send", async (t) => {
  const cases = [
    ["Z", "2024-01-01T10:05:00Z", "2024-01-01T10:05:00.000000000Z"],
    ["lowercase z", "2024-01-01T10:05:00z", "2024-01-01T10:05:00.000000000Z"],
    ["lowercase t", "2024-01-01t10:05:00Z", "2024-01-01T10:05:00.000000000Z"],
    ["a space separator", "2024-01-01 10:05:00Z", "2024-01-01T10:05:00.000000000Z"],
    ["offset +02:00", "2024-01-01T12:05:00+02:00", "2024-01-01T10:05:00.000000000Z"],
    ["offset -0530", "2024-01-01T04:35:00-0530", "2024-01-01T10:05:00.000000000Z"],
    ["offset +05", "2024-01-01T15:05:00+05", "2024-01-01T10:05:00.000000000Z"],
    ["offset +00:00", "2024-01-01T10:05:00+00:00", "2024-01-01T10:05:00.000000000Z"],
    ["offset -00:00", "2024-01-01T10:05:00-00:00", "2024-01-01T10:05:00.000000000Z"],
    ["offset +23:59", "2024-01-02T09:04:00+23:59", "2024-01-01T09:05:00.000000000Z"],
    [
      "an offset that crosses the day",
      "2024-01-01T01:00:00+02:00",
      "2023-12-31T23:00:00.000000000Z",
    ],
    [
      "an offset that crosses the year",
      "2023-12-31T23:00:00-02:00",
      "2024-01-01T01:00:00.000000000Z",
    ],
    ["no zone (UTC)", "2024-01-01T10:05:00", "2024-01-01T10:05:00.000000000Z"],
    ["no seconds", "2024-01-01T10:05Z", "2024-01-01T10:05:00.000000000Z"],
    ["no seconds with an offset", "2024-01-01T10:05+02:00", "2024-01-01T08:05:00.000000000Z"],
    ["date only", "2024-01-01", "2024-01-01T00:00:00.000000000Z"],
    ["1 fractional digit", "2024-01-01T10:05:00.1Z", "2024-01-01T10:05:00.100000000Z"],
    ["2 fractional digits", "2024-01-01T10:05:00.12Z", "2024-01-01T10:05:00.120000000Z"],
    ["3 fractional digits", "2024-01-01T10:05:00.123Z", "2024-01-01T10:05:00.123000000Z"],
    ["6 fractional digits", "2024-01-01T10:05:00.123456Z", "2024-01-01T10:05:00.123456000Z"],
    ["9 fractional digits", "2024-01-01T10:05:00.123456789Z", "2024-01-01T10:05:00.123456789Z"],
    ["12 fractional digits", "2024-01-01T10:05:00.123456789987Z", "2024-01-01T10:05:00.123456789Z"],
    ["a comma fraction", "2024-01-01T10:05:00,5Z", "2024-01-01T10:05:00.500000000Z"],
    ["a fraction and an offset", "2024-01-01T12:05:00.25+02:00", "2024-01-01T10:05:00.250000000Z"],
    ["the year 0000", "0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000000000Z"],
    ["the year 9999", "9999-12-31T23:59:59.999999999Z", "9999-12-31T23:59:59.999999999Z"],
    ["a year below 100", "0050-06-15T12:00:00Z", "0050-06-15T12:00:00.000000000Z"],
    ["before the epoch", "1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500000000Z"],
    [
      "an offset landing on year 0000",
      "0001-01-01T00:00:00+23:59",
      "0000-12-31T00:01:00.000000000Z",
    ],
  ] as const;
  for (const [name, text, key] of cases) {
    await t.step(name, () => {
      assert.equal(instantKey(text), key);
      assert.equal(isTime(text), true);
    });
  }
});

Deno.test("instantKey() returns fixed-width keys", () => {
  for (const text of ["0000-01-01", "2024-01-01T10:05:00.1+05", "9999-12-31T23:59:59Z"]) {
    const key = instantKey(text);
    assert.ok(key !== undefined, text);
    assert.match(key, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$/);
    assert.equal(key.length, 30);
  }
});

Deno.test("instantKey() truncates fractions, never rounds them", async (t) => {
  await t.step("beyond nanoseconds", () => {
    assert.equal(
      instantKey("2024-01-01T10:05:59.9999999999Z"),
      "2024-01-01T10:05:59.999999999Z",
    );
  });
  await t.step("at the end of the year", () => {
    assert.equal(
      instantKey("2024-12-31T23:59:59.99999999999999Z"),
      "2024-12-31T23:59:59.999999999Z",
    );
  });
});

Deno.test("instantKey() refuses what is not a valid time", async (t) => {
  for (const [name, text] of INVALID) {
    await t.step(name, () => {
      assert.equal(instantKey(text), undefined);
      assert.equal(isTime(text), false);
      assert.equal(parseCursor(text), undefined);
    });
  }
});

Deno.test("instantKey() knows leap years", async (t) => {
  const cases = [
    ["2024 (divisible by 4)", "2024-02-29T12:00:00Z", true],
    ["2000 (divisible by 400)", "2000-02-29", true],
    ["0000 (divisible by 400)", "0000-02-29", true],
    ["0004", "0004-02-29", true],
    ["2023", "2023-02-29", false],
    ["1900 (century)", "1900-02-29", false],
    ["2100 (century)", "2100-02-29", false],
    ["0100 (century)", "0100-02-29", false],
  ] as const;
  for (const [name, text, valid] of cases) {
    await t.step(name, () => assert.equal(isTime(text), valid));
  }
  await t.step("Feb 29 is followed by Mar 1", () => {
    assert.equal(instantKey("2024-02-29T23:30:00-01:00"), "2024-03-01T00:30:00.000000000Z");
  });
  await t.step("Feb 30 of a leap year is still refused", () => {
    assert.equal(instantKey("2024-02-30"), undefined);
  });
});

Deno.test("isTime() is false for anything but a string", () => {
  for (const x of [undefined, null, 0, 1704103500000, true, {}, [], new Date(0)]) {
    assert.equal(isTime(x), false, String(x));
  }
  assert.equal(isTime("2024-01-01T10:05:00Z"), true);
});

Deno.test("parseCursor() formats six fractional digits in UTC", async (t) => {
  const cases = [
    ["Z without fraction", "2024-01-01T10:05:00Z", "2024-01-01T10:05:00.000000Z"],
    ["date only", "2024-01-01", "2024-01-01T00:00:00.000000Z"],
    ["milliseconds", "2024-01-01T10:05:00.123Z", "2024-01-01T10:05:00.123000Z"],
    ["microseconds", "2024-01-01T10:06:15.123456Z", "2024-01-01T10:06:15.123456Z"],
    ["offset", "2024-01-01T12:06:15.123456+02:00", "2024-01-01T10:06:15.123456Z"],
    ["compact offset", "2024-01-01T04:36:15.5-0530", "2024-01-01T10:06:15.500000Z"],
    ["comma fraction", "2024-01-01T10:06:15,25Z", "2024-01-01T10:06:15.250000Z"],
  ] as const;
  for (const [name, text, cursor] of cases) {
    await t.step(name, () => assert.equal(parseCursor(text), cursor));
  }
});

Deno.test("parseCursor() truncates to microseconds, never rounds", async (t) => {
  await t.step("nanoseconds (the seed's syncedUntil)", () => {
    assert.equal(parseCursor("2024-01-01T10:06:15.123456789Z"), "2024-01-01T10:06:15.123456Z");
  });
  await t.step("999999999 stays in the same second", () => {
    assert.equal(parseCursor("2024-01-01T10:06:59.999999999Z"), "2024-01-01T10:06:59.999999Z");
  });
  await t.step("the last instant of year 9999 stays in range", () => {
    assert.equal(parseCursor("9999-12-31T23:59:59.9999999Z"), "9999-12-31T23:59:59.999999Z");
  });
  await t.step("with an offset", () => {
    assert.equal(
      parseCursor("2024-01-01T10:05:00.9999999999+0530"),
      "2024-01-01T04:35:00.999999Z",
    );
  });
});

Deno.test("parseCursor() refuses times before the year 1, which PostgreSQL cannot store", () => {
  for (
    const text of ["0000-01-01", "0000-12-31T23:59:59.999999999Z", "0001-01-01T00:30:00+01:00"]
  ) {
    assert.equal(parseCursor(text), undefined, text);
    assert.equal(isTime(text), true, `${text} is still a time a field may carry`);
  }
  assert.equal(parseCursor("0001-01-01T00:00:00Z"), "0001-01-01T00:00:00.000000Z");
});

Deno.test("parseCursor() is idempotent on its own output", () => {
  for (const text of ["2024-01-01T12:06:15.123456789+02:00", "1999-12-31", EPOCH_CURSOR]) {
    const cursor = parseCursor(text);
    assert.ok(cursor !== undefined);
    assert.equal(parseCursor(cursor), cursor);
  }
});

Deno.test("EPOCH_CURSOR is the cursor of the epoch", () => {
  assert.equal(EPOCH_CURSOR, "1970-01-01T00:00:00.000000Z");
  assert.equal(parseCursor("1970-01-01T00:00:00Z"), EPOCH_CURSOR);
  assert.equal(instantKeyOfMillis(0).slice(0, 26) + "Z", EPOCH_CURSOR);
});

Deno.test("instantKeyOfMillis() formats epoch milliseconds as an instant key", async (t) => {
  await t.step("zero", () => assert.equal(instantKeyOfMillis(0), "1970-01-01T00:00:00.000000000Z"));
  await t.step("a time with milliseconds", () => {
    const ms = Date.UTC(2024, 0, 1, 10, 5, 0, 123);
    assert.equal(instantKeyOfMillis(ms), "2024-01-01T10:05:00.123000000Z");
  });
  await t.step("before the epoch", () => {
    assert.equal(instantKeyOfMillis(-1), "1969-12-31T23:59:59.999000000Z");
    assert.equal(instantKeyOfMillis(-1000), "1969-12-31T23:59:59.000000000Z");
    assert.equal(instantKeyOfMillis(-1001), "1969-12-31T23:59:58.999000000Z");
  });
  await t.step("fractional milliseconds are truncated", () => {
    assert.equal(instantKeyOfMillis(1.9), "1970-01-01T00:00:00.001000000Z");
  });
  await t.step("agrees with instantKey() of the same instant", () => {
    const rand = random(7);
    for (let i = 0; i < 500; i++) {
      const ms = Math.floor((rand() * 2 - 0.5) * 4e12);
      assert.equal(instantKeyOfMillis(ms), instantKey(new Date(ms).toISOString()), String(ms));
    }
  });
});

Deno.test("instantKey() text order is time order across offsets", async (t) => {
  const rand = random(42);
  const offsets = [0, 60, 120, -300, 330, -330, 345, 840, -720, -59, 1439, -1439];
  const items: { text: string; ms: number }[] = [];
  // Spread over centuries, and clustered within seconds so that offsets interleave.
  for (let i = 0; i < 150; i++) {
    const ms = Math.floor(
      Date.UTC(1800, 0, 1) + rand() * (Date.UTC(2200, 0, 1) - Date.UTC(1800, 0, 1)),
    );
    const offset = offsets[Math.floor(rand() * offsets.length)]!;
    items.push({ text: formatAtOffset(ms, offset, rand() < 0.5 ? "colon" : "compact"), ms });
  }
  const base = Date.UTC(2024, 0, 1, 10, 5, 0);
  for (let i = 0; i < 150; i++) {
    const ms = base + Math.floor(rand() * 5000);
    const offset = offsets[Math.floor(rand() * offsets.length)]!;
    items.push({ text: formatAtOffset(ms, offset, rand() < 0.5 ? "colon" : "compact"), ms });
  }

  await t.step("every formatted time parses to its own instant", () => {
    for (const { text, ms } of items) {
      assert.equal(instantKey(text), instantKeyOfMillis(ms), text);
      assert.equal(new Date(text.replace(/([+-]\d{2})(\d{2})$/, "$1:$2")).getTime(), ms, text);
    }
  });

  await t.step("sorting by key equals sorting by Date", () => {
    const shuffled = [...items];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
    }
    const byKey = [...shuffled].sort((a, b) => {
      const ka = instantKey(a.text)!, kb = instantKey(b.text)!;
      return ka < kb ? -1 : ka > kb ? 1 : 0;
    }).map((x) => x.ms);
    const byDate = [...shuffled].sort((a, b) => a.ms - b.ms).map((x) => x.ms);
    assert.deepEqual(byKey, byDate);
  });

  await t.step("cursors sort as text like their instants", () => {
    const cursors = items.map((x) => parseCursor(x.text)!);
    const sortedText = [...cursors].sort();
    const sortedTime = [...items].sort((a, b) => a.ms - b.ms).map((x) => parseCursor(x.text)!);
    assert.deepEqual(sortedText, sortedTime);
  });

  await t.step("a later local time at a greater offset can be the earlier instant", () => {
    const a = instantKey("2024-01-01T12:00:00+02:00")!; // 10:00Z
    const b = instantKey("2024-01-01T11:00:00Z")!;
    assert.ok(a < b);
    assert.ok("2024-01-01T12:00:00+02:00" > "2024-01-01T11:00:00Z"); // while raw text says otherwise
  });

  await t.step("sub-millisecond digits order below milliseconds", () => {
    const ordered = [
      "2024-01-01T10:05:00.000999999Z",
      "2024-01-01T12:05:00.001+02:00",
      "2024-01-01T10:05:00.001000001Z",
      "2024-01-01T10:05:00.00101Z",
      "2024-01-01T10:05:00.1Z",
      "2024-01-01T10:05:00.9999999991Z",
      "2024-01-01T10:05:01Z",
    ];
    const keys = ordered.map((x) => instantKey(x)!);
    assert.deepEqual([...keys].sort(), keys);
    assert.equal(new Set(keys).size, keys.length);
  });
});

Deno.test("instantKey() reads the common UTC form exactly as it reads the same time with an offset", () => {
  // The `…Z` form has a fast path without Date; `+00:00` takes the general one: they must agree.
  const two = (n: number) => String(n).padStart(2, "0");
  fc.assert(
    fc.property(
      // Century years, leap years and month ends are where calendars go wrong.
      fc.oneof(
        fc.integer({ min: 0, max: 9999 }),
        fc.integer({ min: 0, max: 99 }).map((c) => c * 100),
        fc.integer({ min: 0, max: 2499 }).map((c) => c * 4),
      ),
      fc.integer({ min: 0, max: 13 }),
      fc.oneof(fc.integer({ min: 0, max: 32 }), fc.integer({ min: 28, max: 31 })),
      fc.integer({ min: 0, max: 24 }),
      fc.integer({ min: 0, max: 60 }),
      fc.integer({ min: 0, max: 60 }),
      fc.option(fc.stringMatching(/^\d{1,12}$/), { nil: undefined }),
      (y, mo, d, h, mi, s, frac) => {
        const head = `${String(y).padStart(4, "0")}-${two(mo)}-${two(d)}T${two(h)}:${two(mi)}:${
          two(s)
        }${frac === undefined ? "" : "." + frac}`;
        const date = new Date(0);
        date.setUTCFullYear(y, mo - 1, d);
        const valid = mo >= 1 && mo <= 12 && d >= 1 && date.getUTCMonth() === mo - 1 &&
          h <= 23 && mi <= 59 && s <= 59;
        const expected = valid
          ? head.slice(0, 19) + "." + ((frac ?? "") + "000000000").slice(0, 9) + "Z"
          : undefined;
        assert.equal(instantKey(head + "Z"), expected);
        assert.equal(instantKey(head + "+00:00"), expected);
      },
    ),
    fuzzParameters(2000),
  );
});
