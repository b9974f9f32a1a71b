/**
 * A mixed-load generator for benchmarks: many simulated devices pushing, pulling, holding
 * WebSockets and SSE streams against one server, **open loop**: every push, pull and reconnect has
 * a scheduled time (a fixed rate), is sent at that time whether or not earlier ones have answered,
 * and its latency is measured from the scheduled time. A server that stalls therefore shows the
 * stall in the latency of every request that should have been sent meanwhile, instead of hiding it
 * by sending fewer (coordinated omission). `serviceMs` is the latency from the actual send, for
 * comparison; `client.schedulerLagMs` tells whether this process itself kept up.
 *
 * Devices behave like the Dexie clients of `../shared/docs/protocol.md`: each has a client id, a
 * cursor per table, pushes batches of realistic changes (inserts with strings, numbers, arrays and
 * nested objects; field updates with per-field `updatedAt`; soft deletes) with `since` = its last
 * `syncedUntil`, moves every table cursor to a push's `syncedUntil`, and pulls one table at a time
 * from its own cursor. Sockets authenticate with their device's client id and count the
 * `sync-available` hints they receive; streams resume from their last `syncedUntil` when reopened.
 *
 * Any non-2xx answer, network error, timeout, unparseable body, WebSocket `error` message or close
 * the generator did not ask for, and SSE `error` event or end of stream is an error, counted by
 * kind and status.
 *
 * `runRawLoad` drives the same schedule with the same batches straight into PostgreSQL through
 * postgres.js, as the raw baseline of push and pull latency (see its comment for what it skips).
 *
 *   const result = await runLoad({ url, token: (u) => jwks.token(u), users: 200, ... });
 *   result.kinds.push.latencyMs  // { n, p50, p99, max }
 */
import type postgres from "postgres";
import { LOG_COLUMNS } from "../src/store/sync_store.ts";
import { EPOCH_CURSOR } from "../src/sync/time.ts";
import { sleep, summarize } from "./lib.ts";

/** What the generator does: HTTP push and pull, WebSocket and SSE connections (opens). */
export type Kind = "push" | "pull" | "ws" | "sse";
export const KINDS: readonly Kind[] = ["push", "pull", "ws", "sse"];

/** The shape of the simulated population and the schedule; shared by `runLoad` and `runRawLoad`. */
export interface WorkloadOptions {
  users: number;
  devicesPerUser: number;
  pushesPerSecond: number;
  pullsPerSecond: number;
  /** Length of the scheduled load, after the connections are open. */
  seconds: number;
  /** Changes per push. */
  batchSize: number;
  /** Default `todo`. */
  appId?: string;
  /** User ids are `${userPrefix}-${i}`; default a fresh random prefix, so runs never share users. */
  userPrefix?: string;
  /** A scheduled request that finds this many in flight is not sent: an `overload` error. */
  maxInFlight?: number;
}

export interface LoadOptions extends WorkloadOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Mints a JWT for a user id; called once per user before the load starts. */
  token: (userId: string) => Promise<string>;
  /** Authenticated `/ws` sockets held open for the whole run (spread over the devices). */
  sockets: number;
  /** SSE streams (all tables) held open for the whole run (spread over the devices). */
  streams: number;
  /**
   * Scheduled reconnects per second: alternately a socket and a stream is closed by its device
   * and opened again (a stream resumes from its cursor). Default 0.
   */
  reconnectsPerSecond?: number;
  /** Per request, and per connection open. Default 30 s. */
  timeoutMs?: number;
  /** Connections opened at once while setting up. Default 100. */
  connectParallel?: number;
}

