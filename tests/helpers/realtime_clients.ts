/** Real WebSocket and SSE clients for end-to-end tests, with bounded waits. */

/** Received items, read in order with a bounded wait. */
class Inbox<T> {
  readonly items: T[] = [];
  #read = 0;
  #waiters: (() => void)[] = [];
  #ended = false;

  push(item: T): void {
    this.items.push(item);
    this.#wake();
  }

  /** No more items will come: pending and later reads fail at once. */
  end(): void {
    this.#ended = true;
    this.#wake();
  }

  #wake() {
    for (const w of this.#waiters.splice(0)) w();
  }

  async next(what: string, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    while (this.#read >= this.items.length) {
      if (this.#ended) throw new Error(`Connection closed while waiting for a ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No ${what} within ${timeoutMs} ms`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
    return this.items[this.#read++]!;
  }

  unread(): T[] {
    return this.items.slice(this.#read);
  }
}

export class WsClient {
  readonly closed: Promise<{ code: number; reason: string }>;
  #inbox = new Inbox<Record<string, unknown>>();

  private constructor(readonly socket: WebSocket) {
    socket.onmessage = (e) => this.#inbox.push(JSON.parse(e.data));
    this.closed = new Promise((resolve) => {
      socket.onclose = (e) => {
        resolve({ code: e.code, reason: e.reason });
        this.#inbox.end();
      };
    });
  }

  static async open(baseUrl: string, path = "/ws"): Promise<WsClient> {
    const socket = new WebSocket(baseUrl.replace(/^http/, "ws") + path);
    const client = new WsClient(socket);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = () => reject(new Error(`WebSocket ${path} did not open`));
    });
    return client;
  }

  /** Opens a socket and authenticates it. */
  static async authed(
    baseUrl: string,
    token: string,
    options: { path?: string; clientId?: string } = {},
  ) {
    const client = await WsClient.open(baseUrl, options.path);
    client.send({
      type: "auth",
      token,
      ...(options.clientId ? { clientId: options.clientId } : {}),
    });
    const ok = await client.next(2000);
    if (ok.type !== "auth-ok") throw new Error(`auth answered ${JSON.stringify(ok)}`);
    return client;
  }

  send(message: unknown): void {
    this.socket.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  /** The next message not read yet; throws after `timeoutMs`. */
  next(timeoutMs = 2000): Promise<Record<string, unknown>> {
    return this.#inbox.next("WebSocket message", timeoutMs);
  }

  /** Messages received but not read by next(). */
  unread(): Record<string, unknown>[] {
    return this.#inbox.unread();
  }

  async close(): Promise<void> {
    if (this.socket.readyState !== WebSocket.CLOSED) this.socket.close(1000);
    await this.closed;
  }
}

export interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

export class SseClient {
  #inbox = new Inbox<SseEvent>();
  #done: Promise<void>;
  #reader: ReadableStreamDefaultReader<string>;

  private constructor(readonly response: Response) {
    this.#reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    this.#done = this.#pump();
  }

  static async open(url: string, headers: Record<string, string>): Promise<SseClient> {
    const response = await fetch(url, { headers: { accept: "text/event-stream", ...headers } });
    if (response.status !== 200) {
      throw new Error(`stream answered ${response.status}: ${await response.text()}`);
    }
    return new SseClient(response);
  }

  async #pump() {
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const dataLines = [...block.matchAll(/^data: (.*)$/gm)].map((m) => m[1]);
          if (dataLines.length !== 1) {
            throw new Error(`Expected one data line, got ${JSON.stringify(block)}`);
          }
          this.#inbox.push({ event, data: JSON.parse(dataLines[0]!) });
        }
      }
    } catch { /* cancelled */ }
    this.#inbox.end();
  }

  next(timeoutMs = 2000): Promise<SseEvent> {
    return this.#inbox.next("SSE event", timeoutMs);
  }

  unread(): SseEvent[] {
    return this.#inbox.unread();
  }

  async close(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
    await this.#done;
  }
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function eventually(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 3000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
