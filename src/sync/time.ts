/**
 * Timestamps on the wire are ISO-8601 strings. Clients compare them as text, so the server never
 * rewrites one it was given; it only compares them as instants. An *instant key* is the canonical
 * form `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, nine fractional digits): its text order is time
 * order, so keys compare with `<`. A *cursor* is the same with six fractional digits, the
 * precision of PostgreSQL's `timestamptz`.
 */

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?(Z|z|[+-]\d{2}(?::?\d{2})?)?)?$/;

/** What clients send nearly always (`Date.prototype.toISOString()`): UTC, `T`, `Z`. */
const UTC_ISO = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z$/;

const daysInMonth = (year: number, month: number) =>
  month === 2
    ? (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28)
    : month === 4 || month === 6 || month === 9 || month === 11
    ? 30
    : 31;

/** The instant key of an ISO-8601 time, or `undefined` when `text` is not one. */
export function instantKey(text: string): string | undefined {
  // The common form is its own key up to the fraction: no Date needed (this runs per field).
  const utc = UTC_ISO.exec(text);
  if (utc) {
    const [, y, mo, d, h, mi, s, frac = ""] = utc;
    const month = +mo!, day = +d!;
    if (
      month < 1 || month > 12 || day < 1 || day > daysInMonth(+y!, month) || +h! > 23 ||
      +mi! > 59 || +s! > 59
    ) {
      return undefined;
    }
    return text.slice(0, 19) + "." + (frac + "000000000").slice(0, 9) + "Z";
  }
  const m = ISO.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h = "0", mi = "0", s = "0", frac = "", zone = "Z"] = m;
  const year = +y!, month = +mo!, day = +d!, hour = +h, minute = +mi, second = +s;
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) {
    return undefined;
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (date.getUTCMonth() !== month - 1) return undefined; // 2024-02-30 and the like
  date.setUTCHours(hour, minute, second, 0);
  let ms = date.getTime();
  if (zone !== "Z" && zone !== "z") {
    const sign = zone[0] === "-" ? -1 : 1;
    const digits = zone.slice(1).replace(":", "");
    const oh = +digits.slice(0, 2), om = digits.length > 2 ? +digits.slice(2) : 0;
    if (oh > 23 || om > 59) return undefined;
    ms -= sign * (oh * 60 + om) * 60_000;
  }
  return keyOf(ms, (frac + "000000000").slice(0, 9));
}

/** The instant key of a millisecond epoch time (e.g. `Date.now()`). */
export function instantKeyOfMillis(ms: number): string {
  const whole = Math.floor(ms);
  const millis = ((whole % 1000) + 1000) % 1000;
  return keyOf(whole - millis, String(millis).padStart(3, "0") + "000000")!;
}

function keyOf(wholeSecondsMs: number, nanos: string): string | undefined {
  const date = new Date(wholeSecondsMs);
  const year = date.getUTCFullYear();
  if (!(year >= 0 && year <= 9999)) return undefined;
  return date.toISOString().slice(0, 19) + "." + nanos + "Z";
}

/** Whether `text` is an ISO-8601 time this service accepts. */
export function isTime(text: unknown): text is string {
  return typeof text === "string" && instantKey(text) !== undefined;
}

/**
 * The canonical cursor (`YYYY-MM-DDTHH:MM:SS.uuuuuuZ`) for a time, truncated to microseconds;
 * `undefined` before the year 1, which PostgreSQL cannot read as a `timestamptz`.
 */
export function parseCursor(text: string): string | undefined {
  const key = instantKey(text);
  return key === undefined || key < "0001" ? undefined : key.slice(0, 26) + "Z";
}

/** The cursor before every possible change. */
export const EPOCH_CURSOR = "1970-01-01T00:00:00.000000Z";