export interface LatencySummary {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * One completed operation: scheduled `t` seconds after the window started, `ms` from then to the
 * answer, `serviceMs` from the actual send to the answer.
 */
export interface Sample {
  t: number;
  ms: number;
  serviceMs: number;
}

/**
 * One kind of scheduled operation in the window: a push, a pull, or a reconnect of a socket or a
 * stream (close, open, then `auth-ok` or the stream's headers).
 */
export interface KindResult {
  attempted: number;
  ok: number;
  /** Failed operations; for ws/sse also failed initial opens and unexpected closes or errors. */
  errors: number;
  /** Successful operations per second of the window. */
  perSecond: number;
  /** From the scheduled time to the complete answer. */
  latencyMs: LatencySummary;
  /** From the actual send. */
  serviceMs: LatencySummary;
  /** Latency samples of successful operations. */
  samples: Sample[];
}

export interface LoadResult {
  /** Length of the scheduled window, in seconds. */
  seconds: number;
  /** `performance.now()` at the start and end of the scheduled window. */
  startedAt: number;
  endedAt: number;
  /** Before the window: minting tokens and opening the sockets and streams (in batches). */
  setup: {
    ms: number;
    /** Opened, and the time from starting to open one to `auth-ok` / the stream's headers. */
    sockets: { opened: number; latencyMs: LatencySummary };
    streams: { opened: number; latencyMs: LatencySummary };
  };
  kinds: Record<Kind, KindResult>;
  errors: {
    total: number;
    /** kind → status (HTTP code, `network`, `timeout`, `close-1006`, `error-event`, …) → count. */
    byKind: Record<Kind, Record<string, number>>;
    /** The first few, with detail. */
    examples: string[];
  };
  hints: {
    /** `sync-available` messages received by the sockets. */
    wsSyncAvailable: number;
    /** SSE `changes` events, the changes they carried, and heartbeats. */
    sseEvents: number;
    sseChanges: number;
    sseHeartbeats: number;
  };
  changes: { pushed: number; receivedByPush: number; receivedByPull: number };
  client: {
    /** Most operations in flight at once during the scheduled window. */
    maxInFlight: number;
    /** How late the generator sent scheduled operations (its own saturation). */
    schedulerLagMs: LatencySummary;
    /** Sockets and streams open when the window ended (should be all of them). */
    openAtEnd: { sockets: number; streams: number };
  };
}

// --- the workload: users, devices, realistic changes ------------------------------------------

const TABLES = ["tasks", "notes", "lists"] as const;
type Table = (typeof TABLES)[number];
const WORDS = ("buy milk eggs bread call mom fix bike book flight pay rent read plan trip water " +
  "plants garden review draft send invoice email team sync notes meeting lunch gym run clean")
  .split(" ");
const COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "grey"];
const TAGS = ["home", "work", "errand", "urgent", "later", "family", "health"];
/** Record ids a user remembers per table (what updates and deletes pick from). */
const POOL = 200;

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;
const int = (lo: number, hi: number) => lo + Math.floor(Math.random() * (hi - lo + 1));
const words = (lo: number, hi: number) =>
  Array.from({ length: int(lo, hi) }, () => pick(WORDS)).join(" ");
const tags = () => [...new Set(Array.from({ length: int(0, 3) }, () => pick(TAGS)))];

/** A field's value, as an app would write it. */
function fieldValue(table: Table, field: string): unknown {
  switch (`${table}.${field}`) {
    case "tasks.title":
    case "notes.title":
      return words(2, 6);
    case "tasks.notes":
      return words(5, 30);
    case "notes.body":
      return words(30, 120);
    case "tasks.done":
    case "notes.pinned":
    case "lists.archived":
      return Math.random() < 0.5;
    case "tasks.priority":
      return int(0, 3);
    case "tasks.dueDate":
      return Math.random() < 0.3 ? null : new Date(Date.now() + int(0, 30) * 86_400_000)
        .toISOString().slice(0, 10);
    case "tasks.tags":
      return tags();
    case "tasks.meta":
      return {
        color: pick(COLORS),
        position: Math.random() * 1000,
        list: { id: `lists-${int(0, 9)}`, name: words(1, 2) },
        reminders: Math.random() < 0.2 ? [{ at: new Date().toISOString(), kind: "push" }] : [],
      };
    case "notes.meta":
      return { folder: words(1, 1), wordCount: int(10, 500), links: tags() };
    case "lists.name":
      return words(1, 3);
    case "lists.color":
      return pick(COLORS);
    case "lists.order":
      return Math.random() * 100;
    default:
      return words(1, 3);
  }
}

const FIELDS: Record<Table, string[]> = {
  tasks: ["title", "notes", "done", "priority", "dueDate", "tags", "meta"],
  notes: ["title", "body", "pinned", "meta"],
  lists: ["name", "color", "order", "archived"],
};

/** A change as a client sends it. */
export interface WorkloadChange {
  eventId: string;
  table: string;
  id: string;
  op: "insert" | "update" | "delete";
  data?: Record<string, unknown>;
  fields?: Record<string, { value: unknown; updatedAt: string }>;
  deletedAt?: string;
}

interface User {
  id: string;
  token: string;
  /** Known record ids per table, newest last (bounded). */
  records: Record<Table, string[]>;
}

interface Device {
  user: User;
  clientId: string;
  /** The cursor a push sends as `since` (the last push `syncedUntil`). */
  since: string;
  cursors: Record<Table, string>;
  nextTable: number;
}

const later = (a: string, b: string) => (b > a ? b : a);

/** Users, their devices, and the changes they make. */
class Workload {
  readonly users: User[];
  /** Device-major: consecutive devices belong to different users. */
  readonly devices: Device[];
  readonly appId: string;

  constructor(options: WorkloadOptions) {
    this.appId = options.appId ?? "todo";
    const prefix = options.userPrefix ?? `load-${crypto.randomUUID().slice(0, 8)}`;
    this.users = Array.from({ length: options.users }, (_, i) => ({
      id: `${prefix}-${i}`,
      token: "",
      records: { tasks: [], notes: [], lists: [] },
    }));
    this.devices = [];
    for (let d = 0; d < options.devicesPerUser; d++) {
      for (const user of this.users) {
        this.devices.push({
          user,
          clientId: `${user.id}-device-${d}`,
          since: EPOCH_CURSOR,
          cursors: { tasks: EPOCH_CURSOR, notes: EPOCH_CURSOR, lists: EPOCH_CURSOR },
          nextTable: d,
        });
      }
    }
  }

  /** The device of the `k`th operation of a kind (spread over users first). */
  device(k: number, offset = 0): Device {
    return this.devices[(k + offset) % this.devices.length]!;
  }

  /** Half inserts, four in ten field updates of known records, one in ten soft deletes. */
  change(user: User): WorkloadChange {
    const r = Math.random();
    const table: Table = r < 0.6 ? "tasks" : r < 0.85 ? "notes" : "lists";
    const known = user.records[table];
    const now = Date.now(), at = new Date(now).toISOString();
    const o = Math.random();
    const op = known.length < 5 || o < 0.5 ? "insert" : o < 0.9 ? "update" : "delete";
    const eventId = crypto.randomUUID();
    if (op === "insert") {
      const id = `${table}-${crypto.randomUUID()}`;
      known.push(id);
      if (known.length > POOL) known.shift();
      const data: Record<string, unknown> = { id };
      for (const f of FIELDS[table]) data[f] = fieldValue(table, f);
      return { eventId, table, id, op, data: { ...data, createdAt: at, updatedAt: at } };
    }
    const index = Math.floor(Math.random() * known.length);
    const id = known[index]!;
    if (op === "delete") {
      known.splice(index, 1);
      return { eventId, table, id, op, deletedAt: at };
    }
    const fields: Record<string, { value: unknown; updatedAt: string }> = {};
    for (let n = int(1, 3); n > 0; n--) {
      const f = pick(FIELDS[table]);
      // Edits made a little while ago and synced now: field times differ, and devices race.
      fields[f] = {
        value: fieldValue(table, f),
        updatedAt: new Date(now - int(0, 2000)).toISOString(),
      };
    }
    return { eventId, table, id, op, fields };
  }

  batch(user: User, size: number): WorkloadChange[] {
    return Array.from({ length: size }, () => this.change(user));
  }

  /** The table a device pulls next (round robin over the tables). */
  nextTable(device: Device): Table {
    return TABLES[device.nextTable++ % TABLES.length]!;
  }
}

// --- measurement -------------------------------------------------------------------------------

/** An operation that failed with a status worth counting (HTTP code, `error-event`, …). */
class Failure extends Error {
  constructor(readonly status: string, message: string) {
    super(message);
  }
}

function statusOf(error: unknown): string {
  if (error instanceof Failure) return error.status;
  if (error instanceof DOMException && error.name === "TimeoutError") return "timeout";
  if (error instanceof TypeError) return "network";
  const code = (error as { code?: unknown })?.code;
  return typeof code === "string" ? code : "exception";
}

const perKind = <T>(make: () => T) =>
  Object.fromEntries(KINDS.map((k) => [k, make()])) as Record<Kind, T>;

class Recorder {
  readonly attempted = perKind(() => 0);
  readonly samples = perKind<Sample[]>(() => []);
  readonly errorsBy = perKind<Record<string, number>>(() => ({}));
  readonly examples: string[] = [];
  readonly lag: number[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** `performance.now()` of the scheduled window's start (samples' `t` is relative to it). */
  origin = performance.now();
  #pending = new Set<Promise<void>>();

  constructor(private readonly limit: number) {}

  error(kind: Kind, error: unknown): void {
    const status = statusOf(error);
    this.errorsBy[kind][status] = (this.errorsBy[kind][status] ?? 0) + 1;
    if (this.examples.length < 20) {
      this.examples.push(`${kind} ${status}: ${error instanceof Error ? error.message : error}`);
    }
  }

  /** Runs one operation scheduled at `scheduledAt` (a `performance.now()` time) and records it. */
  async run(kind: Kind, scheduledAt: number, op: () => Promise<void>): Promise<void> {
    this.attempted[kind]++;
    if (this.inFlight >= this.limit) {
      return this.error(kind, new Failure("overload", `${this.inFlight} operations in flight`));
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const sent = performance.now();
    this.lag.push(sent - scheduledAt);
    try {
      await op();
      const done = performance.now();
      this.samples[kind].push({
        t: (scheduledAt - this.origin) / 1000,
        ms: done - scheduledAt,
        serviceMs: done - sent,
      });
    } catch (error) {
      this.error(kind, error);
    } finally {
      this.inFlight--;
    }
  }

  /** `run` without waiting; `drain` waits for it. */
  start(kind: Kind, scheduledAt: number, op: () => Promise<void>): Promise<void> {
    const p = this.run(kind, scheduledAt, op);
    this.#pending.add(p);
    p.finally(() => this.#pending.delete(p));
    return p;
  }

  async drain(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending]);
  }

  /** Forgets the samples of `kind` so far (the setup's opens); returns their summary. */
  reset(kind: Kind): { opened: number; latencyMs: LatencySummary } {
    const samples = this.samples[kind];
    const opened = { opened: samples.length, latencyMs: summarize(samples.map((s) => s.ms)) };
    samples.length = this.attempted[kind] = 0;
    return opened;
  }

  result(
    run: Pick<LoadResult, "seconds" | "startedAt" | "endedAt" | "setup" | "hints" | "changes">,
    openAtEnd: LoadResult["client"]["openAtEnd"],
  ): LoadResult {
    const kinds = perKind(() => ({})) as Record<Kind, KindResult>;
    for (const kind of KINDS) {
      const errors = Object.values(this.errorsBy[kind]).reduce((a, b) => a + b, 0);
      kinds[kind] = kindResult(this.attempted[kind], errors, this.samples[kind], run.seconds);
    }
    return {
      ...run,
      kinds,
      errors: {
        total: KINDS.reduce((n, k) => n + kinds[k].errors, 0),
        byKind: this.errorsBy,
        examples: this.examples,
      },
      client: {
        maxInFlight: this.maxInFlight,
        schedulerLagMs: summarize(this.lag),
        openAtEnd,
      },
    };
  }
}

function kindResult(
  attempted: number,
  errors: number,
  samples: Sample[],
  seconds: number,
): KindResult {
  return {
    attempted,
    ok: samples.length,
    errors,
    perSecond: samples.length / seconds,
    latencyMs: summarize(samples.map((s) => s.ms)),
    serviceMs: summarize(samples.map((s) => s.serviceMs)),
    samples,
  };
}

/**
 * Two runs of the same load as one, e.g. a baseline measured before and after another run: counts
 * added, samples pooled (`b`'s shifted by `a.seconds`), summaries recomputed. Of the scheduler lag,
 * only the worse summary of the two is kept.
 */
export function mergeResults(a: LoadResult, b: LoadResult): LoadResult {
  const seconds = a.seconds + b.seconds;
  const kinds = perKind(() => ({})) as Record<Kind, KindResult>;
  const byKind = perKind<Record<string, number>>(() => ({}));
  for (const kind of KINDS) {
    const [x, y] = [a.kinds[kind], b.kinds[kind]];
    const samples = [...x.samples, ...y.samples.map((s) => ({ ...s, t: s.t + a.seconds }))];
    kinds[kind] = kindResult(x.attempted + y.attempted, x.errors + y.errors, samples, seconds);
    for (const errors of [a.errors.byKind[kind], b.errors.byKind[kind]]) {
      for (const [status, n] of Object.entries(errors)) {
        byKind[kind][status] = (byKind[kind][status] ?? 0) + n;
      }
    }
  }
  const add = <T extends Record<string, number>>(x: T, y: T) =>
    Object.fromEntries(Object.keys(x).map((k) => [k, x[k]! + y[k]!])) as T;
  const worse = (x: LatencySummary, y: LatencySummary) => (y.p99 > x.p99 ? y : x);
  return {
    seconds,
    startedAt: a.startedAt,
    endedAt: b.endedAt,
    setup: {
      ms: a.setup.ms + b.setup.ms,
      sockets: a.setup.sockets.opened >= b.setup.sockets.opened ? a.setup.sockets : b.setup.sockets,
      streams: a.setup.streams.opened >= b.setup.streams.opened ? a.setup.streams : b.setup.streams,
    },
    kinds,
    errors: {
      total: a.errors.total + b.errors.total,
      byKind,
      examples: [...a.errors.examples, ...b.errors.examples].slice(0, 20),
    },
    hints: add(a.hints, b.hints),
    changes: add(a.changes, b.changes),
    client: {
      maxInFlight: Math.max(a.client.maxInFlight, b.client.maxInFlight),
      schedulerLagMs: worse(a.client.schedulerLagMs, b.client.schedulerLagMs),
      openAtEnd: b.client.openAtEnd,
    },
  };
}

/** An event of the schedule: `fire(k, scheduledAt)` for k = 0, 1, … at `perSecond`. */
interface Schedule {
  perSecond: number;
  fire(k: number, scheduledAt: number): void;
}

/**
 * Fires every schedule at its rate for `seconds`, each event at its time whatever happened to the
 * earlier ones (open loop). Resolves when the last event has been fired (not answered).
 */
async function openLoop(schedules: Schedule[], seconds: number, start: number): Promise<void> {
  const end = start + seconds * 1000;
  const state = schedules.filter((s) => s.perSecond > 0).map((s) => ({
    ...s,
    k: 0,
    interval: 1000 / s.perSecond,
  }));
  for (;;) {
    const now = performance.now();
    let next = Infinity;
    for (const s of state) {
      let at: number;
      while ((at = start + s.k * s.interval) <= now && at < end) s.fire(s.k++, at);
      if (at < end) next = Math.min(next, at);
    }
    if (next === Infinity) return;
    await sleep(Math.max(0, next - performance.now()));
  }
}

/** p50/p99 per window of `windowSeconds` (to see latency drift over a long run). */
export function windows(samples: readonly Sample[], windowSeconds: number) {
  const buckets = new Map<number, number[]>();
  for (const s of samples) {
    if (s.t < 0) continue;
    const w = Math.floor(s.t / windowSeconds);
    (buckets.get(w) ?? buckets.set(w, []).get(w)!).push(s.ms);
  }
  return [...buckets.entries()].sort((a, b) => a[0] - b[0]).map(([w, ms]) => ({
    fromSecond: w * windowSeconds,
    ...summarize(ms),
  }));
}

// --- HTTP --------------------------------------------------------------------------------------

interface PageReply {
  serverChanges: unknown[];
  syncedUntil: string;
  hasMore?: boolean;
}

async function jsonReply(response: Response, what: string): Promise<PageReply> {
  const text = await response.text();
  if (response.status < 200 || response.status > 299) {
    throw new Failure(String(response.status), `${what} answered ${response.status}: ${text}`);
  }
  let body: PageReply;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Failure("bad-body", `${what} answered non-JSON: ${text.slice(0, 200)}`);
  }
  if (!Array.isArray(body.serverChanges) || typeof body.syncedUntil !== "string") {
    throw new Failure("bad-body", `${what} answered ${text.slice(0, 200)}`);
  }
  return body;
}

// --- WebSocket and SSE connections -------------------------------------------------------------

interface Connection {
  device: Device;
  /** Opens (again); resolves once usable (`auth-ok`, stream headers). */
  open(): Promise<void>;
  /** Closes on the device's own initiative (not an error). */
  close(): Promise<void>;
  readonly isOpen: boolean;
}

class SocketConnection implements Connection {
  #socket?: WebSocket;
  #closing = false;
  #closed: Promise<void> = Promise.resolve();
  isOpen = false;

  constructor(
    readonly device: Device,
    private readonly url: string,
    private readonly timeoutMs: number,
    private readonly recorder: Recorder,
    private readonly counts: LoadResult["hints"],
  ) {}

  open(): Promise<void> {
    this.#closing = false;
    const socket = this.#socket = new WebSocket(this.url.replace(/^http/, "ws") + "/ws");
    let settle: (error?: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      settle = (error) => (error ? reject(error) : resolve());
    });
    const timer = setTimeout(
      () => settle(new Failure("timeout", `no auth-ok within ${this.timeoutMs} ms`)),
      this.timeoutMs,
    );
    let closedNow!: () => void;
    this.#closed = new Promise((r) => (closedNow = r));
    socket.onopen = () => {
      socket.send(JSON.stringify({
        type: "auth",
        token: this.device.user.token,
        clientId: this.device.clientId,
      }));
    };
    socket.onmessage = (e) => {
      let msg: { type?: string; message?: string };
      try {
        msg = JSON.parse(e.data);
      } catch {
        return this.recorder.error("ws", new Failure("bad-message", String(e.data).slice(0, 200)));
      }
      if (msg.type === "auth-ok") {
        this.isOpen = true;
        clearTimeout(timer);
        settle();
      } else if (msg.type === "sync-available") {
        this.counts.wsSyncAvailable++;
      } else if (msg.type === "error") {
        this.recorder.error("ws", new Failure("error-message", `error message: ${msg.message}`));
      }
    };
    socket.onerror = () => {};
    socket.onclose = (e) => {
      clearTimeout(timer);
      const wasOpen = this.isOpen;
      this.isOpen = false;
      closedNow();
      if (!wasOpen) {
        return settle(new Failure(`close-${e.code}`, `closed before auth-ok: ${e.reason}`));
      }
      if (!this.#closing) {
        this.recorder.error(
          "ws",
          new Failure(`close-${e.code}`, `socket closed by the server: ${e.code} ${e.reason}`),
        );
      }
    };
    return ready;
  }

  async close(): Promise<void> {
    this.#closing = true;
    const socket = this.#socket;
    if (socket && socket.readyState !== WebSocket.CLOSED) socket.close(1000);
    await this.#closed;
  }
}

class StreamConnection implements Connection {
  #abort?: AbortController;
  #closing = false;
  #pumped: Promise<void> = Promise.resolve();
  #reader?: ReadableStreamDefaultReader<string>;
  isOpen = false;

  constructor(
    readonly device: Device,
    private readonly url: string,
    private readonly appId: string,
    private readonly timeoutMs: number,
    private readonly recorder: Recorder,
    private readonly counts: LoadResult["hints"],
  ) {}

  /** Where a reopened stream resumes: the oldest of its tables' cursors. */
  #since(): string {
    return Object.values(this.device.cursors).reduce((a, b) => (b < a ? b : a));
  }

  async open(): Promise<void> {
    this.#closing = false;
    const abort = this.#abort = new AbortController();
    const q = new URLSearchParams({ collections: TABLES.join(","), since: this.#since() });
    // The timeout bounds the wait for the headers only: the body is meant to last.
    const timer = setTimeout(
      () => abort.abort(new DOMException("no stream headers in time", "TimeoutError")),
      this.timeoutMs,
    );
    let response: Response;
    try {
      response = await fetch(`${this.url}/sync/${this.appId}/stream?${q}`, {
        headers: {
          accept: "text/event-stream",
          authorization: `Bearer ${this.device.user.token}`,
          "x-client-id": this.device.clientId,
        },
        signal: abort.signal,
      });
    } finally {
      clearTimeout(timer);
    }
    if (response.status !== 200) {
      const text = await response.text().catch(() => "");
      throw new Failure(String(response.status), `stream answered ${response.status}: ${text}`);
    }
    this.isOpen = true;
    this.#pumped = this.#pump(response.body!);
  }

  async #pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = this.#reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          this.#event(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      if (!this.#closing) this.recorder.error("sse", new Failure("ended", "stream ended"));
    } catch (error) {
      if (!this.#closing) this.recorder.error("sse", error);
    } finally {
      this.isOpen = false;
    }
  }

  #event(block: string) {
    const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
    const data = /^data: (.*)$/m.exec(block)?.[1] ?? "{}";
    if (event === "changes") {
      const page = JSON.parse(data) as { table: Table; changes: unknown[]; syncedUntil: string };
      this.counts.sseEvents++;
      this.counts.sseChanges += page.changes.length;
      if (page.table in this.device.cursors) {
        this.device.cursors[page.table] = later(this.device.cursors[page.table], page.syncedUntil);
      }
    } else if (event === "heartbeat") {
      this.counts.sseHeartbeats++;
    } else {
      this.recorder.error("sse", new Failure(`${event}-event`, `${event}: ${data}`));
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    this.#abort?.abort();
    await this.#reader?.cancel().catch(() => {});
    await this.#pumped;
  }
}

// --- the runs ----------------------------------------------------------------------------------

/** Runs `fns` with at most `parallel` at a time. */
async function inBatches(fns: (() => Promise<void>)[], parallel: number): Promise<void> {
  for (let i = 0; i < fns.length; i += parallel) {
    await Promise.all(fns.slice(i, i + parallel).map((f) => f()));
  }
}

function emptyHints(): LoadResult["hints"] {
  return { wsSyncAvailable: 0, sseEvents: 0, sseChanges: 0, sseHeartbeats: 0 };
}

/**
 * Runs the mixed load against a server: mints tokens, opens the sockets and streams, runs pushes,
 * pulls and reconnects on their schedules for `seconds`, waits for the answers, closes everything.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const setupStart = performance.now();
  const timeoutMs = options.timeoutMs ?? 30_000;
  const workload = new Workload(options);
  const recorder = new Recorder(options.maxInFlight ?? 2000);
  const hints = emptyHints();
  const changes = { pushed: 0, receivedByPush: 0, receivedByPull: 0 };
  const { url } = options;
  const parallel = options.connectParallel ?? 100;

  await inBatches(
    workload.users.map((u) => async () => void (u.token = await options.token(u.id))),
    parallel,
  );

  const sockets = Array.from(
    { length: options.sockets },
    (_, i) => new SocketConnection(workload.device(i), url, timeoutMs, recorder, hints),
  );
  // Streams start with the devices right after the sockets' (other users first).
  const streams = Array.from(
    { length: options.streams },
    (_, i) =>
      new StreamConnection(
        workload.device(i, options.sockets),
        url,
        workload.appId,
        timeoutMs,
        recorder,
        hints,
      ),
  );
  const initial = (kind: Kind, c: Connection) => () =>
    recorder.run(kind, performance.now(), () => c.open());
  await inBatches([
    ...sockets.map((c) => initial("ws", c)),
    ...streams.map((c) => initial("sse", c)),
  ], parallel);
  const opened = { sockets: recorder.reset("ws"), streams: recorder.reset("sse") };

  const headers = (device: Device) => ({
    authorization: `Bearer ${device.user.token}`,
    "x-client-id": device.clientId,
  });

  const push = async (device: Device) => {
    const batch = workload.batch(device.user, options.batchSize);
    const response = await fetch(`${url}/sync/${workload.appId}`, {
      method: "POST",
      headers: { ...headers(device), "content-type": "application/json" },
      body: JSON.stringify({
        clientId: device.clientId,
        since: device.since,
        schemaVersion: 1,
        changes: batch,
      }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const reply = await jsonReply(response, "push");
    changes.pushed += batch.length;
    changes.receivedByPush += reply.serverChanges.length;
    device.since = later(device.since, reply.syncedUntil);
    for (const t of TABLES) device.cursors[t] = later(device.cursors[t], reply.syncedUntil);
  };

  const pull = async (device: Device) => {
    const table = workload.nextTable(device);
    const q = new URLSearchParams({ collection: table, since: device.cursors[table] });
    const response = await fetch(`${url}/sync/${workload.appId}/pull?${q}`, {
      headers: headers(device),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const reply = await jsonReply(response, "pull");
    changes.receivedByPull += reply.serverChanges.length;
    device.cursors[table] = later(device.cursors[table], reply.syncedUntil);
  };

  const reconnect = async (c: Connection) => {
    await c.close();
    await c.open();
  };
  // The kth reconnect: sockets and streams take turns, each list round robin.
  const churnLists = [
    ...(sockets.length > 0 ? [{ kind: "ws" as const, list: sockets as Connection[] }] : []),
    ...(streams.length > 0 ? [{ kind: "sse" as const, list: streams as Connection[] }] : []),
  ];
  const churn = (k: number) => {
    const { kind, list } = churnLists[k % churnLists.length]!;
    return { kind, c: list[Math.floor(k / churnLists.length) % list.length]! };
  };
  const reconnecting = new Set<Connection>();

  const start = recorder.origin = performance.now();
  const setup = { ms: start - setupStart, ...opened };
  recorder.maxInFlight = 0; // of the scheduled window, not of the setup's batches
  await openLoop(
    [
      {
        perSecond: options.pushesPerSecond,
        fire: (k, at) => recorder.start("push", at, () => push(workload.device(k))),
      },
      {
        // Offset: a device's pulls and pushes are not in lockstep.
        perSecond: options.pullsPerSecond,
        fire: (k, at) => recorder.start("pull", at, () => pull(workload.device(k, 7))),
      },
      {
        perSecond: churnLists.length > 0 ? options.reconnectsPerSecond ?? 0 : 0,
        fire: (k, at) => {
          const { kind, c } = churn(k);
          if (reconnecting.has(c)) return; // still reopening from last time round
          reconnecting.add(c);
          recorder.start(kind, at, () => reconnect(c)).finally(() => reconnecting.delete(c));
        },
      },
    ],
    options.seconds,
    start,
  );
  await recorder.drain();
  const endedAt = performance.now();
  const openAtEnd = {
    sockets: sockets.filter((c) => c.isOpen).length,
    streams: streams.filter((c) => c.isOpen).length,
  };
  await Promise.all([...sockets, ...streams].map((c) => c.close()));
  return recorder.result(
    { seconds: options.seconds, startedAt: start, endedAt, setup, hints, changes },
    openAtEnd,
  );
}

export type RawLoadOptions = WorkloadOptions;

/** The log insert of a push, and nothing else. */
const RAW_INSERT = `
INSERT INTO sync_changes (id, app_id, table_name, record_id, user_id, op, data, field_timestamps,
                          client_id, created_at, schema_version)
SELECT (c->>'e')::uuid, $2, c->>'t', c->>'i', $1, c->>'o', nullif(c->'d', 'null'::jsonb), c->'f',
       $3, clock_timestamp() + (n - 1) * interval '1 microsecond', 1
FROM jsonb_array_elements($4::text::jsonb) WITH ORDINALITY AS e(c, n)`;

/** A pull's page of the log, and nothing else. */
const RAW_PAGE = `
SELECT ${LOG_COLUMNS} FROM sync_changes
WHERE user_id = $1 AND app_id = $2 AND table_name = $3 AND client_id <> $4
  AND created_at > $5::text::timestamptz
ORDER BY created_at LIMIT 1001`;

/** A change as `sync_changes` stores it (what `toStored` does on the server). */
function stored(c: WorkloadChange) {
  const f: Record<string, string> = {};
  let d: Record<string, unknown> | null = null;
  if (c.op === "insert") d = c.data ?? {};
  else if (c.op === "delete") d = { deletedAt: c.deletedAt };
  else {
    d = {};
    for (const [name, v] of Object.entries(c.fields ?? {})) {
      d[name] = v.value;
      f[name] = v.updatedAt;
    }
  }
  return { e: c.eventId, t: c.table, i: c.id, o: c.op, d, f };
}

/**
 * The raw baseline of push and pull: the same schedule and the same batches, straight into
 * PostgreSQL through `sql` (postgres.js, in this process). A push is one INSERT of the batch's log
 * rows (`jsonb_array_elements`, stamped `clock_timestamp()`); a pull is one SELECT of the device's
 * next page of a table. Skipped compared with the server: HTTP, JWT, validation, the RLS
 * transaction, the user's clock lock, the LWW merge into `sync_records`, the page a push returns,
 * notifications. `sql` must be allowed past row-level security (a superuser, as in the benches).
 */
export async function runRawLoad(sql: postgres.Sql, options: RawLoadOptions): Promise<LoadResult> {
  const workload = new Workload(options);
  const recorder = new Recorder(options.maxInFlight ?? 2000);
  const changes = { pushed: 0, receivedByPush: 0, receivedByPull: 0 };

  const push = async (device: Device) => {
    const batch = workload.batch(device.user, options.batchSize);
    await sql.unsafe(RAW_INSERT, [
      device.user.id,
      workload.appId,
      device.clientId,
      JSON.stringify(batch.map(stored)),
    ]);
    changes.pushed += batch.length;
  };
  const pull = async (device: Device) => {
    const table = workload.nextTable(device);
    const rows = await sql.unsafe(RAW_PAGE, [
      device.user.id,
      workload.appId,
      table,
      device.clientId,
      device.cursors[table],
    ]);
    const page = rows.slice(0, 1000);
    changes.receivedByPull += page.length;
    const last = page.at(-1) as { createdAt?: string } | undefined;
    if (last?.createdAt) device.cursors[table] = later(device.cursors[table], last.createdAt);
  };

  const start = recorder.origin = performance.now();
  await openLoop(
    [
      {
        perSecond: options.pushesPerSecond,
        fire: (k, at) => recorder.start("push", at, () => push(workload.device(k))),
      },
      {
        perSecond: options.pullsPerSecond,
        fire: (k, at) => recorder.start("pull", at, () => pull(workload.device(k, 7))),
      },
    ],
    options.seconds,
    start,
  );
  await recorder.drain();
  return recorder.result(
    {
      seconds: options.seconds,
      startedAt: start,
      endedAt: performance.now(),
      setup: { ms: 0, sockets: recorder.reset("ws"), streams: recorder.reset("sse") },
      hints: emptyHints(),
      changes,
    },
    { sockets: 0, streams: 0 },
  );
}
